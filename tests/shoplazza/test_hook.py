"""ShoplazzaHook against the Shoplazza emulator: tasks, statuses, errors, auth, results."""

from __future__ import annotations

import gzip
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import (
    AmbiguousSubmissionError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RemoteQueryFailedError,
    ServerError,
)
from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.operators.shoplazza import ShoplazzaDataTaskOperator
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from ..helpers import FAST_RETRY, run_trigger, use_connection
from .conftest import DAY, trigger_for


def wait_complete(hook: ShoplazzaHook, query_id: str, limit: float = 10.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        snapshot = hook.get_status(query_id)
        if snapshot.state.terminal:
            return snapshot
        time.sleep(0.05)
    raise AssertionError(f"{query_id} did not finish")


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("", "host"),
        ("https://evil.example.com/path", "host"),
        ("shop name", "host"),
    ],
)
def test_bad_shop_is_refused_before_any_request(
    emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch, host: str, message: str
) -> None:
    conn = emulator.connection("bad_shop")
    conn["host"] = host
    use_connection(monkeypatch, conn)
    with pytest.raises(InvalidInputError, match=message):
        ShoplazzaHook("bad_shop", retry=FAST_RETRY).create_task("purchase_product", *DAY)
    assert emulator.requests == []


def test_missing_token_is_a_clear_error(emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = emulator.connection("no_token")
    del conn["password"]
    use_connection(monkeypatch, conn)
    with pytest.raises(InvalidInputError) as error:
        ShoplazzaHook("no_token").count_tasks()
    assert "password" in str(error.value) or "access" in str(error.value).lower()
    assert emulator.requests == []


def test_unknown_event_is_refused_naming_the_allowed_values(
    hook: ShoplazzaHook, emulator: ShoplazzaEmulator
) -> None:
    with pytest.raises(InvalidInputError, match="'event'.*purchase_product"):
        hook.create_task("purchases", *DAY)
    assert emulator.requests == []


def test_create_then_statuses_then_url(hook: ShoplazzaHook, emulator: ShoplazzaEmulator) -> None:
    query_id = hook.create_task("purchase_product", *DAY)
    created = emulator.requests_to("api", "GET", r"/data/query$")[0]
    assert created.param("event") == "purchase_product"
    assert (created.param("beginTime"), created.param("endTime")) == DAY
    assert created.header("Access-Token") == emulator.access_token
    first = hook.get_status(query_id)
    assert first.state is QueryState.PENDING and first.remote_status == 0
    final = wait_complete(hook, query_id)
    assert final.state is QueryState.SUCCEEDED
    assert hook.result_url(query_id).startswith(emulator.urls["storage"])
    # The detail call always names the task: without id it would return the latest one.
    assert all(r.param("id") == query_id for r in emulator.requests_to("api", "GET", r"/data/task$"))


def test_empty_task_id_is_refused_locally(hook: ShoplazzaHook, emulator: ShoplazzaEmulator) -> None:
    with pytest.raises(InvalidInputError, match="query_id"):
        hook.get_task("")
    assert emulator.requests == []


def test_unknown_task_is_not_found(hook: ShoplazzaHook) -> None:
    with pytest.raises(NotFoundError, match="no result"):
        hook.get_task("does-not-exist")


def test_intermediate_status_1_is_running(emulator: ShoplazzaEmulator, hook: ShoplazzaHook) -> None:
    emulator.duration = 30.0
    query_id = hook.create_task("pageview", *DAY)
    emulator.clock.advance(15.0)
    snapshot = hook.get_status(query_id)
    assert snapshot.remote_status == 1 and snapshot.state is QueryState.RUNNING


def test_undocumented_final_status_fails_with_the_raw_task(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook
) -> None:
    emulator.final_status = 3
    query_id = hook.create_task("pageview", *DAY)
    snapshot = wait_complete(hook, query_id)
    assert snapshot.state is QueryState.FAILED and snapshot.remote_status == 3
    assert snapshot.raw["query_id"] == query_id
    with pytest.raises(RemoteQueryFailedError, match="no result yet"):
        hook.result_url(query_id)


def test_complete_without_url_waits_then_fails_after_the_grace(
    emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.duration = 0.0
    emulator.url_delay = 3600.0
    hook = ShoplazzaHook(retry=FAST_RETRY, url_grace=0.3)
    query_id = hook.create_task("pageview", *DAY)
    waiting = hook.get_status(query_id)
    assert waiting.remote_status == 2 and waiting.state is QueryState.RUNNING
    assert "URL" in (waiting.message or "")
    time.sleep(0.35)
    failed = hook.get_status(query_id)
    assert failed.state is QueryState.FAILED and "without a result URL" in (failed.message or "")


def test_url_appearing_late_is_success(emulator: ShoplazzaEmulator, hook: ShoplazzaHook) -> None:
    emulator.duration = 0.0
    emulator.url_delay = 10.0
    query_id = hook.create_task("pageview", *DAY)
    assert hook.get_status(query_id).state is QueryState.RUNNING
    emulator.clock.advance(11.0)
    assert hook.get_status(query_id).state is QueryState.SUCCEEDED


@pytest.mark.parametrize("list_key", ["querys", "tasks"])
def test_list_and_iterate_pages_with_either_array_name(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook, list_key: str
) -> None:
    emulator.list_key = list_key
    ids = {hook.create_task("pageview", *DAY) for _ in range(5)}
    assert {t["query_id"] for t in hook.iter_tasks(limit=2)} == ids
    pages = [r.param("page") for r in emulator.requests_to("api", "GET", r"/data/tasks$")]
    assert pages == ["1", "2", "3"]  # 2 + 2 + 1: the short page is the last
    assert hook.count_tasks() == 5
    assert len(hook.list_tasks(page=1, limit=3)) == 3


@pytest.mark.parametrize(("page", "limit", "name"), [(0, 10, "page"), (1, 0, "limit"), (1, 251, "limit")])
def test_list_bounds_are_checked_locally(
    hook: ShoplazzaHook, emulator: ShoplazzaEmulator, page: int, limit: int, name: str
) -> None:
    with pytest.raises(InvalidInputError, match=name):
        hook.list_tasks(page, limit)
    assert emulator.requests == []


def test_rate_limited_create_is_retried(emulator: ShoplazzaEmulator, hook: ShoplazzaHook) -> None:
    emulator.inject(
        action="status", site="api", path=r"/data/query$", status=429, body={"errors": ["Too Many Requests"]}
    )
    assert hook.create_task("pageview", *DAY)
    assert len(emulator.requests_to("api", "GET", r"/data/query$")) == 2
    assert len(emulator.tasks) == 1


def test_server_error_on_create_is_not_resent(emulator: ShoplazzaEmulator, hook: ShoplazzaHook) -> None:
    emulator.inject(action="status", site="api", path=r"/data/query$", status=502, body="bad gateway")
    with pytest.raises(AmbiguousSubmissionError):
        hook.create_task("pageview", *DAY)
    assert len(emulator.requests_to("api", "GET", r"/data/query$")) == 1


def test_server_error_on_status_is_retried(emulator: ShoplazzaEmulator, hook: ShoplazzaHook) -> None:
    query_id = hook.create_task("pageview", *DAY)
    emulator.inject(action="status", site="api", path=r"/data/task$", status=503, body="busy", times=2)
    assert hook.get_status(query_id).query_id == query_id
    assert len(emulator.requests_to("api", "GET", r"/data/task$")) == 3


def test_wrong_token_is_an_authentication_error_with_the_remote_text(
    emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for status in (401, 400):  # both answers are documented for a bad token
        emulator.auth_failure_status = status
        conn = emulator.connection("wrong_token")
        conn["password"] = "not-the-token"
        use_connection(monkeypatch, conn)
        with pytest.raises(AuthenticationError, match="store is not active") as error:
            ShoplazzaHook("wrong_token", retry=FAST_RETRY).count_tasks()
        assert "not-the-token" not in str(error.value)


def test_missing_scope_is_permission_denied(emulator: ShoplazzaEmulator, hook: ShoplazzaHook) -> None:
    emulator.scopes = ()
    with pytest.raises(PermissionDeniedError, match="read_data"):
        hook.count_tasks()


def test_retired_api_version_explains_itself(
    emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = emulator.connection("old_version")
    conn["extra"]["api_version"] = "2020-07"
    use_connection(monkeypatch, conn)
    with pytest.raises(NotFoundError, match="2022-01"):
        ShoplazzaHook("old_version", retry=FAST_RETRY).count_tasks()


def test_oauth_refresh_rotates_the_refresh_token(
    airflow_db: Path, emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, emulator.connection(oauth=True))
    hook = ShoplazzaHook(retry=FAST_RETRY)
    hook.count_tasks()
    first = emulator.requests_to("api", "POST", r"/admin/oauth/token$")
    assert len(first) == 1 and b"refresh_token=shoplazza-emulator-refresh-0" in first[0].body
    emulator.expire_tokens()
    from airflow_provider_querytasks.common.transport.process_state import process_state

    process_state.reset()  # as a new process: only the shared store knows the rotated token
    ShoplazzaHook(retry=FAST_RETRY).count_tasks()
    second = emulator.requests_to("api", "POST", r"/admin/oauth/token$")
    # The first refresh rotated the token: the second refresh must use the new one.
    assert len(second) == 2 and b"shoplazza-emulator-refresh-0" not in second[1].body
    assert emulator.requests_to("api", "GET", r"/data/count$")[-1].status == 200


def test_expired_oauth_token_is_refreshed_once_mid_run(
    emulator: ShoplazzaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, emulator.connection(oauth=True))
    hook = ShoplazzaHook(retry=FAST_RETRY)
    hook.count_tasks()
    emulator.expire_tokens()
    assert hook.count_tasks() == 0
    assert len(emulator.requests_to("api", "POST", r"/admin/oauth/token$")) == 2


def test_download_streams_the_csv_without_the_shop_token(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    query_id = hook.create_task("purchase_product", *DAY)
    wait_complete(hook, query_id)
    record = hook.download_result(query_id, tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_bytes().splitlines()
    assert lines[0].startswith(b"event,") and len(lines) == 21
    assert record["rows"] == 20 and record["lines"] == 21
    assert "?" not in record["source"]  # the presigned query string is not kept
    storage = emulator.requests_to("storage", "GET")
    assert storage and all(r.header("Access-Token") is None for r in storage)
    assert emulator.access_token not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_gzip_result_is_decoded(emulator: ShoplazzaEmulator, hook: ShoplazzaHook, tmp_path: Path) -> None:
    emulator.gzip = True
    query_id = hook.create_task("purchase_product", *DAY)
    wait_complete(hook, query_id)
    record = hook.download_result(query_id, tmp_path / "out.csv")
    data = (tmp_path / "out.csv").read_bytes()
    assert not data.startswith(b"\x1f\x8b") and data.count(b"\n") == 21
    assert record["rows"] == 20
    assert gzip.compress(data)  # plain text, re-compressible


def test_expired_result_url_is_replaced_once(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook, tmp_path: Path
) -> None:
    query_id = hook.create_task("purchase_product", *DAY)
    wait_complete(hook, query_id)
    emulator.inject(
        action="status",
        site="storage",
        status=403,
        body=b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
    )
    record = hook.download_result(query_id, tmp_path / "out.csv")
    assert record["rows"] == 20
    assert len(emulator.requests_to("storage", "GET")) == 2


def test_truncated_download_leaves_nothing_behind(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook, tmp_path: Path
) -> None:
    query_id = hook.create_task("purchase_product", *DAY)
    wait_complete(hook, query_id)
    emulator.inject(action="truncate", site="storage", times=None)
    with pytest.raises(ServerError, match=r"download cut at \d+ of \d+ bytes"):
        hook.download_result(query_id, tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []


def answer_task_detail_with_errors(emulator: ShoplazzaEmulator) -> None:
    """The documented ``{"errors": ["no result"]}``, with a 200 (its HTTP status is undocumented)."""
    emulator.inject(
        action="status",
        site="api",
        method="GET",
        path=r"/data/task$",
        status=200,
        body={"errors": ["no result"]},
        times=None,
    )


def test_an_error_body_without_query_status_fails_at_once(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook
) -> None:
    query_id = hook.create_task("purchase_product", *DAY)
    answer_task_detail_with_errors(emulator)
    snapshot = hook.get_status(query_id)
    assert snapshot.state is QueryState.FAILED and snapshot.message == "no result"
    # A task body without errors still defaults to pending (query_status defaults to 0).
    emulator.clear()
    emulator.inject(
        action="status",
        site="api",
        method="GET",
        path=r"/data/task$",
        status=200,
        body={"query_id": query_id},
    )
    assert hook.get_status(query_id).state is QueryState.PENDING


def test_an_error_body_ends_the_wait_in_the_worker_and_the_trigger(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook
) -> None:
    query_id = hook.create_task("purchase_product", *DAY)
    answer_task_detail_with_errors(emulator)
    event = run_trigger(trigger_for(query_id))
    assert event["status"] == "failed" and event["message"].endswith(": no result")
    polled = len(emulator.requests_to("api", "GET", r"/data/task$"))
    with pytest.raises(RemoteQueryFailedError, match="no result"):
        ShoplazzaDataTaskOperator(
            task_id="export",
            event="pageview",
            begin_time=DAY[0],
            end_time=DAY[1],
            poll_interval=0.05,
            timeout=5,
        ).execute({})  # type: ignore[arg-type]
    # Failed at the first poll, not at the timeout (polls every 0.05 s until then).
    assert len(emulator.requests_to("api", "GET", r"/data/task$")) == polled + 1
