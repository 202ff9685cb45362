"""Sensor for Shoplazza data query tasks."""

from __future__ import annotations

from typing import Any

from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.transport.fetch import redact_url
from airflow_provider_querytasks.compat import Context
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.protocols.shoplazza import result_url
from airflow_provider_querytasks.sensors.base import QueryTaskSensor
from airflow_provider_querytasks.triggers.shoplazza import ShoplazzaDataTaskTrigger


class ShoplazzaDataTaskSensor(QueryTaskSensor[ShoplazzaHook]):
    """Wait for a Shoplazza data task created elsewhere (``wait_for_completion=False``).

    Succeeds when the task is complete with a result URL; fails on an undocumented
    ``query_status``. Works in ``poke`` and ``reschedule`` mode and deferred. Returns
    ``{"query_id", "status": "complete", "url"}`` (the URL without its query string).

    :param query_id: the task id (templated).
    :param conn_id: the ``shoplazza`` connection (``shoplazza_default``).
    :param deferrable: wait in the triggerer.
    :param poll_interval: longest time between polls (``timedelta`` or seconds).
    """

    hook_class = ShoplazzaHook
    trigger_class = ShoplazzaDataTaskTrigger
    ui_color = "#f0e4ff"

    def result_record(self, context: Context, snapshot: StatusSnapshot) -> Any:
        url = result_url(snapshot.raw) or ""
        return {"query_id": snapshot.query_id, "status": "complete", "url": redact_url(url)}
