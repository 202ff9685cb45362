"""Shoplazza data query tasks: a daily CSV export, and a multi-day export waited for by a sensor.

Connection ``shoplazza_default`` (type ``shoplazza``): the shop in *host*, a private-app access
token in *password* (or the OAuth extras). ``scripts/demo`` points it at the local emulator.

Results go under the Airflow Variable ``querytasks_output_dir`` (default ``/tmp/querytasks-output``):
a local folder or an object-storage URI such as ``s3://bucket/exports``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_querytasks.operators.shoplazza import (
    ShoplazzaDataTaskOperator,
    ShoplazzaDownloadResultOperator,
)
from airflow_provider_querytasks.sensors.shoplazza import ShoplazzaDataTaskSensor

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment]
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]

OUTPUT = "{{ var.value.get('querytasks_output_dir', '/tmp/querytasks-output') }}/{{ dag.dag_id }}"
# Exports take minutes on a real shop; the demo shortens the polls against the emulator.
POLL = timedelta(seconds=float(os.environ.get("QUERYTASKS_EXAMPLE_POLL_SECONDS", "60")))
# Daily intervals from midnight to midnight UTC: 24 h of real time each, sent in the shop's zone.
DAILY = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")

# --8<-- [start:daily]
with DAG(
    dag_id="example_shoplazza_daily_export",
    schedule=DAILY,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["example", "shoplazza"],
) as daily:
    # One task per day: create, wait in the triggerer, then stream the CSV to the output folder.
    export = ShoplazzaDataTaskOperator(
        task_id="export_purchases",
        event="purchase_product",
        begin_time="{{ data_interval_start }}",
        end_time="{{ data_interval_end }}",
        # The times are sent in the shop's time zone: the one it reports (an offset), unless set
        # here, e.g. timezone="America/New_York" for a shop whose zone has daylight saving time.
        destination=OUTPUT + "/{{ data_interval_start.strftime('%Y-%m-%d') }}/",
        deferrable=True,
        poll_interval=POLL,
        timeout=timedelta(hours=2),
        retries=0,
    )

    @task
    def report(result: Any) -> int:
        """What a downstream task sees: the task id, the window, and where the file went."""
        fetch = result["fetch"]
        print(f"task {result['query_id']} {result['window']}: {fetch['rows']} rows at {fetch['uri']}")
        return int(fetch["rows"])

    report(export.output)
# --8<-- [end:daily]

# --8<-- [start:backfill]
with DAG(
    dag_id="example_shoplazza_backfill_with_sensor",
    schedule=DAILY,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["example", "shoplazza"],
) as backfill:
    # Three days in one operator: split into three 24 h tasks, submitted one after another,
    # each waited for in the triggerer.
    three_days = ShoplazzaDataTaskOperator(
        task_id="export_three_days",
        event="add_to_cart",
        begin_time="{{ data_interval_end - macros.timedelta(days=3) }}",
        end_time="{{ data_interval_end }}",
        destination=OUTPUT + "/three_days/",
        deferrable=True,
        poll_interval=POLL,
    )
    # Or create without waiting, wait with a deferrable sensor, and download in its own task.
    submit = ShoplazzaDataTaskOperator(
        task_id="submit_pageviews",
        event="pageview",
        begin_time="{{ data_interval_start }}",
        end_time="{{ data_interval_end }}",
        wait_for_completion=False,
    )
    wait = ShoplazzaDataTaskSensor(
        task_id="wait_for_pageviews",
        query_id="{{ ti.xcom_pull('submit_pageviews', key='query_id') }}",
        deferrable=True,
        poll_interval=POLL,
        timeout=timedelta(hours=2),
    )
    download = ShoplazzaDownloadResultOperator(
        task_id="download_pageviews",
        query_id="{{ ti.xcom_pull('submit_pageviews', key='query_id') }}",
        destination=OUTPUT + "/pageviews/{{ data_interval_start.strftime('%Y-%m-%d') }}.csv",
    )
    three_days >> submit >> wait >> download
# --8<-- [end:backfill]
