"""Coalesced polling on Shoplazza: the task list answers many waits, against the emulator."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.protocols.shoplazza import ShoplazzaApi
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator
from airflow_provider_querytasks.triggers.shoplazza import ShoplazzaDataTaskTrigger

from ..helpers import FAST_RETRY, run_waits

BEGIN, END = datetime(2026, 11, 20), datetime(2026, 11, 21)


def seed(emulator: ShoplazzaEmulator, count: int) -> list[str]:
    return [emulator.add_task("purchase_product", BEGIN, END).query_id for _ in range(count)]


def list_statuses(wanted: list[str]) -> dict[str, Any]:
    async def run() -> Any:
        try:
            return await ShoplazzaHook(retry=FAST_RETRY).alist_statuses(dict.fromkeys(wanted, time.time()))
        finally:
            await close_shared_client_session()

    return asyncio.run(run())  # type: ignore[no-any-return]


def test_the_list_answers_the_wanted_tasks_in_one_call(emulator: ShoplazzaEmulator) -> None:
    wanted = seed(emulator, 5)
    others = seed(emulator, 3)
    emulator.clock.advance(10)
    snapshots = list_statuses(wanted)
    assert set(snapshots) == set(wanted)
    for query_id, snapshot in snapshots.items():
        assert snapshot.query_id == query_id and snapshot.state is QueryState.SUCCEEDED
        assert snapshot.raw["query"]["url"].startswith(emulator.urls["storage"])
    lists = emulator.requests_to("api", "GET", "/data/tasks$")
    assert len(lists) == 1 and lists[0].param("limit") == "250" and lists[0].param("page") == "1"
    assert not emulator.requests_to("api", "GET", "/data/task$")
    assert not set(others) & set(snapshots)


def test_a_complete_task_listed_without_its_url_is_left_to_its_own_poll(emulator: ShoplazzaEmulator) -> None:
    emulator.url_delay = 60
    done_without_url, running = seed(emulator, 1)[0], None
    emulator.clock.advance(5)
    emulator.duration = 100
    running = seed(emulator, 1)[0]
    snapshots = list_statuses([done_without_url, running])
    assert done_without_url not in snapshots
    assert snapshots[running].state in (QueryState.PENDING, QueryState.RUNNING)


@pytest.mark.parametrize("list_key", ["querys", "tasks"])
def test_both_documented_array_keys_are_read(emulator: ShoplazzaEmulator, list_key: str) -> None:
    emulator.list_key = list_key
    wanted = seed(emulator, 2)
    assert set(list_statuses(wanted)) == set(wanted)


def test_pages_are_read_until_every_wanted_task_is_found(emulator: ShoplazzaEmulator) -> None:
    old = seed(emulator, 1)
    seed(emulator, 300)  # the old task is on page 2 (newest first)
    new = seed(emulator, 1)
    assert set(list_statuses(old + new)) == set(old + new)
    pages = [r.param("page") for r in emulator.requests_to("api", "GET", "/data/tasks$")]
    assert pages == ["1", "2"]


def test_a_task_beyond_the_page_cap_is_not_found(emulator: ShoplazzaEmulator) -> None:
    oldest = seed(emulator, 1)
    seed(emulator, 1000)
    new = seed(emulator, 1)
    assert set(list_statuses(oldest + new)) == set(new)
    assert len(emulator.requests_to("api", "GET", "/data/tasks$")) == 4  # the cap


def test_an_oldest_first_list_is_read_from_its_last_page(emulator: ShoplazzaEmulator) -> None:
    emulator.list_order = "oldest"
    seed(emulator, 600)
    wanted = seed(emulator, 3)  # on page 3 of 3, oldest first
    assert set(list_statuses(wanted)) == set(wanted)
    assert len(emulator.requests_to("api", "GET", "/data/count$")) == 1
    pages = [r.param("page") for r in emulator.requests_to("api", "GET", "/data/tasks$")]
    assert pages == ["1", "3"]


def test_unknown_ids_are_absent(emulator: ShoplazzaEmulator) -> None:
    seed(emulator, 2)
    assert list_statuses(["no-such-task"]) == {}


@pytest.mark.parametrize("coalesce", [True, False])
def test_deferred_waits_on_one_shop_cost_far_fewer_calls_coalesced(
    emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch, coalesce: bool
) -> None:
    # The shop's 2 requests/s would make the per-query run take minutes: lift it on both sides.
    monkeypatch.setattr(ShoplazzaApi, "shared_rate_limit", (1000.0, 1000.0))
    emulator.rate_capacity = emulator.rate_per_second = 1000.0
    monkeypatch.setenv("AIRFLOW__QUERYTASKS__COALESCE_POLLS", str(coalesce))
    process_state.reset()
    emulator.duration = 3.0
    waits = 30
    query_ids = seed(emulator, waits)
    events = run_waits(
        ShoplazzaDataTaskTrigger, query_ids, {"initial": 0.25, "maximum": 0.25, "proportion": 0.1}
    )
    assert [e["status"] for e in events] == ["success"] * waits
    assert {e["query_id"] for e in events} == set(query_ids)
    gets = len(emulator.requests_to("api", "GET", "/data/task$"))
    lists = len(emulator.requests_to("api", "GET", "/data/tasks$"))
    counts = len(emulator.requests_to("api", "GET", "/data/count$"))
    # Each wait polls about every 0.25 s for 3 s: 12 polls; per query that is 12 calls each.
    if coalesce:
        assert gets + lists + counts <= waits * 12 / 10, (gets, lists, counts)
        assert lists >= 1
    else:
        # Every wait polls its own query, 12 times if on time; a loaded machine falls behind
        # the schedule, so only a third of that is asked for (still 3x the coalesced bound).
        assert lists == 0 and gets >= waits * 4, gets
