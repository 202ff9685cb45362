"""The query sensor, written once for every platform: poke, reschedule and deferrable."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.api.validation import required_id
from airflow_provider_querytasks.common.wait.deadline import wait_deadline
from airflow_provider_querytasks.common.wait.loop import to_seconds
from airflow_provider_querytasks.common.wait.mixin import (
    HookT,
    QueryWaitMixin,
    default_deferrable,
    snapshot_from_event,
)
from airflow_provider_querytasks.compat import BaseSensorOperator, Context, PokeReturnValue
from airflow_provider_querytasks.operators.base import FailWithoutRetryMixin


class QueryTaskSensor(FailWithoutRetryMixin, QueryWaitMixin[HookT], BaseSensorOperator):
    """Wait for a remote query submitted elsewhere (e.g. with ``wait_for_completion=False``).

    Succeeds when the query succeeds (its record goes to XCom); fails with the platform's error
    text when it fails. ``mode="poke"`` or ``"reschedule"`` poll from a worker; ``deferrable=True``
    defers at once, with no status call from the worker, and waits in the triggerer until the
    sensor's ``timeout`` or, when it comes first, the try's start + ``execution_timeout``.

    :param query_id: the remote query id (templated, e.g. from the submit task's XCom).
    :param conn_id: the Airflow connection id (the hook's default when omitted).
    :param deferrable: wait in the triggerer instead of a worker.
    :param poll_interval: longest time between two polls (``timedelta`` or seconds); used as
        ``poke_interval``.
    :param accept_cancelled: treat a cancelled query as done instead of failing.
    """

    template_fields: Sequence[str] = ("conn_id", "query_id")

    def __init__(
        self,
        *,
        query_id: str,
        conn_id: str | None = None,
        deferrable: bool = default_deferrable(),
        poll_interval: timedelta | float = timedelta(seconds=60),
        accept_cancelled: bool = False,
        **kwargs: Any,
    ) -> None:
        interval = to_seconds(poll_interval, "poll_interval")
        kwargs.setdefault("poke_interval", interval)
        super().__init__(**kwargs)
        self.query_id = query_id
        self.conn_id = conn_id or self.hook_class.default_conn_name
        self.deferrable = deferrable
        self.poll_interval = interval
        self.accept_cancelled = accept_cancelled

    def result_record(self, context: Context, snapshot: StatusSnapshot) -> Any:
        """The XCom value for a finished query (platform sensors may add to it)."""
        return snapshot.to_dict()

    def _query_id(self) -> str:
        return required_id(self.query_id, "query_id", "query id")

    def poke(self, context: Context) -> PokeReturnValue | bool:
        query_id = self._query_id()
        listen = self.notification_listener(query_id)
        # One short look at the queue; the status call stays the authority when it is empty.
        notified = listen(0) if listen is not None else None
        snapshot = notified or self.hook.get_status(query_id)
        self.log.info(
            "%s: %s (%s)", self.hook.describe_query(query_id), snapshot.state.value, snapshot.remote_status
        )
        if not snapshot.state.terminal:
            return False
        self.raise_for_final_state(snapshot)
        return PokeReturnValue(is_done=True, xcom_value=self.result_record(context, snapshot))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # No first poke from the worker (unlike some official sensors): each task try runs in a
        # fresh process whose rate budget knows nothing of the account's other callers, so 90
        # mapped sensors starting together would each spend a status call at once (a burst of
        # 429s); the triggerer's first poll, shared per account, costs a few seconds at most.
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else float(self.timeout)
        # The earlier of timeout and execution_timeout: deferred time counts against both.
        deadline = wait_deadline(context, timeout, self.execution_timeout, time.time())
        self.defer(
            # The sensor does not own the query: a killed sensor leaves it running.
            trigger=self.build_trigger(self._query_id(), deadline=deadline, cancel_on_kill=False),
            method_name="execute_complete",
            timeout=None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        snapshot = snapshot_from_event(event)
        self.raise_for_final_state(snapshot)
        return self.result_record(context, snapshot)
