"""Adobe Query Service operators against the emulator.

Validation, terminal states, re-attach, export, the example DAG.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import runpy
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import (
    InvalidInputError,
    QueryCancelledError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.operators.adobe_query_service import (
    AdobeExportDatasetOperator,
)
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger

from .conftest import operator

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_adobe_query_service.py"


def wait_done(hook: AdobeQueryServiceHook, query_id: str) -> Any:
    deadline = time.monotonic() + 10
    while not (snapshot := hook.get_status(query_id)).state.terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    return snapshot


# -- validation and gateway ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"sql": "  "}, "sql"),
        ({"sql": "SELECT 1", "template_id": "t"}, "sql"),
        ({"db_name": "prod"}, "db_name"),
        ({"db_name": "dev:all"}, "db_name"),  # the connection's sandbox is prod
        (
            {"ctas_parameters": {"datasetName": "a"}, "insert_into_parameters": {"datasetName": "b"}},
            "ctas_parameters",
        ),
        ({"ctas_parameters": {"description": "no name"}}, "ctas_parameters"),
        ({"query_parameters": {"bad-name": 1}}, "query_parameters"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    emulator: AdobeQueryServiceEmulator, kwargs: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"'{parameter}'"):
        operator(**kwargs).execute({})  # type: ignore[arg-type]
    assert emulator.requests_to("api") == []


# -- queries ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("marker", "state", "error"),
    [
        ("", QueryState.SUCCEEDED, None),
        ("-- emulator: FAILED", QueryState.FAILED, RemoteQueryFailedError),
        ("-- emulator: KILLED", QueryState.CANCELLED, QueryCancelledError),
        ("-- emulator: TIMEOUT", QueryState.FAILED, RemoteQueryFailedError),
    ],
)
def test_every_terminal_state(
    emulator: AdobeQueryServiceEmulator,
    hook: AdobeQueryServiceHook,
    marker: str,
    state: QueryState,
    error: Any,
) -> None:
    sql = f"SELECT 1 {marker}"
    assert wait_done(hook, hook.create_query(sql=sql)["id"]).state is state
    if error is None:
        assert operator(sql=sql).execute({})["state"] == "SUCCESS"  # type: ignore[arg-type]
    else:
        with pytest.raises(error) as raised:
            operator(sql=sql).execute({})  # type: ignore[arg-type]
        if "FAILED" in marker:
            assert "58000 USER_ERROR: Batch query execution" in str(raised.value)
        if "TIMEOUT" in marker:
            assert "53400" in str(raised.value)


def test_success_with_errors_is_a_warning(
    emulator: AdobeQueryServiceEmulator, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    result = operator(sql="SELECT 1 -- emulator: SUCCESS_WITH_ERRORS").execute({})  # type: ignore[arg-type]
    assert result["state"] == "SUCCESS" and result["errors"][0]["code"] == "58000"
    # Airflow 3's task logger writes through structlog to stdout; Airflow 2's goes to logging.
    assert "succeeded with errors" in caplog.text + capsys.readouterr().out


def test_query_parameters_are_sent_as_parameters(emulator: AdobeQueryServiceEmulator) -> None:
    operator(sql="SELECT * FROM t WHERE d = '$day'", query_parameters={"day": "2026-11-20"}).execute({})  # type: ignore[arg-type]
    body = json.loads(emulator.requests_to("api", "POST", r"/queries$")[0].body)
    assert body["sql"] == "SELECT * FROM t WHERE d = '$day'" and body["queryParameters"] == {
        "day": "2026-11-20"
    }


def test_on_kill_and_killed_trigger_cancel(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    emulator.duration = 60.0
    op = operator(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    op.on_kill()
    assert hook.get_status(str(op.query_id)).remote_status == "KILLED"
    other = hook.create_query(sql="SELECT 2")["id"]
    trigger = AdobeQueryTrigger(conn_id="adobe_experience_platform_default", query_id=other)

    async def kill() -> None:
        try:
            await trigger.on_kill()
        finally:
            await close_shared_client_session()

    asyncio.run(kill())
    assert hook.get_status(other).remote_status == "KILLED"
    assert isinstance(deferred.value.trigger, AdobeQueryTrigger)


def test_retry_reattaches_by_the_deterministic_name(emulator: AdobeQueryServiceEmulator) -> None:
    emulator.duration = 0.6

    class TI:
        dag_id, task_id, run_id, map_index = "d", "q", "manual__1", -1

        def __init__(self, try_number: int) -> None:
            self.try_number = try_number

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    first = operator(wait_for_completion=False).execute({"ti": TI(1)})  # type: ignore[arg-type,typeddict-item]
    result = operator().execute({"ti": TI(2)})  # type: ignore[arg-type,typeddict-item]
    assert result["query_id"] == first["query_id"] and len(emulator.queries) == 1
    assert result["name"] == "airflow:d:q:manual__1:-1"


def test_export_of_a_multi_file_batch_with_pages_and_directories(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    emulator.files_per_batch, emulator.directory_every, emulator.batch_delay = 103, 10, 0.5
    query = operator(insert_into_parameters={"datasetName": "existing"}).execute({})  # type: ignore[arg-type]
    result = AdobeExportDatasetOperator(
        task_id="export", query_id=query["query_id"], destination=str(tmp_path), batch_poll_interval=0.05
    ).execute({})  # type: ignore[arg-type]
    files = sorted(tmp_path.iterdir())
    assert len(files) == 103 == len(result["files"]) and result["record_count"] == 42
    assert all(f.read_bytes().startswith(b"PAR1") and f.stat().st_size == 1000 for f in files)
    listing = emulator.requests_to("api", "GET", r"/batches/[^/]+/files$")
    assert [r.param("start") for r in listing] == ["0", "100"]  # a second page
    catalog = emulator.requests_to("api", "GET", r"/catalog/batches$")
    assert len(catalog) >= 2  # the batch was 'processing' first, then 'success'


def test_export_needs_exactly_one_source(emulator: AdobeQueryServiceEmulator, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        AdobeExportDatasetOperator(
            task_id="e", destination=str(tmp_path), dataset_id="a", dataset_name="b"
        ).execute({})  # type: ignore[arg-type]
    assert emulator.requests == []


def test_example_dag_runs_end_to_end(
    airflow_db: Any, emulator: AdobeQueryServiceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("QUERYTASKS_EXAMPLE_POLL_SECONDS", "0.2")
    namespace = runpy.run_path(str(EXAMPLE), run_name="example_adobe")
    run = run_dag(namespace["daily_ctas"], logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
    assert str(run.state).rsplit(".", 1)[-1].lower() == "success"
    assert len([p for p in tmp_path.rglob("*.parquet")]) == 2
    body = json.loads(emulator.requests_to("api", "POST", r"/queries$")[0].body)
    assert body["ctasParameters"]["datasetName"].startswith("page_views_2026")
    assert "{{" not in json.dumps(body) and body["queryParameters"]["start"] < body["queryParameters"]["end"]
