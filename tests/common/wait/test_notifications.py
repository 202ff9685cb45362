"""The notification interface is platform-neutral: a wait ends on any
:class:`~airflow_provider_querytasks.common.wait.notifications.BaseNotificationSource`'s notification,
in the triggerer (rebuilt from the trigger's kwargs by its class path) and in the worker.

The source here is an in-process board, not a queue service: nothing in the wait knows SQS.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from airflow_provider_querytasks.common.api.errors import QueryTaskError
from airflow_provider_querytasks.common.api.notifications import Decoder, Notification
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.wait.notifications import (
    BaseNotificationSource,
    NotificationSubscription,
)
from airflow_provider_querytasks.compat import TaskDeferred

from ...helpers import run_trigger
from ..fake_platform import FakeEmulator, FakeHook, FakeQueryOperator, FakeTrigger

#: Channel -> message bodies posted and not yet taken.
BOARD: dict[str, list[str]] = {}


def post(channel: str, query_id: str) -> None:
    BOARD.setdefault(channel, []).append(json.dumps({"query_id": query_id, "state": "DONE"}))


def read_board_message(body: str) -> Notification | None:
    data = json.loads(body)
    snapshot = StatusSnapshot(data["query_id"], QueryState.SUCCEEDED, data["state"], raw=data)
    return Notification(data["query_id"], None, snapshot)


@dataclass(frozen=True)
class BoardSource(BaseNotificationSource):
    """Notifications posted on an in-process board.

    :param channel: the board's channel to read.
    """

    channel: str

    def accepts(self, notification: Notification, query_id: str) -> bool:
        return notification.query_id == query_id

    def take(self, decode: Decoder, query_id: str) -> StatusSnapshot | None:
        for body in list(BOARD.get(self.channel, [])):
            notification = decode(body)
            if notification is not None and self.accepts(notification, query_id):
                BOARD[self.channel].remove(body)
                return notification.snapshot
        return None

    def listen(self, decode: Decoder, query_id: str, timeout: float) -> StatusSnapshot | None:
        until = time.monotonic() + timeout
        while (snapshot := self.take(decode, query_id)) is None and time.monotonic() < until:
            time.sleep(0.02)
        return snapshot

    @asynccontextmanager
    async def subscribe(self, decode: Decoder, query_id: str) -> AsyncIterator[NotificationSubscription]:
        future: asyncio.Future[StatusSnapshot] = asyncio.get_running_loop().create_future()

        async def watch() -> None:
            while (snapshot := self.take(decode, query_id)) is None:
                await asyncio.sleep(0.02)
            future.set_result(snapshot)

        watcher = asyncio.create_task(watch())
        try:
            yield NotificationSubscription(future)
        finally:
            watcher.cancel()


class NotifiedFakeHook(FakeHook):
    @classmethod
    def notification_decoder(cls) -> Decoder:
        return read_board_message


class NotifiedFakeTrigger(FakeTrigger):
    hook_class = NotifiedFakeHook
    notification_source_class: ClassVar[type[BaseNotificationSource] | None] = BoardSource


class NotifiedFakeOperator(FakeQueryOperator):
    hook_class = NotifiedFakeHook
    trigger_class = NotifiedFakeTrigger

    def notification_source(self) -> BoardSource:
        return BoardSource("done")


@pytest.fixture(autouse=True)
def _clean_board() -> None:
    BOARD.clear()


def test_a_source_is_json_naming_its_class_and_rebuilds_from_it() -> None:
    source = BoardSource("done")
    data = source.to_dict()
    assert data == {"classpath": f"{__name__}.BoardSource", "channel": "done"}
    assert json.loads(json.dumps(data)) == data
    assert BaseNotificationSource.from_dict(data) == source
    # A dict without its class (serialised before sources named it): the trigger's default class.
    assert BaseNotificationSource.from_dict({"channel": "done"}, BoardSource) == source
    with pytest.raises(QueryTaskError, match="names no class"):
        BaseNotificationSource.from_dict({"channel": "done"})
    with pytest.raises(QueryTaskError, match="is not a notification source"):
        BaseNotificationSource.from_dict({"classpath": f"{FakeHook.__module__}.FakeHook"})
    with pytest.raises(QueryTaskError, match="Cannot import notification source class"):
        BaseNotificationSource.from_dict({"classpath": "airflow_provider_querytasks.nowhere.Source"})


def test_a_deferred_wait_ends_on_any_sources_notification(emulator: FakeEmulator) -> None:
    emulator.duration = 600.0  # polls would see it running for ten minutes
    op = NotifiedFakeOperator(task_id="q", sql="select 1", deferrable=True, poll_interval=600)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    trigger: Any = deferred.value.trigger
    assert trigger.notifications == BoardSource("done").to_dict()
    post("done", trigger.query_id)
    event = run_trigger(trigger)
    assert event["status"] == "success" and event["snapshot"]["raw"]["query_id"] == trigger.query_id
    assert not BOARD["done"]  # taken by the wait


def test_a_worker_wait_listens_between_polls(emulator: FakeEmulator) -> None:
    emulator.duration = 600.0

    def post_once_submitted() -> None:
        until = time.monotonic() + 30
        while not emulator.queries and time.monotonic() < until:
            time.sleep(0.02)
        post("done", next(iter(emulator.queries)))

    poster = threading.Thread(target=post_once_submitted, daemon=True)
    poster.start()
    result = NotifiedFakeOperator(task_id="q", sql="select 1", poll_interval=600).execute({})  # type: ignore[arg-type]
    poster.join()
    # DONE came from the notification (the query runs for ten minutes), taken before a second
    # status poll: the wait listened between its polls instead of sleeping.
    polls = emulator.requests_to("api", "GET", rf"/queries/{result['query_id']}$")
    assert result["state"] == "DONE" and len(polls) <= 1
