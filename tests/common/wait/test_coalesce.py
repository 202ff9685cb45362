"""Coalesced polling (common/wait/coalesce.py) against a scripted in-memory platform.

The scripted hook answers ``aget_status`` and ``alist_statuses`` from a shared table of query
states and counts its calls, so each test can say exactly which calls a set of waits cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.common.wait import coalesce
from airflow_provider_querytasks.common.wait.coalesce import AccountPoller, coalesced_wait
from airflow_provider_querytasks.hooks.base import QueryTaskHook
from airflow_provider_querytasks.triggers.base import QueryTaskTrigger

from ..fake_platform import FAKE_FORM


@dataclass
class Account:
    """What the scripted platform knows of one account, and what it was asked."""

    states: dict[str, QueryState] = field(default_factory=dict)
    #: ids the list never shows (too old for its filter, say).
    unlisted: set[str] = field(default_factory=set)
    #: ``None`` from alist_statuses (no list endpoint / no budget).
    list_answers_none: bool = False
    #: exceptions the next list calls raise.
    list_errors: list[Exception] = field(default_factory=list)
    #: Seconds between two list calls the list's own budget allows (0: no budget of its own);
    #: a list call within it answers ``None`` without calling, and the monotonic time it may go.
    list_interval: float = 0.0
    list_next: float = 0.0
    gets: list[str] = field(default_factory=list)
    lists: list[dict[str, float]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)


class ScriptedHook(QueryTaskHook):
    """A hook whose platform is a table in memory (per conn id)."""

    default_conn_name = "scripted_default"
    conn_type = "fake"
    hook_name = "Scripted"
    form = FAKE_FORM
    accounts: ClassVar[dict[str, Account]] = {}

    @property
    def account(self) -> Account:
        return self.accounts.setdefault(self.conn_id, Account())

    def snapshot(self, query_id: str) -> StatusSnapshot:
        state = self.account.states[query_id]
        return StatusSnapshot(query_id, state, state.value.upper(), raw={"id": query_id})

    async def aget_status(self, query_id: str) -> StatusSnapshot:
        self.account.gets.append(query_id)
        await asyncio.sleep(0)
        return self.snapshot(query_id)

    async def acancel_query(self, query_id: str) -> None:
        self.account.cancels.append(query_id)

    async def alist_statuses(self, wanted: Mapping[str, float]) -> dict[str, StatusSnapshot] | None:
        account = self.account
        if account.list_interval:
            if time.monotonic() < account.list_next:
                return None  # no call to spare
            account.list_next = time.monotonic() + account.list_interval
        account.lists.append(dict(wanted))
        await asyncio.sleep(0.01)
        if account.list_errors:
            raise account.list_errors.pop(0)
        if account.list_answers_none:
            return None
        return {
            query_id: self.snapshot(query_id)
            for query_id in wanted
            if query_id in account.states and query_id not in account.unlisted
        }

    async def alist_ready_in(self) -> float:
        return max(0.0, self.account.list_next - time.monotonic())


class NoListHook(ScriptedHook):
    """A platform without a list path: the default alist_statuses (None)."""

    async def alist_statuses(self, wanted: Mapping[str, float]) -> dict[str, StatusSnapshot] | None:
        return await QueryTaskHook.alist_statuses(self, wanted)


class ScriptedTrigger(QueryTaskTrigger):
    hook_class = ScriptedHook


@pytest.fixture(autouse=True)
def _fresh_accounts() -> None:
    ScriptedHook.accounts.clear()


def trigger(query_id: str, conn_id: str = "acct", **kwargs: Any) -> ScriptedTrigger:
    defaults: dict[str, Any] = {
        "conn_id": conn_id,
        "query_id": query_id,
        "deadline": time.time() + 30,
        "poll_schedule": {"initial": 0.2, "maximum": 0.2, "proportion": 0.1},
    }
    return ScriptedTrigger(**{**defaults, **kwargs})


async def first_event(t: QueryTaskTrigger) -> dict[str, Any]:
    async for event in t.run():
        return dict(event.payload)
    raise AssertionError("no event")


def pollers() -> dict[Any, AccountPoller]:
    return process_state.account_pollers.get(asyncio.get_running_loop(), {})


async def test_close_polls_of_one_account_are_answered_by_one_list_call() -> None:
    account = ScriptedHook("acct").account
    account.states.update({f"q{i}": QueryState.RUNNING for i in range(20)})
    hook = ScriptedHook("acct")
    async with _waits(hook, [f"q{i}" for i in range(20)]) as waits:
        snapshots = await asyncio.gather(*(w.poll() for w in waits))
    assert [s.query_id for s in snapshots] == [f"q{i}" for i in range(20)]
    assert all(s.state is QueryState.RUNNING for s in snapshots)
    assert len(account.lists) == 1 and set(account.lists[0]) == {f"q{i}" for i in range(20)}
    assert account.gets == []


async def test_an_observation_newer_than_a_waits_last_poll_costs_no_call() -> None:
    account = ScriptedHook("acct").account
    account.states.update({"a": QueryState.RUNNING, "b": QueryState.RUNNING})
    hook = ScriptedHook("acct")
    async with _waits(hook, ["a", "b"]) as (a, b):
        await a.poll()  # one list round: it saw b too
        assert len(account.lists) == 1
        account.states["b"] = QueryState.SUCCEEDED
        first = await b.poll()  # b saw nothing yet: the observation is newer than that
        assert len(account.lists) == 1 and account.gets == []
        assert first.state is QueryState.RUNNING
        second = await b.poll()  # b has seen that observation: a new round
        assert len(account.lists) == 2 and second.state is QueryState.SUCCEEDED


async def test_ids_the_list_did_not_show_fall_back_to_their_own_status_call() -> None:
    account = ScriptedHook("acct").account
    account.states.update({"new": QueryState.RUNNING, "old": QueryState.PENDING})
    account.unlisted.add("old")
    hook = ScriptedHook("acct")
    async with _waits(hook, ["new", "old"]) as (new, old):
        found, missing = await asyncio.gather(new.poll(), old.poll())
    assert found.state is QueryState.RUNNING and missing.state is QueryState.PENDING
    assert len(account.lists) == 1 and account.gets == ["old"]


async def test_an_id_the_list_keeps_leaving_out_is_no_longer_asked_of_it() -> None:
    account = ScriptedHook("acct").account
    account.states.update({"new": QueryState.RUNNING, "old": QueryState.PENDING})
    account.unlisted.add("old")
    hook = ScriptedHook("acct")
    async with _waits(hook, ["new", "old"]) as (new, old):
        for _ in range(coalesce.MAX_LIST_MISSES):
            await asyncio.gather(new.poll(), old.poll())
        lists_before = len(account.lists)
        await old.poll()  # polled on its own, no list round for it
        assert len(account.lists) == lists_before
        assert account.gets == ["old"] * (coalesce.MAX_LIST_MISSES + 1)
        await new.poll()
        assert "old" not in account.lists[-1]


async def test_none_from_the_list_means_every_due_query_polls_itself() -> None:
    account = ScriptedHook("acct").account
    account.states.update({"a": QueryState.RUNNING, "b": QueryState.SUCCEEDED})
    account.list_answers_none = True
    hook = ScriptedHook("acct")
    async with _waits(hook, ["a", "b"]) as (a, b):
        sa, sb = await asyncio.gather(a.poll(), b.poll())
    assert (sa.state, sb.state) == (QueryState.RUNNING, QueryState.SUCCEEDED)
    assert sorted(account.gets) == ["a", "b"]


async def test_a_hook_without_a_list_path_polls_per_query() -> None:
    account = NoListHook("acct").account
    account.states.update({"a": QueryState.RUNNING, "b": QueryState.RUNNING})
    hook = NoListHook("acct")
    async with _waits(hook, ["a", "b"]) as (a, b):
        await asyncio.gather(a.poll(), b.poll())
    assert sorted(account.gets) == ["a", "b"] and account.lists == []


async def test_a_hook_keeping_the_default_list_path_gets_no_poller() -> None:
    class PlainHook(QueryTaskHook):
        conn_type = "fake"
        hook_name = "Plain"
        form = FAKE_FORM

    async with coalesced_wait(PlainHook("acct"), "a", time.time()) as wait:
        assert wait is None
        assert pollers() == {}
    assert await PlainHook("acct").alist_statuses({"a": 0.0}) is None


async def test_a_failing_list_call_falls_back_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    account = ScriptedHook("acct").account
    account.states.update({"a": QueryState.RUNNING, "b": QueryState.RUNNING})
    account.list_errors = [RuntimeError("boom 1"), RuntimeError("boom 2")]
    hook = ScriptedHook("acct")
    with caplog.at_level(logging.WARNING, logger=coalesce.__name__):
        async with _waits(hook, ["a", "b"]) as (a, b):
            for _ in range(3):
                snapshots = await asyncio.gather(a.poll(), b.poll())
                assert all(s.state is QueryState.RUNNING for s in snapshots)
    assert len(account.lists) == 3
    assert sorted(account.gets) == ["a", "a", "b", "b"]  # two failed rounds, then listed
    failures = [r for r in caplog.records if "list call failed" in r.getMessage()]
    assert len(failures) == 1 and "boom 1" in failures[0].getMessage()


async def test_a_list_call_showing_a_query_terminal_wakes_its_wait_at_once() -> None:
    account = ScriptedHook("acct").account
    account.states.update({"fast": QueryState.RUNNING, "slow": QueryState.RUNNING})
    hook = ScriptedHook("acct")
    async with _waits(hook, ["fast", "slow"]) as (fast, slow):
        await asyncio.gather(fast.poll(), slow.poll())
        listening = asyncio.ensure_future(fast.listen(30.0))
        await asyncio.sleep(0.05)
        assert not listening.done()
        account.states["fast"] = QueryState.SUCCEEDED
        await slow.poll()  # slow's round shows fast finished
        woken = await asyncio.wait_for(listening, 1.0)
    assert woken is not None and woken.state is QueryState.SUCCEEDED and woken.query_id == "fast"


async def test_a_finished_query_ends_its_trigger_before_its_next_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polls: list[str] = []  # every poll of a wait, by its query id
    original_poll = coalesce.CoalescedWait.poll

    async def counted_poll(wait: coalesce.CoalescedWait) -> StatusSnapshot:
        polls.append(wait.query_id)
        return await original_poll(wait)

    monkeypatch.setattr(coalesce.CoalescedWait, "poll", counted_poll)
    account = ScriptedHook("acct").account
    account.states.update({"q1": QueryState.RUNNING, "q2": QueryState.RUNNING})
    slow_schedule = {"initial": 20.0, "maximum": 20.0, "proportion": 0.1}
    fast_schedule = {"initial": 0.1, "maximum": 0.1, "proportion": 0.1}
    slow = asyncio.ensure_future(first_event(trigger("q1", poll_schedule=slow_schedule)))
    fast = asyncio.ensure_future(first_event(trigger("q2", poll_schedule=fast_schedule)))
    # q1 polls once within 5 s (the spread of first polls), then sleeps 20 s.
    deadline = time.monotonic() + 10
    while "q1" not in [q for wanted in account.lists for q in wanted] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    while not slow.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        account.states["q1"] = QueryState.SUCCEEDED
    event = await asyncio.wait_for(slow, 5)
    assert event["status"] == "success" and event["query_id"] == "q1"
    assert polls.count("q1") == 1  # woken by q2's list round, before q1's own next poll (20 s later)
    account.states["q2"] = QueryState.SUCCEEDED
    assert (await asyncio.wait_for(fast, 10))["status"] == "success"
    assert set(account.gets) <= {"q2"}  # q1 was never polled on its own; q2, alone, polls itself


async def test_deadline_stays_per_wait() -> None:
    account = ScriptedHook("acct").account
    account.states.update({"short": QueryState.RUNNING, "long": QueryState.RUNNING})
    schedule = {"initial": 0.1, "maximum": 0.1, "proportion": 0.1}
    short = asyncio.ensure_future(
        first_event(trigger("short", deadline=time.time() + 0.5, poll_schedule=schedule))
    )
    long = asyncio.ensure_future(
        first_event(trigger("long", deadline=time.time() + 30, poll_schedule=schedule))
    )
    event = await asyncio.wait_for(short, 10)
    assert event["status"] == "timeout" and event["query_id"] == "short"
    assert not long.done()
    account.states["long"] = QueryState.SUCCEEDED
    assert (await asyncio.wait_for(long, 10))["status"] == "success"


async def test_cancel_on_kill_stays_per_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_provider_querytasks.triggers.base as triggers_module

    async def no_longer_deferred(_: Any) -> bool:
        return False

    monkeypatch.setattr(triggers_module, "TRIGGER_ON_KILL_SUPPORTED", False)
    monkeypatch.setattr(triggers_module, "task_is_still_deferred", no_longer_deferred)
    account = ScriptedHook("acct").account
    account.states.update({"killed": QueryState.RUNNING, "kept": QueryState.RUNNING})
    schedule = {"initial": 0.1, "maximum": 0.1, "proportion": 0.1}
    killed = asyncio.ensure_future(first_event(trigger("killed", poll_schedule=schedule)))
    kept = asyncio.ensure_future(first_event(trigger("kept", poll_schedule=schedule)))
    while len(account.lists) < 2:
        await asyncio.sleep(0.05)
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    assert account.cancels == ["killed"]
    poller = next(iter(pollers().values()))
    assert set(poller.waits) == {"kept"}
    account.states["kept"] = QueryState.SUCCEEDED
    assert (await asyncio.wait_for(kept, 10))["status"] == "success"
    assert account.cancels == ["killed"]


async def test_the_poller_leaves_process_state_with_its_last_wait() -> None:
    account = ScriptedHook("acct").account
    account.states.update({"a": QueryState.SUCCEEDED, "b": QueryState.SUCCEEDED, "c": QueryState.RUNNING})
    schedule = {"initial": 0.1, "maximum": 0.1, "proportion": 0.1}
    other = ScriptedHook("other").account
    other.states["c"] = QueryState.RUNNING
    running = asyncio.ensure_future(first_event(trigger("c", conn_id="other", poll_schedule=schedule)))
    events = await asyncio.gather(
        first_event(trigger("a", poll_schedule=schedule)), first_event(trigger("b", poll_schedule=schedule))
    )
    assert [e["status"] for e in events] == ["success", "success"]
    assert list(pollers()) == [(ScriptedHook, (ScriptedHook, "other"))]
    other.states["c"] = QueryState.SUCCEEDED
    await asyncio.wait_for(running, 10)
    assert pollers() == {}


async def test_accounts_do_not_share_a_poller() -> None:
    for conn in ("x", "y"):
        ScriptedHook(conn).account.states.update(
            {f"{conn}1": QueryState.RUNNING, f"{conn}2": QueryState.RUNNING}
        )
    async with _waits(ScriptedHook("x"), ["x1", "x2"]) as xs, _waits(ScriptedHook("y"), ["y1", "y2"]) as ys:
        await asyncio.gather(*(w.poll() for w in (*xs, *ys)))
        assert len(pollers()) == 2
    assert [set(w) for w in ScriptedHook("x").account.lists] == [{"x1", "x2"}]
    assert [set(w) for w in ScriptedHook("y").account.lists] == [{"y1", "y2"}]


def test_two_event_loops_get_two_pollers() -> None:
    ScriptedHook("acct").account.states.update({"a": QueryState.RUNNING, "b": QueryState.RUNNING})
    seen: list[AccountPoller] = []

    async def one_loop() -> None:
        async with _waits(ScriptedHook("acct"), ["a", "b"]) as waits:
            await asyncio.gather(*(w.poll() for w in waits))
            seen.append(waits[0].poller)

    asyncio.run(one_loop())
    asyncio.run(one_loop())
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert len(ScriptedHook("acct").account.lists) == 2


async def test_switched_off_every_wait_polls_its_own_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__QUERYTASKS__COALESCE_POLLS", "False")
    process_state.reset()
    account = ScriptedHook("acct").account
    account.states.update({"a": QueryState.SUCCEEDED, "b": QueryState.SUCCEEDED})
    schedule = {"initial": 0.1, "maximum": 0.1, "proportion": 0.1}
    events = await asyncio.gather(*(first_event(trigger(q, poll_schedule=schedule)) for q in ("a", "b")))
    assert [e["status"] for e in events] == ["success", "success"]
    assert sorted(account.gets) == ["a", "b"] and account.lists == []
    assert pollers() == {}


async def test_the_switch_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    assert coalesce.coalesce_polls_enabled() is True
    monkeypatch.setenv("AIRFLOW__QUERYTASKS__COALESCE_POLLS", "False")
    assert coalesce.coalesce_polls_enabled() is True  # read once
    process_state.reset()
    assert coalesce.coalesce_polls_enabled() is False


async def test_a_wait_alone_on_its_account_polls_its_own_query() -> None:
    account = ScriptedHook("acct").account
    account.states["solo"] = QueryState.RUNNING
    async with _waits(ScriptedHook("acct"), ["solo"]) as (solo,):
        await solo.poll()
    assert account.gets == ["solo"] and account.lists == []


async def test_n_triggers_on_one_account_cost_far_fewer_calls_than_n_polls() -> None:
    account = ScriptedHook("acct").account
    n = 40
    account.states.update({f"q{i}": QueryState.RUNNING for i in range(n)})
    schedule = {"initial": 0.2, "maximum": 0.2, "proportion": 0.1}
    tasks = [asyncio.ensure_future(first_event(trigger(f"q{i}", poll_schedule=schedule))) for i in range(n)]
    await asyncio.sleep(6)  # first polls spread over up to 0.2 s, then every 0.2 s
    for query_id in account.states:
        account.states[query_id] = QueryState.SUCCEEDED
    events = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all(e["status"] == "success" for e in events)
    calls = len(account.lists) + len(account.gets)
    per_wait_polls = n * 6 / 0.2  # what n waits polling every 0.2 s for 6 s cost at least
    assert calls <= per_wait_polls / 10, (len(account.lists), len(account.gets))


def _busy_account(waits: int, list_interval: float) -> tuple[Account, list[str]]:
    account = ScriptedHook("acct").account
    ids = [f"q{i}" for i in range(waits)]
    account.states.update(dict.fromkeys(ids, QueryState.RUNNING))
    account.list_interval = list_interval
    return account, ids


async def test_a_busy_accounts_polls_follow_the_list_calls_its_budget_allows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    account, ids = _busy_account(coalesce.SWEEP_FOLLOW_MIN_WAITS, list_interval=2.0)
    caplog.set_level(logging.DEBUG, logger=coalesce.__name__)
    async with _waits(ScriptedHook("acct"), ids) as waits:
        await asyncio.gather(*(w.poll() for w in waits))  # one list call
        again = await asyncio.gather(*(w.poll() for w in waits))  # the list has no call to spare
        assert [s.state for s in again] == [QueryState.RUNNING] * len(ids)
        assert account.gets == [] and len(account.lists) == 1
        assert [poller.followed for poller in pollers().values()] == [len(ids)]
        listening = asyncio.ensure_future(waits[0].listen(30.0))
        account.states["q0"] = QueryState.SUCCEEDED
        woken = await asyncio.wait_for(listening, 5.0)  # the list call its budget allowed next
    assert woken is not None and woken.state is QueryState.SUCCEEDED
    assert account.gets == [] and len(account.lists) == 2
    done = [r.getMessage() for r in caplog.records if "poller done" in r.getMessage()]
    assert done == [
        "Scripted: poller done: 2 list calls (0 failed); polls answered by a list 10, by an "
        "earlier answer 0, by following the list calls 10, by their own call 0"
    ]


async def test_a_list_out_of_reach_leaves_each_wait_polling_its_own_query() -> None:
    account, ids = _busy_account(coalesce.SWEEP_FOLLOW_MIN_WAITS, coalesce.SWEEP_FOLLOW_GAP + 5)
    async with _waits(ScriptedHook("acct"), ids) as waits:
        await asyncio.gather(*(w.poll() for w in waits))
        await asyncio.gather(*(w.poll() for w in waits))
    assert sorted(account.gets) == sorted(ids) and len(account.lists) == 1


async def test_a_few_waits_poll_their_own_queries_while_the_list_has_no_budget() -> None:
    account, ids = _busy_account(coalesce.SWEEP_FOLLOW_MIN_WAITS - 1, list_interval=2.0)
    async with _waits(ScriptedHook("acct"), ids) as waits:
        await asyncio.gather(*(w.poll() for w in waits))
        await asyncio.gather(*(w.poll() for w in waits))
    assert sorted(account.gets) == sorted(ids) and len(account.lists) == 1


# -- when a wait's own status call waits long for its turn ----------------------------------------
# A busy account's rate limiter: Data Kiosk's getQuery serves 2 calls a second to every wait of
# the account. The list may be unable to answer for a while (its own, tighter budget); once it
# can, one list call must end every finished wait, including those whose own call is still queued.
class QueuedHook(QueryTaskHook):
    """A platform whose status calls never get their turn, and whose list answers only once
    ``list_open`` is set (its budget)."""

    default_conn_name = "queued_default"
    conn_type = "fake"
    hook_name = "Queued"
    form = FAKE_FORM
    states: ClassVar[dict[str, QueryState]] = {}
    list_open: ClassVar[bool] = False
    lists: ClassVar[list[bool]] = []
    own_calls: ClassVar[list[str]] = []
    own_cancelled: ClassVar[list[str]] = []

    def snapshot(self, query_id: str) -> StatusSnapshot:
        state = self.states[query_id]
        return StatusSnapshot(query_id, state, state.value.upper(), raw={"id": query_id})

    async def aget_status(self, query_id: str) -> StatusSnapshot:
        self.own_calls.append(query_id)
        try:
            await asyncio.Event().wait()  # queued behind the account's other callers, for good
        except asyncio.CancelledError:
            self.own_cancelled.append(query_id)
            raise
        raise AssertionError("unreachable")

    async def alist_statuses(self, wanted: Mapping[str, float]) -> dict[str, StatusSnapshot] | None:
        self.lists.append(self.list_open)
        if not self.list_open:
            return None  # no list call to spare now
        return {query_id: self.snapshot(query_id) for query_id in wanted}


class QueuedTrigger(QueryTaskTrigger):
    hook_class = QueuedHook


@pytest.fixture
def queued_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """QueuedHook's tables empty, its list closed, and the poller's list retried every 0.05 s."""
    QueuedHook.states.clear()
    QueuedHook.lists.clear()
    QueuedHook.own_calls.clear()
    QueuedHook.own_cancelled.clear()
    monkeypatch.setattr(QueuedHook, "list_open", False)
    monkeypatch.setattr(coalesce, "LIST_RETRY", 0.05)


@pytest.mark.usefixtures("queued_platform")
def test_a_list_that_can_answer_again_ends_waits_whose_own_polls_are_queued() -> None:
    ids = ["a", "b", "c"]
    for query_id in ids:
        QueuedHook.states[query_id] = QueryState.RUNNING

    async def main() -> list[dict[str, Any]]:
        triggers = [
            QueuedTrigger(
                conn_id="acct",
                query_id=query_id,
                deadline=time.time() + 30,
                poll_schedule={"initial": 0.05, "maximum": 0.05, "proportion": 0.1},
            )
            for query_id in ids
        ]

        async def first(trigger: QueuedTrigger) -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("no event")

        running = [asyncio.ensure_future(first(t)) for t in triggers]
        deadline = time.monotonic() + 10
        while len(set(QueuedHook.own_calls)) < len(ids):  # every wait stuck in its own call
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        lists_while_stuck = len(QueuedHook.lists)
        for query_id in ids:
            QueuedHook.states[query_id] = QueryState.SUCCEEDED
        QueuedHook.list_open = True  # the list's budget is back
        events = await asyncio.wait_for(asyncio.gather(*running), 5)
        # No wait polled again: the poller asked the list by itself while the calls were queued.
        assert len(QueuedHook.lists) > lists_while_stuck
        return events

    events = asyncio.run(main())
    assert [e["status"] for e in events] == ["success"] * 3
    assert sorted(QueuedHook.own_cancelled) == ids  # their places in the queue were given up


# -- helpers --------------------------------------------------------------------------------------
class _waits:
    """Register coalesced waits on ``query_ids`` for the block (as the trigger does)."""

    def __init__(self, hook: ScriptedHook, query_ids: list[str]) -> None:
        self.hook = hook
        self.query_ids = query_ids
        self._contexts: list[Any] = []

    async def __aenter__(self) -> list[coalesce.CoalescedWait]:
        waits = []
        for query_id in self.query_ids:
            context = coalesced_wait(type(self.hook)(self.hook.conn_id), query_id, time.time())
            wait = await context.__aenter__()
            assert wait is not None
            self._contexts.append(context)
            waits.append(wait)
        return waits

    async def __aexit__(self, *exc: object) -> None:
        for context in reversed(self._contexts):
            await context.__aexit__(None, None, None)
