"""common.sql's operators and the rows-to-file operator on the Adobe SQL connection, run in DAGs."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.operators.adobe_query_service_sql import AdobeSqlToFileOperator
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import DAG
else:
    from airflow import DAG

CONN_ID = "adobe_query_service_sql_default"


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state).rsplit(".", 1)[-1].lower() for ti in run.get_task_instances()}


def test_a_failing_check_fails_its_task_and_a_passing_one_succeeds(
    airflow_db: Path, emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    from airflow.providers.common.sql.operators.sql import (
        SQLColumnCheckOperator,
        SQLExecuteQueryOperator,
        SQLTableCheckOperator,
    )

    with DAG(
        f"adobe_sql_checks_{uuid.uuid4().hex[:8]}", schedule=None, start_date=dt.datetime(2026, 11, 1)
    ) as dag:
        SQLColumnCheckOperator(
            task_id="clean_columns",
            conn_id=CONN_ID,
            table="web_events",
            column_mapping={
                "ecid": {"null_check": {"equal_to": 0}},
                "_id": {"unique_check": {"equal_to": 0}},
            },
        )
        SQLColumnCheckOperator(
            task_id="bad_columns",
            conn_id=CONN_ID,
            table="web_events_unvalidated",
            column_mapping={"ecid": {"null_check": {"equal_to": 0}}},
        )
        SQLTableCheckOperator(
            task_id="bad_table",
            conn_id=CONN_ID,
            table="web_events_unvalidated",
            checks={"no_negative_totals": {"check_statement": "MIN(commerce_order_total) >= 0"}},
        )
        SQLExecuteQueryOperator(
            task_id="count", conn_id=CONN_ID, sql="SELECT count(*) FROM web_events_unvalidated"
        )
        AdobeSqlToFileOperator(
            task_id="export",
            conn_id=CONN_ID,
            sql="SELECT page_name, count(*) AS n FROM web_events GROUP BY 1 ORDER BY 1",
            destination=f"{tmp_path}/{{{{ dag.dag_id }}}}/",
            file_format="jsonl",
        )
    run = run_dag(dag, logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
    assert states(run) == {
        "clean_columns": "success",
        "bad_columns": "failed",
        "bad_table": "failed",
        "count": "success",
        "export": "success",
    }
    by_task = {ti.task_id: ti for ti in run.get_task_instances()}
    record = by_task["export"].xcom_pull(task_ids="export")
    path = Path(record["uri"])
    assert path.parent == tmp_path / dag.dag_id and path.suffix == ".jsonl"
    assert record["rows"] == 5 == len(path.read_text().splitlines())
    assert set(record) >= {"uri", "bytes", "sha256", "lines", "source", "rows", "columns"}


def test_bad_operator_input_is_refused_at_once(emulator: AdobeQueryServiceEmulator, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="file_format.*csv, jsonl, parquet"):
        AdobeSqlToFileOperator(task_id="x", sql="SELECT 1", destination=tmp_path, file_format="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="fetch_size"):
        AdobeSqlToFileOperator(task_id="y", sql="SELECT 1", destination=tmp_path, fetch_size=0)
    operator = AdobeSqlToFileOperator(task_id="z", sql="SELECT 1", destination="")
    with pytest.raises(InvalidInputError, match="destination") as caught:
        operator.execute({})
    from airflow_provider_querytasks.compat import AirflowFailException

    assert isinstance(caught.value, AirflowFailException)  # no retry for bad input
    assert emulator.requests_to("api") == []


def test_parquet_from_the_operator(emulator: AdobeQueryServiceEmulator, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    operator = AdobeSqlToFileOperator(
        task_id="pages",
        sql="SELECT page_name, count(*) AS n FROM web_events GROUP BY 1 ORDER BY 1",
        destination=f"{tmp_path}/",
        file_format="parquet",
        filename="pages",
        fetch_size=2,
    )
    record = operator.execute({"run_id": "manual__1"})
    path = Path(record["uri"])
    assert path == tmp_path / "pages.parquet"
    assert record["format"] == "parquet" and record["lines"] is None and record["rows"] == 5
    table = pq.read_table(path)
    assert table.column_names == ["page_name", "n"] and table.num_rows == 5
    assert pq.ParquetFile(path).metadata.num_row_groups == 3  # one per FETCH of 2 rows
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_openlineage_reads_the_tables_as_the_rest_operator_names_them_and_the_file(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    operator = AdobeSqlToFileOperator(
        task_id="lineage",
        sql="SELECT e._id, p.loyalty_tier FROM web_events e "
        "JOIN profile_snapshot p ON e.ecid = p.ecid LIMIT 10",
        destination=tmp_path / "joined.csv",
    )
    record = operator.execute({"run_id": "r1"})
    lineage = operator.get_openlineage_facets_on_complete(None)
    namespace = f"adobe-experience-platform://{emulator.org_id}"
    assert sorted((d.namespace, d.name) for d in lineage.inputs) == [
        (namespace, "prod.profile_snapshot"),
        (namespace, "prod.web_events"),
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", record["uri"])]


def test_common_sql_lineage_uses_the_rest_operators_namespace(emulator: AdobeQueryServiceEmulator) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

    operator = SQLExecuteQueryOperator(
        task_id="ctas",
        conn_id=CONN_ID,
        sql="CREATE TABLE page_counts AS SELECT page_name, count(*) AS n FROM web_events GROUP BY 1",
    )
    lineage = operator.get_openlineage_facets_on_start()
    assert lineage is not None
    namespace = f"adobe-experience-platform://{emulator.org_id}"
    assert [(d.namespace, d.name) for d in lineage.inputs] == [(namespace, "prod.web_events")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(namespace, "prod.page_counts")]
