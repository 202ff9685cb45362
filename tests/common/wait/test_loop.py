"""The poll schedule, the wait loop and its timeout, durations (common/wait/loop.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_querytasks.common.api.errors import InvalidInputError, QueryTimeoutError
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.wait.loop import PollSchedule, WaitLoop, to_seconds

from ...helpers import FakeClock


def running(query_id: str = "q") -> StatusSnapshot:
    return StatusSnapshot(query_id, QueryState.RUNNING, "RUNNING")


def test_schedule_starts_short_and_backs_off_to_the_maximum() -> None:
    schedule = PollSchedule(initial=5, maximum=60, proportion=0.1)
    assert schedule.next_interval(0) == 5
    assert schedule.next_interval(100) == 10
    assert schedule.next_interval(3600) == 60


@given(st.floats(min_value=0, max_value=1e6), st.floats(min_value=0.01, max_value=600))
def test_schedule_interval_is_always_within_bounds(elapsed: float, maximum: float) -> None:
    schedule = PollSchedule.from_poll_interval(maximum)
    interval = schedule.next_interval(elapsed)
    assert schedule.initial <= interval <= max(maximum, schedule.initial)


def test_one_hour_query_costs_few_polls_and_is_seen_soon() -> None:
    clock = FakeClock()
    finish = clock.now + 3600
    loop = WaitLoop("q", PollSchedule(), deadline=None, clock=clock)

    def poll() -> StatusSnapshot:
        state = QueryState.SUCCEEDED if clock.now >= finish else QueryState.RUNNING
        return StatusSnapshot("q", state, state.value)

    loop.run(poll, sleep=clock.sleep)
    # A fixed 5 s poll would make 720 calls; the back-off makes ~90, and is at most 60 s late.
    assert loop.polls <= 100
    assert clock.now - finish <= 60


def test_wait_times_out_at_the_deadline_with_the_last_state() -> None:
    clock = FakeClock()
    loop = WaitLoop(
        "Fake query q", PollSchedule(initial=5, maximum=60), deadline=clock.now + 100, clock=clock
    )
    with pytest.raises(QueryTimeoutError, match="Fake query q did not finish.*last state running"):
        loop.run(running, sleep=clock.sleep)
    # The last sleep was shortened to land on the deadline, not after it.
    assert clock.now == pytest.approx(1100.0)


def test_wait_logs_status_changes_and_a_heartbeat(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO)
    clock = FakeClock()
    queued = StatusSnapshot("q", QueryState.PENDING, "QUEUED")
    polls = [queued, running(), running(), running(), StatusSnapshot("q", QueryState.SUCCEEDED, "DONE")]
    answers = iter(polls)
    WaitLoop("Fake query q", PollSchedule(initial=150, maximum=150), None, clock=clock).run(
        lambda: next(answers), sleep=clock.sleep
    )
    lines = [r.getMessage() for r in caplog.records if "Fake query q" in r.getMessage()]
    # Unchanged polls are debug lines unless 5 minutes passed since the last info line.
    assert len(lines) == 4, lines
    assert "pending (QUEUED), elapsed 0 s, next poll in 150 s" in lines[0]
    assert "running (RUNNING), elapsed 150 s" in lines[1]
    assert "running (RUNNING), elapsed 450 s" in lines[2]
    assert "succeeded (DONE)" in lines[3] and "5 polls" in lines[3]


async def test_a_wait_writes_its_info_lines_off_the_event_loop() -> None:
    """In Airflow 3's triggerer a log line is a blocking write to the supervisor: a wait must
    not hold the loop while one is stuck (other triggers, and the replies the supervisor is
    sending, need the loop)."""
    import threading

    release = threading.Event()
    written: list[str] = []

    class StuckLogger:
        """Blocks in ``info`` until released, like a write to a supervisor that reads nothing."""

        def info(self, line: str, *args: object) -> None:
            release.wait(10)
            written.append(line % args)

        def debug(self, line: str, *args: object) -> None:
            pass

    answers = iter([running(), StatusSnapshot("q", QueryState.SUCCEEDED, "DONE")])

    async def poll() -> StatusSnapshot:
        return next(answers)

    wait = WaitLoop("Fake query q", PollSchedule(initial=0.01, maximum=0.01), None, logger=StuckLogger())
    task = asyncio.ensure_future(wait.run_async(poll))
    for _ in range(20):  # the loop turns while the first info line is stuck in the logger
        await asyncio.sleep(0)
    assert not task.done()
    assert written == []
    release.set()
    assert (await asyncio.wait_for(task, 10)).state is QueryState.SUCCEEDED
    assert len(written) == 2
    assert "running (RUNNING)" in written[0] and "succeeded (DONE)" in written[1]


@pytest.mark.parametrize("value", [0, -1, "10", float("inf"), True, timedelta(0)])
def test_durations_are_validated_with_the_parameter_name(value: object) -> None:
    with pytest.raises(InvalidInputError, match="poll_interval"):
        to_seconds(value, "poll_interval")  # type: ignore[call-overload]


def test_durations_accept_timedelta_and_seconds() -> None:
    assert to_seconds(timedelta(minutes=2), "timeout") == 120
    assert to_seconds(1.5, "timeout") == 1.5
    assert to_seconds(None, "timeout", allow_none=True) is None
