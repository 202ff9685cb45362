"""Coalesced polling on Adobe Query Service: ``GET /queries`` answers many waits, against the emulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.protocols.adobe_query_service import listed_query_snapshot
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger

from ..helpers import FAST_RETRY, run_waits


def seed(emulator: AdobeQueryServiceEmulator, count: int, sql: str = "SELECT 1") -> list[str]:
    """``count`` queries, each created a millisecond after every query before it (the emulator
    lets queries created in the same millisecond tie, in random order: these tests need an order)."""
    ids = []
    for _ in range(count):
        latest = max((q.created_wall for q in emulator.queries.values()), default=0.0)
        query = emulator.add_query({"dbName": "prod:all", "sql": sql})
        query.created_wall = max(query.created_wall, round(latest + 0.001, 3))
        ids.append(query.id)
    return ids


def list_statuses(wanted: dict[str, float]) -> dict[str, Any]:
    async def run() -> Any:
        try:
            return await AdobeQueryServiceHook(retry=FAST_RETRY).alist_statuses(wanted)
        finally:
            await close_shared_client_session()

    return asyncio.run(run())  # type: ignore[no-any-return]


def list_requests(emulator: AdobeQueryServiceEmulator) -> list[Any]:
    return emulator.requests_to("api", "GET", "/queries$")


def test_one_list_call_answers_the_wanted_queries(emulator: AdobeQueryServiceEmulator) -> None:
    wanted = seed(emulator, 4)
    emulator.clock.advance(10)
    snapshots = list_statuses(dict.fromkeys(wanted, time.time()))
    assert set(snapshots) == set(wanted)
    assert all(s.state is QueryState.SUCCEEDED and s.remote_status == "SUCCESS" for s in snapshots.values())
    (request,) = list_requests(emulator)
    assert request.param("orderby") == "-created" and request.param("limit") == "100"
    assert (request.param("property") or "").startswith("created>=")
    assert not emulator.requests_to("api", "GET", "/queries/.+")


def test_the_created_filter_leaves_out_queries_older_than_the_waits(
    emulator: AdobeQueryServiceEmulator,
) -> None:
    old = emulator.add_query({"dbName": "prod:all", "sql": "SELECT 1"})
    old.created_wall -= 3600  # created an hour ago
    new = seed(emulator, 1)
    snapshots = list_statuses({old.id: time.time(), new[0]: time.time()})
    assert set(snapshots) == set(new)
    # ...and the filter is what left it out: the emulator compares instants, not text.
    assert "created>=" in (list_requests(emulator)[0].param("property") or "")


@pytest.mark.parametrize("next_link", ["full", "documented"])
@pytest.mark.parametrize("cursor_zone", ["Z", "+00:00"])
def test_pages_follow_the_next_link_keeping_filter_and_size(
    emulator: AdobeQueryServiceEmulator, next_link: str, cursor_zone: str
) -> None:
    emulator.next_link, emulator.cursor_zone = next_link, cursor_zone
    started = time.time()
    oldest = seed(emulator, 1)
    seed(emulator, 150)
    newest = seed(emulator, 1)
    before = emulator.add_query({"dbName": "prod:all", "sql": "SELECT 1"})
    before.created_wall = started - 3600  # outside the filter, newest by id order only
    snapshots = list_statuses(dict.fromkeys([*oldest, *newest], started))
    assert set(snapshots) == {*oldest, *newest}
    requests = list_requests(emulator)
    assert len(requests) == 2  # 152 queries, 100 a page
    for request in requests:
        assert request.status == 200
        assert request.param("limit") == "100" and (request.param("property") or "").startswith("created>=")
    assert requests[1].param("start")  # the cursor, '+' and all, arrived as sent


def test_the_page_cap_bounds_a_round(emulator: AdobeQueryServiceEmulator) -> None:
    started = time.time()
    oldest = seed(emulator, 1)
    seed(emulator, 1100)
    assert list_statuses({oldest[0]: started}) == {}
    assert len(list_requests(emulator)) == 10


def test_a_list_object_without_what_its_final_state_needs_gives_no_snapshot() -> None:
    ctas = {"id": "q1", "state": "SUCCESS", "isCTAS": True, "errors": [], "_links": {}}
    assert listed_query_snapshot(ctas) is None
    with_dataset = {**ctas, "_links": {"created_dataset": {"id": "ds1"}}}
    assert listed_query_snapshot(with_dataset) is not None
    assert listed_query_snapshot({"id": "q2", "state": "FAILED"}) is None
    failed = listed_query_snapshot(
        {"id": "q2", "state": "FAILED", "errors": [{"code": "58000", "message": "x"}]}
    )
    assert failed is not None and failed.state is QueryState.FAILED and "58000" in (failed.message or "")
    assert listed_query_snapshot({"id": "q3", "state": "IN_PROGRESS"}) is not None
    assert listed_query_snapshot({"state": "IN_PROGRESS"}) is None


def test_a_ctas_query_listed_as_success_carries_its_dataset(emulator: AdobeQueryServiceEmulator) -> None:
    query = emulator.add_query(
        {"dbName": "prod:all", "sql": "SELECT 1", "ctasParameters": {"datasetName": "out"}}
    )
    emulator.clock.advance(10)
    snapshot = list_statuses({query.id: time.time()})[query.id]
    assert snapshot.state is QueryState.SUCCEEDED
    assert snapshot.raw["_links"]["created_dataset"]["id"]


@pytest.mark.parametrize("coalesce", [True, False])
def test_deferred_waits_on_one_sandbox_cost_far_fewer_calls_coalesced(
    emulator: AdobeQueryServiceEmulator, monkeypatch: pytest.MonkeyPatch, coalesce: bool
) -> None:
    monkeypatch.setenv("AIRFLOW__QUERYTASKS__COALESCE_POLLS", str(coalesce))
    process_state.reset()
    emulator.duration = 3.0
    waits = 30
    query_ids = seed(emulator, waits, sql="SELECT 1 -- emulator: failed")
    events = run_waits(AdobeQueryTrigger, query_ids, {"initial": 0.25, "maximum": 0.25, "proportion": 0.1})
    assert [e["status"] for e in events] == ["failed"] * waits
    assert all("58000" in e["message"] for e in events)
    gets = len(emulator.requests_to("api", "GET", "/queries/.+"))
    lists = len(list_requests(emulator))
    if coalesce:
        assert gets + lists <= waits * 12 / 10, (gets, lists)
        assert lists >= 1
    else:
        # Every wait polls its own query, 12 times if on time; a loaded machine falls behind
        # the schedule, so only a third of that is asked for (still 3x the coalesced bound).
        assert lists == 0 and gets >= waits * 4, gets
