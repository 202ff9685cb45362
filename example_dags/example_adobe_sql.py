"""Adobe Query Service as a SQL database: data-quality checks on a dataset, then a small SELECT to a file.

Connection ``adobe_query_service_sql_default`` (type ``adobe_query_service_sql``): the same
OAuth server-to-server credential as ``adobe_experience_platform`` (client id in *login*, secret
in *password*, the ``org_id`` and ``sandbox`` extras). The tasks use Query Service's PostgreSQL
interface (10 minutes a statement, 50,000 rows without ``LIMIT``): see ``docs/adobe_sql.md``.
``scripts/demo`` points the connection at the local emulator and its PostgreSQL server.

Results go under the Airflow Variable ``querytasks_output_dir`` (default ``/tmp/querytasks-output``).
Needs the ``adobe-sql`` extra (common.sql and psycopg2).
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.sql.operators.sql import (
    SQLColumnCheckOperator,
    SQLTableCheckOperator,
    SQLThresholdCheckOperator,
    SQLValueCheckOperator,
)
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_querytasks.operators.adobe_query_service_sql import AdobeSqlToFileOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment]

CONN_ID = "adobe_query_service_sql_default"
OUTPUT = "{{ var.value.get('querytasks_output_dir', '/tmp/querytasks-output') }}/{{ dag.dag_id }}"

with DAG(
    dag_id="example_adobe_sql_quality_and_export",
    schedule=CronDataIntervalTimetable("0 4 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    # Each task holds one PostgreSQL session, and Query Service limits concurrent sessions per
    # licence ("Session Limit Reached"): two at a time leaves room for other users.
    max_active_tasks=2,
    tags=["example", "adobe", "sql"],
) as quality_and_export:
    # One query per check operator, each a small aggregate: well inside the 10-minute limit.
    columns = SQLColumnCheckOperator(
        task_id="web_events_columns",
        conn_id=CONN_ID,
        table="web_events",
        column_mapping={
            "_id": {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}},
            "page_views": {"min": {"geq_to": 1}},
            "commerce_order_total": {"min": {"geq_to": 0}},
        },
    )
    table = SQLTableCheckOperator(
        task_id="web_events_table",
        conn_id=CONN_ID,
        table="web_events",
        checks={
            "has_rows": {"check_statement": "COUNT(*) > 0"},
            "every_event_has_an_identity": {"check_statement": "COUNT(*) = COUNT(ecid)"},
        },
    )
    pages = SQLValueCheckOperator(
        task_id="known_page_names",
        conn_id=CONN_ID,
        sql="SELECT count(DISTINCT page_name) FROM web_events",
        pass_value=5,
    )
    negative_totals = SQLThresholdCheckOperator(
        task_id="no_negative_order_totals",
        conn_id=CONN_ID,
        sql="SELECT count(*) FROM web_events WHERE commerce_order_total < 0",
        min_threshold=0,
        max_threshold=0,
    )
    # Written to <output>/<dag>/<date>/page_summary.csv; the XCom value is the file's record.
    export = AdobeSqlToFileOperator(
        task_id="page_summary",
        conn_id=CONN_ID,
        sql="""
            SELECT page_name, count(*) AS events, sum(page_views) AS page_views,
                   round(sum(commerce_order_total), 2) AS revenue
            FROM web_events
            WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
            GROUP BY page_name
            ORDER BY page_name
            LIMIT 1000
        """,
        parameters={"start": "{{ data_interval_start }}", "end": "{{ data_interval_end }}"},
        destination=OUTPUT + "/{{ data_interval_start.strftime('%Y-%m-%d') }}/",
        filename="page_summary",
        file_format="csv",
    )
    [columns, table, pages, negative_totals] >> export
