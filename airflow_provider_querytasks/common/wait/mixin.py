"""What the submit operator and the sensor share to wait for a query, written once.

:class:`QueryWaitMixin` holds the hook, the trigger class, the notification source, the poll
schedule and the building of the trigger; :func:`snapshot_from_event` reads a trigger's event
back into a :class:`~.api.status.StatusSnapshot`, and :func:`raise_for_final_state` turns a failed or
cancelled one into the platform's exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar, cast

from airflow_provider_querytasks.common.api.errors import QueryTaskError, QueryTimeoutError
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.wait.loop import PollSchedule
from airflow_provider_querytasks.common.wait.notifications import (
    BaseNotificationSource,
    notification_listener,
)
from airflow_provider_querytasks.compat import conf
from airflow_provider_querytasks.hooks.base import QueryTaskHook
from airflow_provider_querytasks.triggers.base import QueryTaskTrigger

HookT = TypeVar("HookT", bound=QueryTaskHook[Any, Any])


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` (False when unset), as Airflow's own operators read it."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def snapshot_from_event(event: dict[str, Any] | None) -> StatusSnapshot:
    """The final snapshot in a trigger event, or the error the event means.

    :raises QueryTimeoutError: on a ``timeout`` event.
    :raises QueryTaskError: on an ``error`` event or a missing event.
    """
    if not event:
        raise QueryTaskError("The trigger returned no event")
    status = event.get("status")
    if status == "timeout":
        raise QueryTimeoutError(event.get("message") or "The query did not finish before the timeout")
    if status == "error" or not event.get("snapshot"):
        raise QueryTaskError(event.get("message") or f"The trigger failed: {event!r}")
    return StatusSnapshot.from_dict(event["snapshot"])


def raise_for_final_state(
    hook: QueryTaskHook[Any, Any], snapshot: StatusSnapshot, *, accept_cancelled: bool = False
) -> None:
    """Raise the hook's :meth:`~.hooks.base.QueryTaskHook.failure_error` for a failed query, and for
    a cancelled one unless ``accept_cancelled``; return for any other state."""
    if snapshot.state is QueryState.FAILED or (
        snapshot.state is QueryState.CANCELLED and not accept_cancelled
    ):
        raise hook.failure_error(snapshot)


class QueryWaitMixin(Generic[HookT]):
    """The wait for one remote query, shared by :class:`~.operators.base.QueryTaskOperator` and
    :class:`~.sensors.base.QueryTaskSensor` (each class's constructor sets ``conn_id`` and
    ``poll_interval``).

    A platform sets ``hook_class`` and ``trigger_class``; one whose queries announce their end
    (Data Kiosk) overrides :meth:`notification_source` and :meth:`poll_schedule`.
    """

    hook_class: ClassVar[type[QueryTaskHook[Any, Any]]]
    trigger_class: ClassVar[type[QueryTaskTrigger]]
    #: Whether a CANCELLED query counts as finished (else the task fails).
    accept_cancelled: bool = False
    conn_id: str
    poll_interval: float

    @cached_property
    def hook(self) -> HookT:
        """The platform hook (typed per platform: ``ShoplazzaHook`` for the Shoplazza classes)."""
        return cast("HookT", self.hook_class(self.conn_id))

    def notification_source(self) -> BaseNotificationSource | None:
        """Where completion notifications can end the wait (``None``: poll only)."""
        return None

    def poll_schedule(self) -> PollSchedule:
        """When to poll the status (rarely when a notification is expected)."""
        return PollSchedule.from_poll_interval(self.poll_interval)

    def notification_listener(self, query_id: str) -> Callable[[float], StatusSnapshot | None] | None:
        """A blocking listen for ``query_id``'s completion notification (``None``: poll only)."""
        return notification_listener(self.hook.notification_decoder(), self.notification_source(), query_id)

    def build_trigger(
        self,
        query_id: str,
        *,
        deadline: float | None,
        cancel_on_kill: bool,
        next_kwargs: dict[str, Any] | None = None,
    ) -> QueryTaskTrigger:
        """The trigger that waits for ``query_id`` in the triggerer, until ``deadline``."""
        source = self.notification_source()
        return self.trigger_class(
            conn_id=self.conn_id,
            query_id=query_id,
            deadline=deadline,
            poll_schedule=self.poll_schedule().to_dict(),
            started=time.time(),
            cancel_on_kill=cancel_on_kill,
            next_kwargs=next_kwargs,
            notifications=source.to_dict() if source else None,
        )

    def raise_for_final_state(self, snapshot: StatusSnapshot) -> None:
        """Raise the platform's error for a failed query (or a cancelled one not accepted)."""
        raise_for_final_state(self.hook, snapshot, accept_cancelled=self.accept_cancelled)
