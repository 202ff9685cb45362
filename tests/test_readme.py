"""The README's first DAGs run as written against the emulators (output folder aside)."""

from __future__ import annotations

import datetime as dt
import re
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.testing import EmulatorServer, emulator_class
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

from .helpers import use_connection

README = Path(__file__).resolve().parent.parent / "README.md"
#: The one thing changed in the README's code: its output folder, moved under the test's tmp_path.
README_OUTPUT = "/tmp/querytasks/"

pytestmark = pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the README's DAGs import airflow.sdk (3.x)")


def first_dags() -> list[str]:
    text = README.read_text()
    section = text[text.index("## A first DAG in ten minutes") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_one_first_dag_per_platform() -> None:
    blocks = first_dags()
    assert len(blocks) == 4
    operators = (
        "ShoplazzaDataTaskOperator",
        "DataKioskQueryOperator",
        "AdobeQueryOperator",
        "AdobeSqlToFileOperator",
    )
    for block, operator in zip(blocks, operators, strict=True):
        assert operator in block
        assert len(block.strip().splitlines()) <= 20


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, EmulatorServer]]:
    servers: dict[str, EmulatorServer] = {}
    for name in ("shoplazza", "data_kiosk", "adobe"):
        server = emulator_class(name)(duration=0.3)  # type: ignore[call-arg]
        server.start()
        use_connection(monkeypatch, server.connection())  # type: ignore[attr-defined]
        servers[name] = server
    yield servers
    for server in servers.values():
        server.stop()


@pytest.mark.parametrize("index", [0, 1, 2], ids=["shoplazza", "data_kiosk", "adobe"])
def test_a_first_dag_runs_as_written(
    index: int, airflow_db: Any, emulators: dict[str, EmulatorServer], tmp_path: Path
) -> None:
    code = first_dags()[index]
    if README_OUTPUT in code:
        code = code.replace(README_OUTPUT, f"{tmp_path}/out/")
    dag_file = tmp_path / f"first_dag_{index}.py"
    dag_file.write_text(code)
    dag = runpy.run_path(str(dag_file))["dag"]
    run = run_dag(dag, logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
    assert str(run.state).rsplit(".", 1)[-1].lower() == "success"
    (ti,) = run.get_task_instances()
    result = ti.xcom_pull(task_ids=ti.task_id)
    assert ti.xcom_pull(task_ids=ti.task_id, key="query_id")
    if index == 0:  # what the README says the XCom holds
        assert result["status"] == "complete"
        assert Path(result["fetch"]["uri"]).is_file() and result["fetch"]["rows"] > 0
        assert str(tmp_path) in result["fetch"]["uri"]
    elif index == 1:
        assert result["status"] == "DONE" and result["rows"] > 0
        page_file = Path(result["pages"][0]["fetch"]["uri"])
        assert page_file.is_file() and page_file.suffix == ".jsonl"
    else:
        assert result["state"] == "SUCCESS" and result["created_dataset_id"] and result["errors"] == []


@pytest.fixture
def adobe_sql_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The Adobe emulator with its PostgreSQL interface (a real, throwaway server)."""
    from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
    from airflow_provider_querytasks.testing.postgres import LocalPostgres

    with LocalPostgres() as postgres:
        server = AdobeQueryServiceEmulator(duration=0.3).start()
        server.attach_postgres(postgres)
        use_connection(monkeypatch, server.sql_connection())
        yield server
        server.stop()


def test_the_adobe_sql_first_dag_runs_as_written(
    airflow_db: Any, adobe_sql_emulator: EmulatorServer, tmp_path: Path
) -> None:
    code = first_dags()[3]
    assert README_OUTPUT in code
    dag_file = tmp_path / "first_dag_adobe_sql.py"
    dag_file.write_text(code.replace(README_OUTPUT, f"{tmp_path}/out/"))
    dag = runpy.run_path(str(dag_file))["dag"]
    run = run_dag(dag, logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
    assert str(run.state).rsplit(".", 1)[-1].lower() == "success"
    (export,) = [ti for ti in run.get_task_instances() if ti.task_id == "page_counts"]
    record = export.xcom_pull(task_ids="page_counts")
    path = Path(record["uri"])
    assert path.is_file() and str(tmp_path) in record["uri"] and path.suffix == ".csv"
    assert record["rows"] == 5 and record["columns"] == ["page_name", "events"]
    assert path.read_text().splitlines()[0] == "page_name,events"
