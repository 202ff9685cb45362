"""DAGs the end-to-end run adds beside the examples: a failing query and one to kill."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow_provider_querytasks.operators.adobe_query_service import AdobeQueryOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[assignment]

with DAG("e2e_adobe_query_fails", schedule=None, start_date=datetime(2026, 11, 1), catchup=False) as fails:
    # The emulator ends a query carrying this marker FAILED with a 58000 error.
    AdobeQueryOperator(
        task_id="failing_query",
        sql="SELECT missing_function(x) FROM t -- emulator: FAILED",
        deferrable=True,
        poll_interval=timedelta(seconds=1),
    )

with DAG("e2e_adobe_query_killed", schedule=None, start_date=datetime(2026, 11, 1), catchup=False) as killed:
    # Runs for 10 minutes on the emulator: the e2e run marks it failed while it is deferred.
    AdobeQueryOperator(
        task_id="long_query",
        sql="SELECT 1 -- emulator-duration: 600",
        deferrable=True,
        poll_interval=timedelta(seconds=1),
    )
