"""Coalesced polling when a wait's own status call waits long for its turn (a busy account's rate
limiter: Data Kiosk's getQuery serves 2 calls a second to every wait of the account).

The list may be unable to answer for a while (its own, tighter budget); once it can, one list
call must end every finished wait, including those whose own call is still queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.wait import coalesce
from airflow_provider_querytasks.hooks.base import QueryTaskHook
from airflow_provider_querytasks.triggers.base import QueryTaskTrigger

from ..common.fake_platform import FAKE_FORM


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


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> None:
    QueuedHook.states.clear()
    QueuedHook.lists.clear()
    QueuedHook.own_calls.clear()
    QueuedHook.own_cancelled.clear()
    monkeypatch.setattr(QueuedHook, "list_open", False)
    monkeypatch.setattr(coalesce, "LIST_RETRY", 0.05)


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
