"""Data Kiosk: daily sales and traffic by date, every result page fetched as JSON Lines.

Connection ``amazon_sp_api_default`` (type ``amazon_sp_api``): LWA client id in *login*, client
secret in *password*, the ``refresh_token`` and ``region`` extras. ``scripts/demo`` points it at
the local emulator.

The second DAG is notification-driven (Airflow 3 with the ``messaging`` and ``amazon`` extras):
it runs when a ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` notification reaches the SQS queue named by
the environment variable ``DATA_KIOSK_NOTIFICATION_QUEUE``. It is defined only where those providers are
installed (not in the bundled demo, which has no SQS).

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


try:  # Airflow 3 with apache-airflow-providers-common-messaging and -amazon
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    HAS_MESSAGING = True
except ImportError:
    HAS_MESSAGING = False

if HAS_MESSAGING:
    notifications = Asset(
        "data_kiosk_query_finished",
        watchers=[
            AssetWatcher(
                name="data_kiosk_sqs",
                trigger=MessageQueueTrigger(
                    scheme="sqs",
                    sqs_queue=os.environ.get(
                        "DATA_KIOSK_NOTIFICATION_QUEUE",
                        "https://sqs.us-east-1.amazonaws.com/123456789012/data-kiosk-notifications",
                    ),
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
        # Reads the triggering event's payload (other accounts' notifications skip the task),
        # fetches that page as <queryId>.jsonl and submits the next page, whose own notification
        # starts the next run.
        DataKioskNotificationOperator(
            task_id="fetch_finished_query",
            destination=OUTPUT + "/notified/",
        )
