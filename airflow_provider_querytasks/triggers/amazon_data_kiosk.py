"""Trigger for Data Kiosk queries, and the wait the Data Kiosk operator and sensor share."""

from __future__ import annotations

from airflow_provider_querytasks.common.triggers import QueryTaskTrigger
from airflow_provider_querytasks.common.wait import PollSchedule
from airflow_provider_querytasks.common.wait_mixin import QueryWaitMixin
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.hooks.amazon_sqs import SqsNotificationSource


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
    :param notifications: an :class:`~.amazon_sqs.SqsNotificationSource` as a dict (``to_dict``):
        the wait also ends on the query's completion notification from that queue.
    """

    hook_class = DataKioskHook
    # Kwargs serialised before sources named their class hold an SQS queue's fields only.
    notification_source_class = SqsNotificationSource


class DataKioskWaitMixin(QueryWaitMixin[DataKioskHook]):
    """The wait of the Data Kiosk operator and sensor, which may end on an SQS notification: the
    ``notification_queue_url``, ``aws_conn_id`` and ``notification_poll_interval`` parameters
    (set by each class's constructor) and the schedule of safety-net polls."""

    hook_class = DataKioskHook
    trigger_class = DataKioskQueryTrigger
    notification_queue_url: str | None
    aws_conn_id: str
    notification_poll_interval: float

    def notification_source(self) -> SqsNotificationSource | None:
        return self.hook.notification_source(self.notification_queue_url, self.aws_conn_id)

    def poll_schedule(self) -> PollSchedule:
        if self.notification_queue_url:
            return PollSchedule.safety_net(self.notification_poll_interval)
        return super().poll_schedule()
