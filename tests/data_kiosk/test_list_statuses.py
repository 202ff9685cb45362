"""Coalesced polling on Data Kiosk: getQueries sweeps (``alist_statuses``) and their rate budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
from airflow_provider_querytasks.common.transport.ratelimit import rate_limiters
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.protocols.amazon_data_kiosk import (
    LIST_CLOCK_SKEW,
    LIST_LOOKBACK,
    LIST_MERGE_GAP,
    list_windows,
    listed_snapshot,
)
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator

from ..helpers import FAST_RETRY, fast_forward_rate_limits, use_connection

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def main() -> T:
        try:
            return await coroutine
        finally:
            await close_shared_client_session()

    return asyncio.run(main())


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch) -> Iterator[DataKioskEmulator]:
    """An emulator enforcing the usage plans (getQueries: 0.0222 rps, burst 10)."""
    server = DataKioskEmulator(duration=3600.0)
    server.start()
    use_connection(monkeypatch, server.connection())
    yield server
    server.stop()


def list_calls(server: DataKioskEmulator) -> list[Any]:
    return server.requests_to("api", "GET", r"/queries$")


def getqueries_bucket(hook: DataKioskHook) -> Any:
    return rate_limiters.budget(hook.api, "getQueries")


# -- what a list entry may say -----------------------------------------------------------------
def test_a_listed_entry_ends_a_wait_only_with_what_its_final_snapshot_needs() -> None:
    base = {"queryId": "1", "query": "q", "createdTime": "2026-12-01T00:00:00Z"}
    running = listed_snapshot({**base, "processingStatus": "IN_PROGRESS"})
    assert running is not None and running.state is QueryState.RUNNING
    queued = listed_snapshot({**base, "processingStatus": "IN_QUEUE"})
    assert queued is not None and queued.state is QueryState.PENDING
    done = listed_snapshot(
        {**base, "processingStatus": "DONE", "dataDocumentId": "d", "pagination": {"nextToken": "n"}}
    )
    assert done is not None and done.state is QueryState.SUCCEEDED
    assert done.raw["dataDocumentId"] == "d" and done.raw["pagination"] == {"nextToken": "n"}
    cancelled = listed_snapshot({**base, "processingStatus": "CANCELLED"})
    assert cancelled is not None and cancelled.state is QueryState.CANCELLED
    # DONE without a data document (no data, or a list leaving the field out) and FATAL without
    # an error document are left to getQuery; so is a status the model does not know.
    assert listed_snapshot({**base, "processingStatus": "DONE"}) is None
    assert listed_snapshot({**base, "processingStatus": "FATAL"}) is None
    assert listed_snapshot({**base, "processingStatus": "PAUSED"}) is None


def test_windows_cover_each_wait_and_merge_close_ones() -> None:
    now = 1_000_000.0
    wanted = {"a": now - 10, "b": now - 20, "old": now - 5 * LIST_MERGE_GAP}
    windows = list_windows(wanted, now)
    assert [sorted(ids) for _, _, ids in windows] == [["a", "b"], ["old"]]  # most waits first
    since, until, _ = windows[0]
    assert since == now - 20 - LIST_LOOKBACK and until is None  # reaches the present: Amazon's now
    since, until, _ = windows[1]
    assert since == now - 5 * LIST_MERGE_GAP - LIST_LOOKBACK
    assert until == now - 5 * LIST_MERGE_GAP + LIST_CLOCK_SKEW


# -- sweeps against the emulator ---------------------------------------------------------------
def test_one_sweep_answers_running_and_finished_waits(limited: DataKioskEmulator) -> None:
    running = limited.add_query("query { a }")
    done = limited.add_query("query { b }")
    done.duration = 0.0
    no_data = limited.add_query("query { c }")
    no_data.duration, no_data.outcome = 0.0, "NO_DATA"
    old = limited.add_query("query { d }")
    old.created_wall -= 2 * LIST_LOOKBACK  # created long before its wait began: not listed
    now = time.time()
    wanted = {q.query_id: now for q in (running, done, no_data, old)}
    found = run(DataKioskHook(retry=FAST_RETRY).alist_statuses(wanted))
    assert found is not None
    assert set(found) == {running.query_id, done.query_id}
    assert found[running.query_id].remote_status == "IN_QUEUE"
    assert found[done.query_id].state is QueryState.SUCCEEDED
    assert found[done.query_id].raw["dataDocumentId"] == done.documents["data"]
    [call] = list_calls(limited)
    assert set((call.param("processingStatuses") or "").split(",")) == {
        "IN_QUEUE",
        "IN_PROGRESS",
        "DONE",
        "FATAL",
        "CANCELLED",
    }
    assert call.param("pageSize") == "100"
    assert call.param("createdSince") and call.param("createdUntil") is None


def test_a_sweep_follows_pages_until_every_wait_is_found(limited: DataKioskEmulator) -> None:
    queries = [limited.add_query(f"query {{ q{i} }}") for i in range(150)]
    bystanders = [limited.add_query("query { other }") for _ in range(5)]  # newer, not waited for
    assert bystanders
    now = time.time()
    found = run(DataKioskHook(retry=FAST_RETRY).alist_statuses({q.query_id: now for q in queries}))
    assert found is not None and set(found) == {q.query_id for q in queries}
    calls = list_calls(limited)
    assert len(calls) == 2 and calls[1].param("paginationToken")
    assert all(c.status == 200 for c in calls)


def test_the_sweep_never_waits_for_the_budget_nor_spends_it_all(
    limited: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = fast_forward_rate_limits(monkeypatch)  # counts every second a bucket waits
    query = limited.add_query("query { a }")
    hook = DataKioskHook(retry=FAST_RETRY)
    wanted = {query.query_id: time.time()}

    async def sweeps() -> list[dict[str, StatusSnapshot] | None]:
        answers = [await hook.alist_statuses(wanted)]
        answers.append(await hook.alist_statuses(wanted))  # at once: within the refill interval
        bucket = getqueries_bucket(hook)
        for _ in range(12):
            bucket.last_grant = float("-inf")  # as if the interval had passed (tokens as they are)
            answers.append(await hook.alist_statuses(wanted))
        return answers

    answers = run(sweeps())
    assert clock.skipped == 0.0  # never waited for a token
    assert answers[0] is not None and query.query_id in answers[0]
    assert answers[1] is None  # one sweep per refill interval
    spent = [a for a in answers[2:] if a is not None]
    assert answers[-1] is None and len(spent) < 8  # part of the burst is kept for other callers
    calls = list_calls(limited)
    assert len(calls) == 1 + len(spent) and all(c.status == 200 for c in calls)


def test_a_refused_sweep_is_not_retried(limited: DataKioskEmulator) -> None:
    query = limited.add_query("query { a }")
    limited.inject(action="status", site="api", method="GET", path=r"/queries$", status=429, times=1)
    found = run(DataKioskHook(retry=FAST_RETRY).alist_statuses({query.query_id: time.time()}))
    assert found == {}  # nothing shown: the wait polls its query with getQuery
    assert len(list_calls(limited)) == 1


def test_the_hook_says_when_its_next_sweep_may_go(limited: DataKioskEmulator) -> None:
    query = limited.add_query("query { a }")
    hook = DataKioskHook(retry=FAST_RETRY)
    wanted = {query.query_id: time.time()}

    async def ready_before_and_after() -> tuple[float, float, float, float]:
        before = await hook.alist_ready_in()
        sweep_started = time.monotonic()  # the buckets' clock
        assert await hook.alist_statuses(wanted) is not None
        after = await hook.alist_ready_in()
        since_sweep = time.monotonic() - sweep_started
        assert await hook.alist_statuses(wanted) is None  # what alist_ready_in said
        return before, after, since_sweep, 1 / getqueries_bucket(hook).rate_now()

    before, after, since_sweep, interval = run(ready_before_and_after())
    assert before == 0.0
    # One refill interval of getQueries (about 50 s) after the sweep's call went, which is at most
    # since_sweep ago (not a fixed second: a loaded machine took longer, and failed here).
    assert interval - since_sweep <= after <= interval
