"""Sensor for Data Kiosk queries."""

from __future__ import annotations

from typing import Any

from airflow_provider_querytasks.common.sensors import QueryTaskSensor
from airflow_provider_querytasks.common.wait import StatusSnapshot
from airflow_provider_querytasks.compat import Context
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.operators.amazon_data_kiosk import page_record
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger


class DataKioskQuerySensor(QueryTaskSensor):
    """Wait for a Data Kiosk query submitted elsewhere until it is DONE.

    FATAL fails with the error document's message; CANCELLED fails unless
    ``accept_cancelled``. Returns ``{"query_id", "status", "data_document_id",
    "error_document_id", "next_token"}``.

    :param query_id: the query id (templated).
    :param conn_id: the ``amazon_sp_api`` connection (``amazon_sp_api_default``).
    :param deferrable: wait in the triggerer.
    :param poll_interval: longest time between polls (``timedelta`` or seconds).
    :param accept_cancelled: treat CANCELLED as done.
    """

    hook_class = DataKioskHook
    trigger_class = DataKioskQueryTrigger
    ui_color = "#ffe8cc"

    def result_record(self, context: Context, snapshot: StatusSnapshot) -> Any:
        return page_record(snapshot)
