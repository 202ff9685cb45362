"""Data Kiosk: daily sales and traffic by date, every result page fetched as JSON Lines.

Connection ``amazon_sp_api_default`` (type ``amazon_sp_api``): LWA client id in *login*, client
secret in *password*, the ``refresh_token`` and ``region`` extras. ``scripts/demo`` points it at
the local emulator.

The second DAG is notification-driven (Airflow 3 with the ``messaging`` and ``amazon`` extras):
it runs when a ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` notification reaches the SQS queue whose
URL is in the environment variable ``DATA_KIOSK_NOTIFICATION_QUEUE`` (read through the
``aws_default`` connection). It is defined only where those providers are installed and the
variable is set; ``scripts/e2e`` runs it against the emulator's queue.

Results go under the Airflow Variable ``querytasks_output_dir`` (default ``/tmp/querytasks-output``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_querytasks.operators.amazon_data_kiosk import (
    DataKioskNotificationOperator,
    DataKioskQueryOperator,
)

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment]
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]

OUTPUT = "{{ var.value.get('querytasks_output_dir', '/tmp/querytasks-output') }}/{{ dag.dag_id }}"
# Data Kiosk queries take minutes to hours; the demo shortens the polls against the emulator.
POLL = timedelta(seconds=float(os.environ.get("QUERYTASKS_EXAMPLE_POLL_SECONDS", "120")))

# --8<-- [start:sales_and_traffic]
with DAG(
    dag_id="example_data_kiosk_sales_and_traffic",
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["example", "data_kiosk"],
) as sales_and_traffic:
    # The query is a template file next to this DAG; every page (nextToken) is submitted in turn
    # and its data document written as page-0001.jsonl, page-0002.jsonl...
    sales = DataKioskQueryOperator(
        task_id="sales_and_traffic_by_date",
        query="sales_and_traffic_by_date.graphql",
        destination=OUTPUT + "/{{ data_interval_start | ds }}/",
        deferrable=True,
        poll_interval=POLL,
        timeout=timedelta(hours=6),
    )

    @task
    def summarise(result: Any) -> int:
        """What a downstream task sees: one record per page with its fetch record."""
        for page in result["pages"]:
            print(page["query_id"], page["status"], (page["fetch"] or {}).get("uri", "no data"))
        return int(result["rows"])

    summarise(sales.output)
# --8<-- [end:sales_and_traffic]


try:  # Airflow 3 with apache-airflow-providers-common-messaging and -amazon
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    HAS_MESSAGING = True
except ImportError:
    HAS_MESSAGING = False

NOTIFICATION_QUEUE = os.environ.get("DATA_KIOSK_NOTIFICATION_QUEUE")

# --8<-- [start:on_notification]
if HAS_MESSAGING and NOTIFICATION_QUEUE:
    notifications = Asset(
        "data_kiosk_query_finished",
        watchers=[
            AssetWatcher(
                name="data_kiosk_sqs",
                # The amazon provider's SQS trigger, through the aws_default connection: long-polls
                # (a notification is seen at once) and takes only Data Kiosk notifications off the
                # queue, in batches of up to 5 (the operator handles each).
                trigger=MessageQueueTrigger(
                    scheme="sqs",
                    sqs_queue=NOTIFICATION_QUEUE,
                    wait_time_seconds=20,
                    waiter_delay=1,
                    message_filtering="jsonpath",
                    message_filtering_config="notificationType",
                    message_filtering_match_values=["DATA_KIOSK_QUERY_PROCESSING_FINISHED"],
                ),
            )
        ],
    )
    with DAG(
        dag_id="example_data_kiosk_on_notification",
        schedule=[notifications],
        start_date=datetime(2026, 11, 1),
        catchup=False,
        tags=["example", "data_kiosk"],
    ) as on_notification:
        # Handles every notification the run carries (other accounts' are skipped): fetches each
        # page as <queryId>.jsonl and submits the next page, whose own notification starts a
        # later run.
        DataKioskNotificationOperator(
            task_id="fetch_finished_query",
            destination=OUTPUT + "/notified/",
        )
# --8<-- [end:on_notification]
