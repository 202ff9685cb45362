"""The trigger every platform's wait runs: a platform's trigger class (``triggers/<platform>.py``)
subclasses :class:`QueryTaskTrigger` and only names its hook class.

The trigger polls its query's status with the shared :class:`~.wait.loop.WaitLoop` on the triggerer's
event loop (through the hook's async methods and the per-loop shared HTTP session) and yields one
event. Its polls are coalesced with those of the other waits on the same account in the process
(:mod:`~.coalesce`: one list call answers many) unless ``[querytasks] coalesce_polls`` is off.
Its kwargs are plain JSON and carry an absolute wall-clock deadline, since ``execution_timeout``
does not cover deferred time and a trigger may move between triggerers.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from airflow_provider_querytasks.common.api.errors import QueryTaskError, QueryTimeoutError
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.transport.clients import shared_session_lease
from airflow_provider_querytasks.common.wait.coalesce import coalesced_wait
from airflow_provider_querytasks.common.wait.loop import PollSchedule, WaitLoop
from airflow_provider_querytasks.common.wait.notifications import BaseNotificationSource
from airflow_provider_querytasks.compat import (
    TRIGGER_ON_KILL_SUPPORTED,
    BaseTrigger,
    TriggerEvent,
    task_is_still_deferred,
)
from airflow_provider_querytasks.hooks.base import QueryTaskHook

#: Event status per final state of the query.
EVENT_STATUS = {
    QueryState.SUCCEEDED: "success",
    QueryState.FAILED: "failed",
    QueryState.CANCELLED: "cancelled",
}


class QueryTaskTrigger(BaseTrigger):
    """Waits for a remote query to finish and yields one event.

    The event is ``{"status": "success"|"failed"|"cancelled"|"timeout"|"error", "query_id",
    "message", "snapshot"}``; ``snapshot`` is the last :class:`~.api.status.StatusSnapshot` as a dict.

    :param conn_id: the Airflow connection id.
    :param query_id: the remote query to wait for.
    :param deadline: absolute wall-clock deadline (``time.time()`` seconds), or ``None``.
    :param poll_schedule: the :class:`~.wait.loop.PollSchedule` as a dict.
    :param started: wall-clock start of the wait (keeps the schedule across deferrals).
    :param cancel_on_kill: cancel the remote query when the task is killed while deferred.
    :param next_kwargs: the keyword arguments the operator deferred with (its own state,
        JSON-able), echoed back in every event as ``next_kwargs``: ``dag.test()`` resumes a task
        with the event alone and drops the ``defer`` kwargs, so the state has to travel with the
        trigger.
    :param notifications: a :class:`~.notifications.BaseNotificationSource` as a dict
        (``to_dict``): also listen there and end the wait when the query's completion
        notification arrives (platforms whose hook has a ``notification_decoder``).
    """

    hook_class: ClassVar[type[QueryTaskHook[Any, Any]]]
    #: The source class of a ``notifications`` dict that names none (serialised before sources
    #: named their class): a deferred task survives the provider's upgrade.
    notification_source_class: ClassVar[type[BaseNotificationSource] | None] = None

    def __init__(
        self,
        conn_id: str,
        query_id: str,
        deadline: float | None = None,
        poll_schedule: dict[str, float] | None = None,
        started: float | None = None,
        cancel_on_kill: bool = True,
        next_kwargs: dict[str, Any] | None = None,
        notifications: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.query_id = query_id
        self.deadline = deadline
        self.poll_schedule = poll_schedule or PollSchedule().to_dict()
        self.started = time.time() if started is None else started
        self.cancel_on_kill = cancel_on_kill
        self.next_kwargs = next_kwargs
        self.notifications = notifications

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "query_id": self.query_id,
                "deadline": self.deadline,
                "poll_schedule": self.poll_schedule,
                "started": self.started,
                "cancel_on_kill": self.cancel_on_kill,
                "next_kwargs": self.next_kwargs,
                "notifications": self.notifications,
            },
        )

    def hook(self) -> QueryTaskHook[Any, Any]:
        return self.hook_class(self.conn_id)

    def _event(self, status: str, message: str, snapshot: StatusSnapshot | None = None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "query_id": self.query_id,
                "message": message,
                "snapshot": snapshot.to_dict() if snapshot else None,
                "next_kwargs": self.next_kwargs,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        schedule = PollSchedule.from_dict(self.poll_schedule)
        hook = self.hook()
        describe = hook.describe_query(self.query_id)
        loop = WaitLoop(
            describe,
            schedule,
            self.deadline,
            started=self.started,
            logger=self.log,
        )
        try:
            async with shared_session_lease(), coalesced_wait(hook, self.query_id, self.started) as shared:
                # Coalesced (the default): the account's shared poller answers the polls, mostly
                # from one list call for many waits; else each poll is this query's own call.
                poll = (
                    shared.poll if shared is not None else functools.partial(hook.aget_status, self.query_id)
                )
                decoder = hook.notification_decoder()
                if self.notifications is not None and decoder is not None:
                    source = BaseNotificationSource.from_dict(
                        self.notifications, self.notification_source_class
                    )
                    async with source.subscribe(decoder, self.query_id) as subscription:
                        snapshot = await loop.run_async(poll, subscription.wait)
                else:
                    # Spread the first polls of triggers that start together (a triggerer restart
                    # brings back every deferred task at once) over the first interval, 5 s at
                    # most: a thousand waits then poll out of step, not in one loop iteration.
                    # (A notified wait listens at once: that costs no call, and a wait not yet
                    # subscribed would leave its notification hidden on the queue for a while.)
                    # Inside the try: a kill during this sleep still cancels the query (< 3.3).
                    await asyncio.sleep(random.uniform(0, min(5.0, schedule.initial)))  # noqa: S311
                    if shared is None:
                        snapshot = await loop.run_async(poll)
                    else:  # also woken at once when another wait's list call shows it finished
                        snapshot = await loop.run_async(poll, shared.listen, poll_first=True)
        except QueryTimeoutError as exc:
            yield self._event("timeout", str(exc))
            return
        except QueryTaskError as exc:
            yield self._event("error", str(exc))
            return
        except asyncio.CancelledError:
            await self._cancel_if_task_was_killed(hook)
            raise
        except Exception as exc:  # an event, not a crashed trigger: the task shows the reason
            yield self._event("error", f"{describe}: {type(exc).__name__}: {exc}")
            return
        message = f"{describe} ended {snapshot.remote_status}"
        if snapshot.message:
            message += f": {snapshot.message}"
        yield self._event(EVENT_STATUS[snapshot.state], message, snapshot)

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed the deferred task (marked it failed/success or cleared it)."""
        if self.cancel_on_kill:
            await self._cancel(self.hook())

    async def _cancel_if_task_was_killed(self, hook: QueryTaskHook[Any, Any]) -> None:
        # Before 3.3 there is no on_kill: a cancelled trigger whose task is no longer deferred was
        # killed by a user; one still deferred is being moved or restarted and must not cancel.
        if TRIGGER_ON_KILL_SUPPORTED or not self.cancel_on_kill:
            return
        if await task_is_still_deferred(self) is False:
            await self._cancel(hook)

    async def _cancel(self, hook: QueryTaskHook[Any, Any]) -> None:
        try:
            async with shared_session_lease():
                await hook.acancel_query(self.query_id)
            self.log.info("Cancelled %s", hook.describe_query(self.query_id))
        except Exception:
            self.log.exception("Could not cancel %s", hook.describe_query(self.query_id))
