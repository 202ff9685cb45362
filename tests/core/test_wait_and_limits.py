"""Poll schedule, wait loop and timeout, token-bucket limiter."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_querytasks.common.errors import InvalidInputError, QueryTimeoutError
from airflow_provider_querytasks.common.ratelimit import RateLimiterRegistry, TokenBucket
from airflow_provider_querytasks.common.wait import (
    PollSchedule,
    QueryState,
    StatusSnapshot,
    WaitLoop,
    to_seconds,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


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


@pytest.mark.parametrize("value", [0, -1, "10", float("inf"), True, timedelta(0)])
def test_durations_are_validated_with_the_parameter_name(value: object) -> None:
    with pytest.raises(InvalidInputError, match="poll_interval"):
        to_seconds(value, "poll_interval")  # type: ignore[call-overload]


def test_durations_accept_timedelta_and_seconds() -> None:
    assert to_seconds(timedelta(minutes=2), "timeout") == 120
    assert to_seconds(1.5, "timeout") == 1.5
    assert to_seconds(None, "timeout", allow_none=True) is None


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=clock)
    waits = [bucket.reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.5)
    assert waits[4] == pytest.approx(1.0)


def test_registry_shares_a_bucket_per_platform_account_and_operation() -> None:
    registry = RateLimiterRegistry(safety=1.0)
    a = registry.bucket("dk", "acct1", "getQuery", 2, 15)
    assert registry.bucket("dk", "acct1", "getQuery", 2, 15) is a
    assert registry.bucket("dk", "acct2", "getQuery", 2, 15) is not a
    assert registry.bucket("dk", "acct1", "createQuery", 2, 15) is not a


async def test_async_bucket_spaces_concurrent_callers() -> None:
    bucket = TokenBucket(rate=20.0, burst=2.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(bucket.acquire_async() for _ in range(6)))
    # 2 at once, then 4 more at 20/s: at least ~0.2 s.
    assert loop.time() - start >= 0.18
