"""Sensors for Adobe Query Service queries and scheduled-query runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.api.validation import required_id
from airflow_provider_querytasks.common.wait.mixin import raise_for_final_state
from airflow_provider_querytasks.compat import BaseSensorOperator, Context, PokeReturnValue
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.links.adobe_query_service import AdobeQueryLink, AdobeScheduledQueryLink
from airflow_provider_querytasks.operators.base import FailWithoutRetryMixin
from airflow_provider_querytasks.protocols.adobe_query_service import query_record
from airflow_provider_querytasks.sensors.base import QueryTaskSensor
from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger


class AdobeQuerySensor(QueryTaskSensor[AdobeQueryServiceHook]):
    """Wait for a Query Service query submitted elsewhere until SUCCESS.

    FAILED and TIMEOUT fail with the query's ``errors[]``; KILLED fails unless
    ``accept_cancelled``. Returns ``{"query_id", "state", "row_count", "elapsed_time_ms",
    "created_dataset_id", "errors"}``.

    :param query_id: the query id (templated).
    :param conn_id: the ``adobe_experience_platform`` connection.
    :param deferrable: wait in the triggerer.
    :param poll_interval: longest time between polls (``timedelta`` or seconds).
    :param accept_cancelled: treat KILLED as done.
    """

    hook_class = AdobeQueryServiceHook
    trigger_class = AdobeQueryTrigger
    ui_color = "#fde2e2"
    operator_extra_links = (AdobeQueryLink(),)

    def result_record(self, context: Context, snapshot: StatusSnapshot) -> Any:
        return query_record(snapshot)


class AdobeScheduledQueryRunSensor(FailWithoutRetryMixin, BaseSensorOperator):
    """Wait for a run of a scheduled query (``poke`` or ``reschedule`` mode).

    Succeeds on SUCCESS (the run goes to XCom); FAILED fails with the run's errors; a cancelled
    run fails.

    :param schedule_id: the schedule id (templated).
    :param run_id: the run id (templated; e.g. from a task that triggered the run).
    :param conn_id: the ``adobe_experience_platform`` connection.
    """

    template_fields: Sequence[str] = ("conn_id", "schedule_id", "run_id")
    ui_color = "#fde2e2"
    operator_extra_links = (AdobeScheduledQueryLink(),)

    def __init__(
        self,
        *,
        schedule_id: str,
        run_id: str,
        conn_id: str = AdobeQueryServiceHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.schedule_id = schedule_id
        self.run_id = run_id
        self.conn_id = conn_id

    def poke(self, context: Context) -> PokeReturnValue | bool:
        schedule_id = required_id(self.schedule_id, "schedule_id")
        run_id = required_id(self.run_id, "run_id")
        hook = AdobeQueryServiceHook(self.conn_id)
        snapshot = hook.get_run_status(schedule_id, run_id)
        self.log.info("Scheduled run %s: %s", snapshot.query_id, snapshot.remote_status)
        if not snapshot.state.terminal:
            return False
        raise_for_final_state(hook, snapshot)
        return PokeReturnValue(is_done=True, xcom_value=snapshot.raw)
