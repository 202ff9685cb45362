"""Data Kiosk hook against the emulator: connection, tokens, statuses, listing, retries, cancel, documents."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from airflow_provider_querytasks.common.api.errors import (
    AmbiguousSubmissionError,
    ApiError,
    InvalidInputError,
    NotFoundError,
)
from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator

from ..helpers import fast_forward_rate_limits
from .conftest import QUERY


def test_bad_connection_fields_name_the_field(
    emulator: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ..helpers import use_connection

    for field, value, name in [("region", "us", "region"), ("endpoint", "http://example.com", "endpoint")]:
        conn = emulator.connection("bad")
        conn["extra"][field] = value
        use_connection(monkeypatch, conn)
        with pytest.raises(InvalidInputError, match=f"'{name}'"):
            DataKioskHook("bad").get_query("1")
    assert emulator.requests == []


# -- hook ------------------------------------------------------------------------------------
def test_lwa_token_then_the_access_token_header(hook: DataKioskHook, emulator: DataKioskEmulator) -> None:
    query_id = hook.create_query(QUERY)
    token_calls = emulator.requests_to("lwa", "POST", "/auth/o2/token")
    assert len(token_calls) == 1 and b"grant_type=refresh_token" in token_calls[0].body
    created = emulator.requests_to("api", "POST", r"/queries$")[0]
    assert (
        created.header(
            "x-amz-access-token",
        )
        in emulator.tokens
    )
    assert "Language=Python/3." in (created.header("User-Agent") or "")
    assert json.loads(created.body) == {"query": QUERY}
    assert hook.get_query(query_id)["processingStatus"] == "IN_QUEUE"


def test_expired_token_403_is_refreshed_once(hook: DataKioskHook, emulator: DataKioskEmulator) -> None:
    query_id = hook.create_query(QUERY)
    emulator.expire_tokens()
    assert hook.get_query(query_id)["queryId"] == query_id
    assert len(emulator.requests_to("lwa", "POST")) == 2


def test_statuses_advance_to_done(hook: DataKioskHook, emulator: DataKioskEmulator) -> None:
    emulator.duration = 30.0
    query_id = hook.create_query(QUERY)
    assert not hook.get_status(query_id).state.terminal
    emulator.clock.advance(15)
    assert hook.get_status(query_id).remote_status == "IN_PROGRESS"
    emulator.clock.advance(15)
    done = hook.get_status(query_id)
    assert done.state is QueryState.SUCCEEDED and done.raw["dataDocumentId"]


def test_iter_queries_follows_next_token_with_the_same_filters(
    hook: DataKioskHook, emulator: DataKioskEmulator
) -> None:
    emulator.duration = 60.0
    ids = {hook.create_query(QUERY) for _ in range(5)}
    found = {q["queryId"] for q in hook.iter_queries(["IN_QUEUE"], page_size=2)}
    assert found == ids
    calls = emulator.requests_to("api", "GET", r"/queries$")
    assert len(calls) == 3 and all(c.param("processingStatuses") == "IN_QUEUE" for c in calls)
    assert all(c.param("pageSize") == "2" for c in calls)
    with pytest.raises(InvalidInputError, match="page_size"):
        list(hook.iter_queries(page_size=101))
    with pytest.raises(InvalidInputError, match="processing_statuses"):
        list(hook.iter_queries(["RUNNING"]))


def test_create_is_not_resent_after_a_server_error(hook: DataKioskHook, emulator: DataKioskEmulator) -> None:
    emulator.inject(
        action="status", site="api", method="POST", path=r"/queries$", status=503, body="overloaded"
    )
    with pytest.raises(AmbiguousSubmissionError):
        hook.create_query(QUERY)
    assert len(emulator.requests_to("api", "POST", r"/queries$")) == 1


def test_create_429_is_retried(
    hook: DataKioskHook, emulator: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The retry waits for createQuery's plan (1 a minute) to refill: on a clock that skips it.
    clock = fast_forward_rate_limits(monkeypatch)
    emulator.inject(
        action="status", site="api", method="POST", path=r"/queries$", status=429, body={"errors": []}
    )
    hook.create_query(QUERY)
    assert len(emulator.requests_to("api", "POST", r"/queries$")) == 2 and len(emulator.queries) == 1
    assert clock.skipped >= 30  # the retry waited for the plan, as on the real clock


def test_cancel_a_running_query_and_a_finished_one(hook: DataKioskHook, emulator: DataKioskEmulator) -> None:
    emulator.duration = 30.0
    query_id = hook.create_query(QUERY)
    hook.cancel_query(query_id)
    assert hook.get_status(query_id).state is QueryState.CANCELLED
    emulator.duration = 0.0
    done = hook.create_query(QUERY)
    hook.cancel_query(done)  # already DONE: nothing to cancel, not an error
    assert hook.get_status(done).state is QueryState.SUCCEEDED


def cancel(hook: DataKioskHook, query_id: str, mode: str) -> None:
    if mode == "sync":
        hook.cancel_query(query_id)
        return

    async def acancel() -> None:
        try:
            await hook.acancel_query(query_id)
        finally:
            await close_shared_client_session()

    asyncio.run(acancel())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_of_an_unknown_query_is_an_error_not_already_finished(hook: DataKioskHook, mode: str) -> None:
    with pytest.raises(NotFoundError, match="cancelQuery failed with HTTP 404"):
        cancel(hook, "no-such-query", mode)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_refused_while_the_query_still_runs_is_an_error(
    hook: DataKioskHook, emulator: DataKioskEmulator, mode: str
) -> None:
    emulator.duration = 30.0
    query_id = hook.create_query(QUERY)
    emulator.inject(
        action="status",
        site="api",
        method="DELETE",
        path=r"/queries/",
        status=400,
        body={"errors": [{"code": "InvalidInput", "message": "Invalid input"}]},
    )
    with pytest.raises(ApiError, match="HTTP 400: .*Invalid input"):
        cancel(hook, query_id, mode)
    assert not hook.get_status(query_id).state.terminal


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_of_a_finished_query_is_nothing_to_cancel(
    hook: DataKioskHook, emulator: DataKioskEmulator, mode: str
) -> None:
    emulator.duration = 0.0
    query_id = hook.create_query(QUERY)
    emulator.clear()
    cancel(hook, query_id, mode)  # refused with a 400: the query's status says it had finished
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in emulator.requests_to("api")] == [
        ("DELETE", query_id),
        ("GET", query_id),
    ]
    assert hook.get_status(query_id).state is QueryState.SUCCEEDED


def test_expired_document_url_is_replaced(
    hook: DataKioskHook, emulator: DataKioskEmulator, tmp_path: Path
) -> None:
    emulator.duration = 0.0
    document_id = hook.get_query(hook.create_query(QUERY))["dataDocumentId"]
    url = hook.get_document(document_id)
    emulator.storage.expire_all()
    emulator.url_ttl = 300
    record = hook.download_document(document_id, tmp_path / "page.jsonl")
    assert record["rows"] == 5 and url  # the first URL was refused, a fresh one used
    assert [
        json.loads(line)["record"] for line in (tmp_path / "page.jsonl").read_text().splitlines()
    ] == list(range(5))
    assert emulator.storage.leaks == []
    assert all(r.header("x-amz-access-token") is None for r in emulator.requests_to("storage"))


def test_expired_url_during_download_is_fetched_again(
    hook: DataKioskHook, emulator: DataKioskEmulator, tmp_path: Path
) -> None:
    emulator.duration = 0.0
    document_id = hook.get_query(hook.create_query(QUERY))["dataDocumentId"]
    emulator.inject(
        action="status", site="storage", status=403, body=b"<Error><Code>AccessDenied</Code></Error>"
    )
    hook.download_document(document_id, tmp_path / "page.jsonl")
    assert len(emulator.requests_to("api", "GET", r"/documents/")) == 2


def test_gzip_documents_are_decoded(hook: DataKioskHook, emulator: DataKioskEmulator, tmp_path: Path) -> None:
    emulator.duration, emulator.gzip = 0.0, True
    document_id = hook.get_query(hook.create_query(QUERY))["dataDocumentId"]
    record = hook.download_document(document_id, tmp_path / "page.jsonl")
    assert record["rows"] == 5 and (tmp_path / "page.jsonl").read_bytes().startswith(b"{")
