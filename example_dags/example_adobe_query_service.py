"""Adobe Query Service: a daily CREATE TABLE AS over the data interval, then its files exported.

Connection ``adobe_experience_platform_default`` (type ``adobe_experience_platform``): OAuth
server-to-server client id in *login*, secret in *password*, the ``org_id`` and ``sandbox``
extras. ``scripts/demo`` points it at the local emulator.

Results go under the Airflow Variable ``querytasks_output_dir`` (default ``/tmp/querytasks-output``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_querytasks.operators.adobe_query_service import (
    AdobeExportDatasetOperator,
    AdobeQueryOperator,
)

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment]

OUTPUT = "{{ var.value.get('querytasks_output_dir', '/tmp/querytasks-output') }}/{{ dag.dag_id }}"
# Batch queries take minutes; the demo shortens the polls against the emulator.
POLL = timedelta(seconds=float(os.environ.get("QUERYTASKS_EXAMPLE_POLL_SECONDS", "60")))

# --8<-- [start:daily_ctas]
with DAG(
    dag_id="example_adobe_query_service_daily_ctas",
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["example", "adobe"],
) as daily_ctas:
    # $start and $end are sent as queryParameters (Adobe substitutes them as text: the SQL
    # quotes them). The output is a new dataset per day.
    ctas = AdobeQueryOperator(
        task_id="daily_page_views",
        sql="""
            SELECT date_trunc('day', timestamp) AS day, count(*) AS page_views
            FROM web_events
            WHERE timestamp >= '$start' AND timestamp < '$end'
            GROUP BY 1
        """,
        query_parameters={
            "start": "{{ data_interval_start.strftime('%Y-%m-%d %H:%M:%S') }}",
            "end": "{{ data_interval_end.strftime('%Y-%m-%d %H:%M:%S') }}",
        },
        ctas_parameters={"datasetName": "page_views_{{ data_interval_start.strftime('%Y%m%d') }}"},
        deferrable=True,
        poll_interval=POLL,
        timeout=timedelta(hours=24),
    )
    export = AdobeExportDatasetOperator(
        task_id="export_page_views",
        query_id="{{ ti.xcom_pull('daily_page_views', key='query_id') }}",
        destination=OUTPUT + "/{{ data_interval_start.strftime('%Y-%m-%d') }}/",
        batch_poll_interval=POLL.total_seconds(),
    )
    ctas >> export
# --8<-- [end:daily_ctas]
