"""Trigger for Data Kiosk queries."""

from __future__ import annotations

from airflow_provider_querytasks.common.triggers import QueryTaskTrigger
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook


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
    :param resume: the operator's state, echoed back in the event.
    """

    hook_class = DataKioskHook
