"""DAGs of the production-topology end-to-end run (``scripts/e2e-distributed``, Airflow 3).

Each names its own connection, which the run points at an emulator of its own, so that each
scenario's request log holds only its own calls.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_querytasks.operators.adobe_query_service import AdobeQueryOperator
from airflow_provider_querytasks.operators.shoplazza import ShoplazzaDataTaskOperator
from airflow_provider_querytasks.sensors.amazon_data_kiosk import DataKioskQuerySensor

START = datetime(2026, 11, 1)
#: The Celery queues of the two workers (each also serves ``default``).
WORKER_QUEUES = ("worker1", "worker2")

with DAG("e2e_shoplazza_oauth_relay", schedule=None, start_date=START, catchup=False) as oauth_relay:
    # Four exports in a row over one OAuth connection whose refresh token the shop rotates (and
    # invalidates) on every refresh: each task submits from a worker, waits in a triggerer and
    # resumes in a worker; the tasks alternate between the two workers' queues.
    previous = None
    for index, event in enumerate(("purchase_product", "add_to_cart", "pageview", "begin_checkout")):
        export = ShoplazzaDataTaskOperator(
            task_id=f"export_{event}",
            conn_id="shoplazza_oauth",
            event=event,
            begin_time="2026-11-19T00:00:00",
            end_time="2026-11-20T00:00:00",
            deferrable=True,
            poll_interval=timedelta(seconds=1),
            queue=WORKER_QUEUES[index % 2],
            retries=0,
        )
        if previous is not None:
            previous >> export
        previous = export

with DAG(
    "e2e_data_kiosk_many_waits",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=128,
) as many_waits:
    # Waits on queries created beforehand on one account (its getQuery plan: 2 per second,
    # burst 15), their ids in the run's conf.

    @task
    def query_ids(**context: Any) -> list[str]:
        return [str(query_id) for query_id in context["dag_run"].conf["query_ids"]]

    DataKioskQuerySensor.partial(
        task_id="wait",
        conn_id="amazon_sp_api_many",
        deferrable=True,
        poll_interval=timedelta(seconds=30),
        retries=0,
    ).expand(query_id=query_ids())

with DAG("e2e_triggerer_killed", schedule=None, start_date=START, catchup=False) as triggerer_killed:
    # Two deferred waits that run until the e2e run ends them; it kills the triggerer holding
    # the first one meanwhile.
    for name in ("first", "second"):
        AdobeQueryOperator(
            task_id=f"wait_{name}",
            conn_id="adobe_failover",
            sql=f"SELECT '{name}' -- emulator-duration: 3600",
            deferrable=True,
            poll_interval=timedelta(seconds=2),
            retries=0,
        )

with DAG("e2e_worker_killed", schedule=None, start_date=START, catchup=False) as worker_killed:
    # Waits in the worker; the e2e run kills that worker, and the retry must re-attach.
    AdobeQueryOperator(
        task_id="wait_in_worker",
        conn_id="adobe_worker_kill",
        sql="SELECT 'worker' -- emulator-duration: 3600",
        deferrable=False,
        poll_interval=timedelta(seconds=1),
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
