"""A DAG the end-to-end run adds beside the examples: a data-quality check that must fail its task."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.sql.operators.sql import SQLColumnCheckOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment]

with DAG("e2e_adobe_sql_check_fails", schedule=None, start_date=datetime(2026, 11, 1), catchup=False) as dag:
    # The emulator's web_events_unvalidated has a NULL identity and a duplicate id.
    SQLColumnCheckOperator(
        task_id="unvalidated_columns",
        conn_id="adobe_query_service_sql_default",
        table="web_events_unvalidated",
        column_mapping={"ecid": {"null_check": {"equal_to": 0}}, "_id": {"unique_check": {"equal_to": 0}}},
    )
