"""Trigger for Adobe Query Service queries."""

from __future__ import annotations

from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.triggers.base import QueryTaskTrigger


class AdobeQueryTrigger(QueryTaskTrigger):
    """Polls a Query Service query from the triggerer until SUCCESS, FAILED, KILLED or TIMEOUT.

    Cancelled with the task (Airflow 3), it PATCHes ``{"op": "cancel"}`` when ``cancel_on_kill``.
    Give it a deadline of at least 24 h for batch (CTAS/INSERT) queries: that is their limit.

    :param conn_id: the ``adobe_experience_platform`` connection id.
    :param query_id: the query id.
    :param deadline: absolute wall-clock deadline (``time.time()`` seconds), or ``None``.
    :param poll_schedule: the poll schedule as a dict.
    :param started: wall-clock start of the wait.
    :param cancel_on_kill: cancel the query when the deferred task is killed.
    :param next_kwargs: the operator's state, echoed back in the event.
    """

    hook_class = AdobeQueryServiceHook
