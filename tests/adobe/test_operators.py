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


class TI:
    """The task instance a context carries (what the operator reads of it)."""

    dag_id, task_id, map_index = "d", "q", -1

    def __init__(self, try_number: int, run_id: str) -> None:
        self.try_number = try_number
        self.run_id = run_id

    def xcom_push(self, key: str, value: Any) -> None:
        pass


class DagRun:
    def __init__(self, started: dt.datetime) -> None:
        self.start_date = started
        self.queued_at = started - dt.timedelta(seconds=1)


class UnavailableStore:
    """A task state store that keeps nothing (unavailable): the retry must look up remotely."""

    def get(self, key: str) -> Any:
        return None

    def set(self, key: str, value: Any) -> None:
        pass


def ti_context(
    try_number: int, run_id: str = "scheduled__2026-12-07", *, started: dt.datetime, store: Any = None
) -> Any:
    context: dict[str, Any] = {"ti": TI(try_number, run_id), "dag_run": DagRun(started)}
    if store is not None:
        context["task_state_store"] = store
    return context


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def api_lists(emulator: AdobeQueryServiceEmulator) -> list[Any]:
    return emulator.requests_to("api", "GET", r"/queries$")


@pytest.mark.parametrize("store", [None, UnavailableStore()], ids=["no-store", "store-unavailable"])
def test_retry_reattaches_to_the_query_its_task_instance_submitted(
    emulator: AdobeQueryServiceEmulator, store: Any
) -> None:
    emulator.duration = 0.6
    started = now()
    first = operator(wait_for_completion=False, description="Daily sales").execute(
        ti_context(1, started=started, store=store)
    )
    result = operator().execute(ti_context(2, started=started, store=store))
    assert result["query_id"] == first["query_id"] and len(emulator.queries) == 1
    assert result["name"] == "airflow:d:q:scheduled__2026-12-07:-1"
    # The marker is the description's last line, after the user's text.
    request = emulator.queries[first["query_id"]].request
    assert request["description"] == "Daily sales\nquerytasks-ti: airflow:d:q:scheduled__2026-12-07:-1"
    # Every look-up bounded the creation time and asked for API queries only.
    (listed,) = api_lists(emulator)
    assert listed.param("property") == f"created>={started:%Y-%m-%dT%H:%M:%SZ},client==API"


@pytest.mark.parametrize("store", [None, UnavailableStore()], ids=["no-store", "store-unavailable"])
def test_a_retry_never_adopts_another_runs_query_of_the_same_name(
    emulator: AdobeQueryServiceEmulator, store: Any
) -> None:
    """Issue 28: yesterday's run left a SUCCESS query named daily_sales; today's first try's
    query timed out; the retry submits again (it used to re-attach to yesterday's query)."""
    yesterday = operator(name="daily_sales").execute(
        ti_context(1, "scheduled__2026-12-06", started=now() - dt.timedelta(days=1), store=store)
    )
    emulator.queries[yesterday["query_id"]].created_wall -= 86400
    started = now()
    today = operator(name="daily_sales", wait_for_completion=False).execute(
        ti_context(1, started=started, store=store)
    )
    emulator.queries[today["query_id"]].outcome = "TIMEOUT"
    emulator.clock.advance(5)
    result = operator(name="daily_sales").execute(ti_context(2, started=started, store=store))
    assert result["query_id"] not in (yesterday["query_id"], today["query_id"])
    assert result["state"] == "SUCCESS" and result["name"] == "daily_sales"
    assert len(emulator.queries) == 3


def test_a_retry_after_a_failed_query_submits_again_never_an_older_success(
    emulator: AdobeQueryServiceEmulator,
) -> None:
    started = now()
    older = operator().execute(ti_context(1, started=started))  # succeeded; the task then failed
    # Try 2 submitted again (say its store had the id); its query failed.
    marker = "querytasks-ti: airflow:d:q:scheduled__2026-12-07:-1"
    failed = emulator.add_query({"dbName": "prod:all", "sql": "SELECT 1", "description": marker})
    failed.outcome = "FAILED"
    failed.created_wall += 0.01
    emulator.clock.advance(5)
    result = operator().execute(ti_context(3, started=started))
    assert result["query_id"] not in (older["query_id"], failed.id)
    assert len(emulator.queries) == 3


def test_a_query_from_before_the_dag_run_attempt_is_not_adopted(emulator: AdobeQueryServiceEmulator) -> None:
    """A cleared DAG run starts again: its task instance's query of the earlier attempt (same
    marker) was created before the run's new start and is not re-attached to."""
    emulator.duration = 30.0
    earlier = operator(wait_for_completion=False).execute(ti_context(1, started=now()))
    emulator.queries[earlier["query_id"]].created_wall -= 120
    result = operator(wait_for_completion=False).execute(
        ti_context(2, started=now() - dt.timedelta(seconds=60))
    )
    assert result["query_id"] != earlier["query_id"] and len(emulator.queries) == 2


def test_the_look_up_keeps_its_filter_on_every_page_and_stops_at_the_cap(
    emulator: AdobeQueryServiceEmulator,
) -> None:
    """The documented next link carries only orderby and start: the filter is sent again on
    every page (it used to be lost from page 2 on), and the walk stops at its page cap."""
    emulator.duration = 60.0
    started = now() - dt.timedelta(seconds=5)
    ours = operator(wait_for_completion=False).execute(ti_context(1, started=started))
    emulator.queries[ours["query_id"]].created_wall -= 1
    for index in range(150):  # other tasks' queries, newer than ours
        emulator.add_query({"dbName": "prod:all", "sql": "SELECT 1"}).created_wall += index * 0.001
    result = operator(wait_for_completion=False).execute(ti_context(2, started=started))
    assert result["query_id"] == ours["query_id"]
    lists = api_lists(emulator)
    assert len(lists) == 2
    for listed in lists:
        assert listed.param("property") == f"created>={started:%Y-%m-%dT%H:%M:%SZ},client==API"
        assert listed.param("limit") == "100"
    # Past the cap (10 pages of 100), the look-up gives up and the retry submits again.
    emulator.clear()
    for index in range(1000):
        emulator.add_query({"dbName": "prod:all", "sql": "SELECT 1"}).created_wall += 1 + index * 0.001
    again = operator(wait_for_completion=False).execute(ti_context(3, started=started))
    assert again["query_id"] != ours["query_id"]
    assert len(api_lists(emulator)) == 10


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
