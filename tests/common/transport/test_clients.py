"""The API clients (common/transport/clients.py), through the fake platform: retries, the no-retry
rule for submissions, token refresh on a 401, the credentials' host, masking."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest
import tenacity

from airflow_provider_querytasks.common.api.calls import ApiRequest
from airflow_provider_querytasks.common.api.errors import (
    AmbiguousSubmissionError,
    NotFoundError,
    QueryTaskError,
    RateLimitedError,
)
from airflow_provider_querytasks.common.transport import clients
from airflow_provider_querytasks.common.transport.clients import (
    RetryPolicy,
    close_shared_client_session,
)
from airflow_provider_querytasks.compat import redact

from ...helpers import FAST_RETRY
from ..fake_platform import FakeEmulator, FakeHook


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between retries, recorded instead of slept: both clients' tenacity loops (as
    ``clients`` reads them) get a ``sleep`` that only notes what it was asked for."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def async_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(clients, "Retrying", functools.partial(tenacity.Retrying, sleep=sleep))
    monkeypatch.setattr(
        clients, "AsyncRetrying", functools.partial(tenacity.AsyncRetrying, sleep=async_sleep)
    )
    return sleeps


def test_429_with_retry_after_is_honoured(
    emulator: FakeEmulator, hook: FakeHook, retry_sleeps: list[float]
) -> None:
    query_id = hook.create_query("select 1")
    emulator.inject(
        action="status",
        site="api",
        method="GET",
        path="/queries/",
        times=2,
        status=429,
        body={"message": "slow down"},
        headers={"Retry-After": "0.15"},
    )
    snapshot = hook.get_status(query_id)
    assert snapshot.query_id == query_id
    gets = emulator.requests_to("api", "GET", f"/queries/{query_id}$")
    assert [r.status for r in gets] == [429, 429, 200]
    # Retry-After (0.15 s) was waited, not the 0.01 s backoff.
    assert retry_sleeps == [pytest.approx(0.15)] * 2


def test_429_without_retry_after_backs_off_and_succeeds(emulator: FakeEmulator, hook: FakeHook) -> None:
    query_id = hook.create_query("select 1")
    emulator.inject(action="status", site="api", method="GET", times=1, status=429, body={"message": "x"})
    assert hook.get_status(query_id).query_id == query_id


def test_429_on_submission_is_retried_once_created(emulator: FakeEmulator, hook: FakeHook) -> None:
    emulator.inject(action="status", site="api", method="POST", times=1, status=429, body={"message": "x"})
    hook.create_query("select 1")
    assert len(emulator.queries) == 1
    assert [r.status for r in emulator.requests_to("api", "POST")] == [429, 201]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_on_submission_is_never_retried(emulator: FakeEmulator, hook: FakeHook, status: int) -> None:
    emulator.inject(action="status", site="api", method="POST", times=1, status=status, body={"message": "x"})
    with pytest.raises(AmbiguousSubmissionError, match="not retried"):
        hook.create_query("select 1")
    assert len(emulator.requests_to("api", "POST")) == 1


def test_dropped_connection_on_submission_is_never_retried(emulator: FakeEmulator, hook: FakeHook) -> None:
    emulator.inject(action="drop", site="api", method="POST", times=1)
    with pytest.raises(AmbiguousSubmissionError):
        hook.create_query("select 1")
    assert len(emulator.requests_to("api", "POST")) == 1


@pytest.mark.parametrize("action", ["status", "drop"])
def test_idempotent_calls_are_retried_after_5xx_and_drops(
    emulator: FakeEmulator, hook: FakeHook, action: str
) -> None:
    query_id = hook.create_query("select 1")
    emulator.inject(action=action, site="api", method="GET", times=2, status=503, body={"message": "x"})
    assert hook.get_status(query_id).query_id == query_id
    assert len(emulator.requests_to("api", "GET", f"/queries/{query_id}$")) == 3


def test_read_timeout_is_retried_for_idempotent_calls(emulator: FakeEmulator) -> None:
    hook = FakeHook(retry=FAST_RETRY, timeout=(2.0, 0.3))
    query_id = hook.create_query("select 1")
    emulator.inject(action="delay", site="api", method="GET", times=1, seconds=1.0)
    assert hook.get_status(query_id).query_id == query_id


def test_retries_stop_at_the_cap(emulator: FakeEmulator) -> None:
    hook = FakeHook(retry=RetryPolicy(attempts=3, initial=0.01, maximum=0.05, jitter=0))
    query_id = hook.create_query("select 1")
    emulator.inject(action="status", site="api", method="GET", times=None, status=429, body={"message": "x"})
    with pytest.raises(RateLimitedError):
        hook.get_status(query_id)
    assert len(emulator.requests_to("api", "GET", f"/queries/{query_id}$")) == 3


def test_async_retries_count_the_first_attempt_and_honour_retry_after(
    emulator: FakeEmulator, caplog: pytest.LogCaptureFixture, retry_sleeps: list[float]
) -> None:
    # The first attempt runs outside tenacity: its failure must still count, wait and log.
    hook = FakeHook(retry=RetryPolicy(attempts=3, initial=0.01, maximum=1.0, jitter=0))
    query_id = hook.create_query("select 1")
    emulator.inject(
        action="status",
        site="api",
        method="GET",
        times=None,
        status=429,
        body={"message": "x"},
        headers={"Retry-After": "0.15"},
    )

    async def poll() -> None:
        try:
            await hook.aget_status(query_id)
        finally:
            await close_shared_client_session()

    with caplog.at_level(logging.WARNING), pytest.raises(RateLimitedError):
        asyncio.run(poll())
    gets = emulator.requests_to("api", "GET", f"/queries/{query_id}$")
    assert [r.status for r in gets] == [429, 429, 429]
    assert retry_sleeps == [pytest.approx(0.15)] * 2  # Retry-After, not the 0.01 s backoff
    retries = [m.split("; ")[-1] for m in caplog.messages if "HTTP 429" in m]
    assert retries == ["retry 1/2 in 0.1 s", "retry 2/2 in 0.1 s"]


def test_client_errors_are_not_retried_and_carry_the_platform_text(
    emulator: FakeEmulator, hook: FakeHook
) -> None:
    with pytest.raises(NotFoundError, match="no such query") as info:
        hook.get_status("missing")
    assert info.value.status == 404
    assert len(emulator.requests_to("api", "GET")) == 1


def test_expired_token_is_refreshed_once(emulator: FakeEmulator, hook: FakeHook) -> None:
    query_id = hook.create_query("select 1")
    emulator.expire_tokens()
    assert hook.get_status(query_id).query_id == query_id
    assert len(emulator.requests_to("token")) == 2


def test_credentials_are_never_sent_to_another_host(emulator: FakeEmulator, hook: FakeHook) -> None:
    other = emulator.urls["storage"] + "/anything"
    with pytest.raises(QueryTaskError, match="Refusing to send"):
        hook.call(ApiRequest("GET", other, "getQuery"))
    assert emulator.requests_to("storage") == []


def test_secrets_are_masked_and_never_logged(
    emulator: FakeEmulator, hook: FakeHook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    query_id = hook.create_query("select 1")
    emulator.inject(action="status", site="api", method="GET", times=1, status=429, body={"message": "x"})
    hook.get_status(query_id)
    token = next(iter(emulator.tokens))
    assert "s3cr3t-client-secret" not in caplog.text
    assert token not in caplog.text
    # Registered with Airflow's masker as soon as read: any log line would show *** instead.
    assert redact(f"secret s3cr3t-client-secret token {token}") == "secret *** token ***"
