"""Adobe Query Service: hook, operators, sensors and trigger against the emulator."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import runpy
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_querytasks.common.errors import (
    AmbiguousSubmissionError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    QueryCancelledError,
    QueryTaskError,
    RateLimitedError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.transport import RetryPolicy, close_shared_client_session
from airflow_provider_querytasks.common.wait import QueryState
from airflow_provider_querytasks.compat import PokeReturnValue, TaskDeferred
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.operators.adobe_query_service import (
    AdobeExportDatasetOperator,
    AdobeQueryOperator,
    AdobeScheduledQueryRunSensor,
)
from airflow_provider_querytasks.protocols.adobe_query_service import (
    AdobeQueryDefinition,
    link_query_pairs,
)
from airflow_provider_querytasks.sensors.adobe_query_service import AdobeQuerySensor
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger

from ..helpers import run_trigger, use_connection

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_adobe_query_service.py"


def operator(**kwargs: Any) -> AdobeQueryOperator:
    if "template_id" not in kwargs:
        kwargs.setdefault("sql", "SELECT 1")
    return AdobeQueryOperator(task_id="q", poll_interval=0.05, **kwargs)


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


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("org_id", "not-an-org", "org_id"),
        ("sandbox", "Prod Sandbox", "sandbox"),
        ("endpoint", "http://adobe.io", "endpoint"),
    ],
)
def test_bad_connection_fields(
    emulator: AdobeQueryServiceEmulator, monkeypatch: pytest.MonkeyPatch, field: str, value: str, name: str
) -> None:
    conn = emulator.connection("bad")
    conn["extra"][field] = value
    use_connection(monkeypatch, conn)
    with pytest.raises(InvalidInputError, match=f"'{name}'"):
        AdobeQueryServiceHook("bad").get_query("x")
    assert emulator.requests == []


def test_every_call_carries_the_four_headers(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    query = hook.create_query(sql="SELECT 1")
    token = emulator.requests_to("ims", "POST")[0]
    assert b"grant_type=client_credentials" in token.body and token.param("client_secret") is None
    sent = emulator.requests_to("api", "POST", r"/queries$")[0]
    assert (sent.header("Authorization") or "").startswith("Bearer ")
    assert sent.header("x-api-key") == emulator.client_id
    assert sent.header("x-gw-ims-org-id") == emulator.org_id
    assert sent.header("x-sandbox-name") == "prod"
    assert json.loads(sent.body)["dbName"] == "prod:all"
    assert query["state"] == "SUBMITTED"


@pytest.mark.parametrize(
    ("drop", "status", "code"),
    [("Authorization", 403, "403010"), ("x-api-key", 403, "403000"), ("x-gw-ims-org-id", 400, "400003")],
)
def test_the_emulator_rejects_a_missing_header(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator, drop: str, status: int, code: str
) -> None:
    hook.create_query(sql="SELECT 1")
    sent = emulator.requests_to("api", "POST")[0]
    names = ("Authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name")
    headers = {name: str(sent.header(name)) for name in names if name != drop}
    answer = requests.get(f"{emulator.urls['api']}/data/foundation/query/queries", headers=headers, timeout=5)
    assert answer.status_code == status and answer.json()["error_code"] == code


def test_expired_token_401_is_refreshed_once(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    query_id = hook.create_query(sql="SELECT 1")["id"]
    emulator.expire_tokens()
    assert hook.get_query(query_id)["id"] == query_id
    assert len(emulator.requests_to("ims", "POST")) == 2


def test_wrong_api_key_is_permission_denied_with_the_gateway_text(
    emulator: AdobeQueryServiceEmulator, hook: AdobeQueryServiceHook
) -> None:
    hook.create_query(sql="SELECT 1")
    emulator.client_id = "another"
    with pytest.raises((PermissionDeniedError, AuthenticationError), match="403003|Api Key is invalid"):
        hook.get_query("x")


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


def test_syntax_error_400_and_unknown_query_404(hook: AdobeQueryServiceHook) -> None:
    with pytest.raises(QueryTaskError, match="42601"):
        hook.create_query(sql="SELECT syntax error")
    with pytest.raises(NotFoundError, match="Query not found"):
        hook.get_query("no-such-query")


def test_create_is_not_resent_after_a_5xx_but_429_is(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    emulator.inject(
        action="status", site="api", method="POST", path=r"/queries$", status=502, body="bad gateway"
    )
    with pytest.raises(AmbiguousSubmissionError):
        hook.create_query(sql="SELECT 1")
    emulator.inject(
        action="status",
        site="api",
        method="POST",
        path=r"/queries$",
        status=429,
        body={"error_code": "429050", "message": "Too many requests"},
    )
    hook.create_query(sql="SELECT 1")
    assert len(emulator.requests_to("api", "POST", r"/queries$")) == 3 and len(emulator.queries) == 1


def test_throttling_backs_off_until_it_gives_up(emulator: AdobeQueryServiceEmulator) -> None:
    hook = AdobeQueryServiceHook(retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.05, jitter=0.0))
    hook.create_query(sql="SELECT 1")
    emulator.inject(
        action="status",
        site="api",
        status=429,
        body={"error_code": "429050", "message": "Too many requests"},
        times=None,
    )
    with pytest.raises(RateLimitedError, match="429050"):
        hook.get_query("x")


def test_cancel_running_and_finished(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    emulator.duration = 30.0
    query_id = hook.create_query(sql="SELECT 1")["id"]
    hook.cancel_query(query_id)
    assert hook.get_status(query_id).remote_status == "KILLED"
    hook.cancel_query(query_id)  # 409: already terminal, not an error
    assert emulator.requests_to("api", "PATCH")[-1].status == 409
    hook.soft_delete_query(query_id)
    assert query_id not in {q["id"] for q in hook.iter_queries()}
    assert query_id in {q["id"] for q in hook.iter_queries(exclude_soft_deleted=False)}


def test_listing_follows_next_links_past_the_first_page(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    emulator.duration = 60.0  # every query still SUBMITTED when listed, however slow the machine
    ids = []
    for _ in range(5):
        ids.append(hook.create_query(sql="SELECT 1")["id"])
        time.sleep(0.002)  # distinct created times (the cursor is a timestamp)
    listed = [q["id"] for q in hook.iter_queries(limit=2)]
    assert listed == list(reversed(ids))
    assert len(emulator.requests_to("api", "GET", r"/queries$")) == 3
    assert [q["id"] for q in hook.iter_queries("state==SUBMITTED", limit=2)] == list(reversed(ids))


@pytest.mark.parametrize("zone", ["+00:00", "+02:00"])
def test_next_links_with_a_literal_plus_offset_are_followed(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator, zone: str
) -> None:
    emulator.cursor_zone = zone
    ids = []
    for _ in range(5):
        ids.append(hook.create_query(sql="SELECT 1")["id"])
        time.sleep(0.002)  # distinct created times (the cursor is a timestamp)
    listed = [q["id"] for q in hook.iter_queries(limit=2)]
    assert listed == list(reversed(ids))
    # Each next page was asked for with the cursor as the link wrote it, '+' and all.
    starts = [
        r.query["start"][0] for r in emulator.requests_to("api", "GET", r"/queries$") if "start" in r.query
    ]
    assert len(starts) == 2 and all(start.endswith(zone) for start in starts)


def test_link_query_pairs_keep_a_plus_and_decode_percent_escapes() -> None:
    assert link_query_pairs(
        "orderby=%2Bcreated&start=2026-11-20T00:52:34.839+00:00&property=a%3D%3Db&&x"
    ) == [
        ("orderby", "+created"),
        ("start", "2026-11-20T00:52:34.839+00:00"),
        ("property", "a==b"),
        ("x", ""),
    ]


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


def test_deferred_query_completes_through_the_trigger(emulator: AdobeQueryServiceEmulator) -> None:
    op = operator(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    result = op.execute_complete({}, run_trigger(deferred.value.trigger))  # type: ignore[arg-type]
    assert result["state"] == "SUCCESS" and result["row_count"] == 42


# -- templates, schedules, export ------------------------------------------------------------
def test_templates(hook: AdobeQueryServiceHook) -> None:
    template = hook.create_template("SELECT * FROM t WHERE d = '$day'", "by_day", {"day": "2026-11-20"})
    assert hook.get_template(template["id"])["name"] == "by_day"
    assert [t["id"] for t in hook.list_templates()] == [template["id"]]
    result = operator(template_id=template["id"], query_parameters={"day": "2026-11-21"}).execute({})  # type: ignore[arg-type]
    assert result["state"] == "SUCCESS"


def test_schedules_runs_and_the_run_sensor(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    query_def = AdobeQueryDefinition(sql="SELECT 1 -- emulator: FAILED", db_name="prod:all").body()
    schedule = hook.create_schedule(query_def, {"schedule": "@daily", "startDate": "2026-11-01T00:00:00Z"})
    assert schedule["state"] == "REGISTERING" and hook.get_schedule(schedule["id"])["state"] == "ENABLED"
    hook.set_schedule_enabled(schedule["id"], False)
    assert [s["state"] for s in hook.list_schedules()] == ["DISABLED"]
    run_id = hook.trigger_run(schedule["id"])
    assert run_id and hook.get_run(schedule["id"], run_id)["id"] == run_id
    sensor = AdobeScheduledQueryRunSensor(task_id="run", schedule_id=schedule["id"], run_id=run_id)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    emulator.clock.advance(1.0)
    with pytest.raises(RemoteQueryFailedError, match="58000"):
        sensor.poke({})  # type: ignore[arg-type]
    emulator.duration = 60.0
    second = hook.trigger_run(schedule["id"])
    assert second and second != run_id
    hook.cancel_run(schedule["id"], second)
    assert hook.get_run_status(schedule["id"], second).state is QueryState.CANCELLED


def test_query_sensor_returns_the_created_dataset(emulator: AdobeQueryServiceEmulator) -> None:
    submitted = operator(ctas_parameters={"datasetName": "out"}, wait_for_completion=False).execute({})  # type: ignore[arg-type]
    sensor = AdobeQuerySensor(task_id="s", query_id=submitted["query_id"], poll_interval=0.05)
    deadline = time.monotonic() + 10
    while (done := sensor.poke({})) is False and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.05)
    assert isinstance(done, PokeReturnValue)
    record: dict[str, Any] = done.xcom_value  # type: ignore[assignment]
    assert record["created_dataset_id"] in emulator.datasets


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


def test_file_download_never_leaves_the_platform_host(hook: AdobeQueryServiceHook) -> None:
    hook.create_query(sql="SELECT 1")
    with pytest.raises(QueryTaskError, match="Refusing to send"):
        hook.client.credential_headers(
            "https://evil.example.com/data/foundation/export/files/x?path=a", "downloadFile"
        )


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
