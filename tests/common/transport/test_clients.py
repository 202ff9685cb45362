"""Retries, the no-retry rule for submissions, token refresh and masking, through the fake platform."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.calls import ApiRequest
from airflow_provider_querytasks.common.api.errors import (
    AmbiguousSubmissionError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    QueryTaskError,
    RateLimitedError,
)
from airflow_provider_querytasks.common.transport.clients import (
    RetryPolicy,
    close_shared_client_session,
    token_cache,
)
from airflow_provider_querytasks.compat import redact

from ...helpers import FAST_RETRY, use_connection
from ..fake_platform import FakeEmulator, FakeHook


def test_429_with_retry_after_is_honoured(emulator: FakeEmulator, hook: FakeHook) -> None:
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
    assert gets[1].at - gets[0].at >= 0.12


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
    emulator: FakeEmulator, caplog: pytest.LogCaptureFixture
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
    assert gets[1].at - gets[0].at >= 0.12
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


def test_bad_credentials_fail_clearly(emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, {**emulator.connection(), "password": "wrong"})
    with pytest.raises(AuthenticationError, match="invalid_client"):
        FakeHook(retry=FAST_RETRY).create_query("select 1")


def test_credentials_are_never_sent_to_another_host(emulator: FakeEmulator, hook: FakeHook) -> None:
    other = emulator.urls["storage"] + "/anything"
    with pytest.raises(QueryTaskError, match="Refusing to send"):
        hook.call(ApiRequest("GET", other, "getQuery"))
    assert emulator.requests_to("storage") == []


def test_plain_http_to_a_remote_host_is_refused(
    emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = emulator.connection()
    conn["extra"]["endpoint"] = "http://api.example.com"
    use_connection(monkeypatch, conn)
    with pytest.raises(InvalidInputError, match="endpoint.*https is required"):
        FakeHook().create_query("select 1")
    assert emulator.requests == []


async def test_many_waiters_share_one_token_request(emulator: FakeEmulator) -> None:
    query_id = FakeHook(retry=FAST_RETRY).create_query("select 1")
    token_cache.clear()
    emulator.clear()
    hooks = [FakeHook(retry=FAST_RETRY) for _ in range(30)]
    try:
        snapshots = await asyncio.gather(*(h.aget_status(query_id) for h in hooks))
    finally:
        await close_shared_client_session()
    assert {s.query_id for s in snapshots} == {query_id}
    assert len(emulator.requests_to("token")) == 1


def test_many_threads_share_one_token_request(emulator: FakeEmulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    query_id = FakeHook(retry=FAST_RETRY).create_query("select 1")
    token_cache.clear()
    emulator.clear()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: FakeHook(retry=FAST_RETRY).get_status(query_id), range(16)))
    assert len(emulator.requests_to("token")) == 1


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


def test_triggers_of_a_process_share_a_connection_read(
    emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_querytasks.hooks import base as hooks_module

    reads: list[str] = []
    original = hooks_module.get_async_connection

    async def counted(conn_id: str) -> Any:
        reads.append(conn_id)
        return await original(conn_id)

    monkeypatch.setattr(hooks_module, "get_async_connection", counted)

    async def settings_of_fresh_hooks(count: int) -> list[Any]:
        return [await FakeHook().aget_settings() for _ in range(count)]

    first = asyncio.run(settings_of_fresh_hooks(3))
    assert reads == ["fake_default"] and first[0] is first[2]
    # A changed AIRFLOW_CONN_* value is read again at once; so is any connection after the TTL.
    conn = emulator.connection()
    conn["extra"] = {**conn.get("extra", {}), "note": "rotated"}
    use_connection(monkeypatch, conn)
    asyncio.run(settings_of_fresh_hooks(1))
    monkeypatch.setattr(hooks_module, "SHARED_SETTINGS_TTL", 0.0)
    asyncio.run(settings_of_fresh_hooks(1))
    assert reads == ["fake_default"] * 3


def test_triggers_starting_together_read_their_connection_once(
    emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A triggerer taking up thousands of waits starts them together: without one read in flight
    # per connection, each wait sent its own round trip to the supervisor (benchmark 7).
    from airflow_provider_querytasks.hooks import base as hooks_module

    reads: list[str] = []
    original = hooks_module.get_async_connection

    async def slow_read(conn_id: str) -> Any:
        reads.append(conn_id)
        await asyncio.sleep(0.05)  # a round trip: the other waits arrive meanwhile
        return await original(conn_id)

    monkeypatch.setattr(hooks_module, "get_async_connection", slow_read)

    async def together(count: int) -> list[Any]:
        return await asyncio.gather(*(FakeHook().aget_settings() for _ in range(count)))

    settings = asyncio.run(together(20))
    assert reads == ["fake_default"]
    assert all(s is settings[0] for s in settings)


def test_hooks_sharing_a_connection_read_share_one_async_client(
    emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def clients(*hooks: FakeHook) -> list[Any]:
        return [await hook.aclient() for hook in hooks]

    first, second, patient = asyncio.run(
        clients(FakeHook(), FakeHook(), FakeHook(retry=RetryPolicy(attempts=9)))
    )
    assert first is second
    assert patient is not first and patient.policy.retry.attempts == 9
    # New settings (a changed connection) build a new client, which later hooks share.
    conn = emulator.connection()
    conn["extra"] = {**conn.get("extra", {}), "note": "rotated"}
    use_connection(monkeypatch, conn)
    rotated, after = asyncio.run(clients(FakeHook(), FakeHook()))
    assert rotated is not first and rotated is after
