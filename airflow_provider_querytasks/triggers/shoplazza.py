"""Trigger for Shoplazza data query tasks."""

from __future__ import annotations

from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.triggers.base import QueryTaskTrigger


class ShoplazzaDataTaskTrigger(QueryTaskTrigger):
    """Polls a Shoplazza data task from the triggerer until it completes with a result URL.

    Yields one event: ``success`` (``query_status`` 2 with a URL), ``failed`` (an undocumented
    ``query_status``, or complete without a URL for too long), ``timeout`` or ``error``.

    :param conn_id: the ``shoplazza`` connection id.
    :param query_id: the data task id.
    :param deadline: absolute wall-clock deadline (``time.time()`` seconds), or ``None``.
    :param poll_schedule: the poll schedule as a dict.
    :param started: wall-clock start of the wait.
    :param cancel_on_kill: ignored in effect: Shoplazza cannot cancel a task (it is logged).
    """

    hook_class = ShoplazzaHook
