"""Trigger for Data Kiosk queries."""

from __future__ import annotations

from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.notification_sources.amazon_sqs import SqsNotificationSource
from airflow_provider_querytasks.triggers.base import QueryTaskTrigger


class DataKioskQueryTrigger(QueryTaskTrigger):
    """Polls a Data Kiosk query (getQuery) from the triggerer until DONE, FATAL or CANCELLED.

    Polls of every query of one selling partner share the getQuery usage plan (2 rps, burst
    15) through the process-wide limiter. Cancelled with the task (Airflow 3), it calls
    cancelQuery when ``cancel_on_kill``.

    :param conn_id: the ``amazon_sp_api`` connection id.
    :param query_id: the Data Kiosk query id.
    :param deadline: absolute wall-clock deadline (``time.time()`` seconds), or ``None``.
    :param poll_schedule: the poll schedule as a dict.
    :param started: wall-clock start of the wait.
    :param cancel_on_kill: cancel the query when the deferred task is killed.
    :param next_kwargs: the operator's state, echoed back in the event.
    :param notifications: an :class:`~.amazon_sqs.SqsNotificationSource` as a dict (``to_dict``):
        the wait also ends on the query's completion notification from that queue.
    """

    hook_class = DataKioskHook
    # Kwargs serialised before sources named their class hold an SQS queue's fields only.
    notification_source_class = SqsNotificationSource
