"""Sensor for Data Kiosk queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.wait.loop import to_seconds
from airflow_provider_querytasks.compat import Context
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.notification_sources.amazon_sqs import (
    DEFAULT_AWS_CONN_ID,
    SqsNotificationWaitMixin,
)
from airflow_provider_querytasks.protocols.amazon_data_kiosk import page_record
from airflow_provider_querytasks.sensors.base import QueryTaskSensor
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger


class DataKioskQuerySensor(SqsNotificationWaitMixin[DataKioskHook], QueryTaskSensor[DataKioskHook]):
    """Wait for a Data Kiosk query submitted elsewhere until it is DONE.

    FATAL fails with the error document's message; CANCELLED fails unless
    ``accept_cancelled``. Returns ``{"query_id", "status", "data_document_id",
    "error_document_id", "next_token"}``.

    :param query_id: the query id (templated).
    :param conn_id: the ``amazon_sp_api`` connection (``amazon_sp_api_default``).
    :param deferrable: wait in the triggerer.
    :param poll_interval: longest time between polls (``timedelta`` or seconds).
    :param accept_cancelled: treat CANCELLED as done.
    :param notification_queue_url: the SQS queue the account's completion notifications go to
        (templated; needs the ``amazon`` extra). Deferred, the wait ends when the query's
        notification arrives and getQuery is polled only as a safety net (every
        ``notification_poll_interval`` at most); each poke looks at the queue before getQuery.
    :param aws_conn_id: the ``aws`` connection that reads the queue (templated).
    :param notification_poll_interval: with a queue, the longest time between safety-net polls.
    """

    hook_class = DataKioskHook
    trigger_class = DataKioskQueryTrigger

    template_fields: Sequence[str] = (
        *QueryTaskSensor.template_fields,
        "notification_queue_url",
        "aws_conn_id",
    )
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        notification_queue_url: str | None = None,
        aws_conn_id: str = DEFAULT_AWS_CONN_ID,
        notification_poll_interval: timedelta | float = timedelta(minutes=15),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.notification_queue_url = notification_queue_url
        self.aws_conn_id = aws_conn_id
        self.notification_poll_interval = to_seconds(notification_poll_interval, "notification_poll_interval")

    def result_record(self, context: Context, snapshot: StatusSnapshot) -> Any:
        return page_record(snapshot)
