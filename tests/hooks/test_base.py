"""The shared hook (hooks/base.py): the connection read that a process's triggers share, and the
async client that hooks sharing a read share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import AuthenticationError
from airflow_provider_querytasks.common.transport.clients import RetryPolicy
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator

from ..common.fake_platform import FakeEmulator, FakeHook
from ..helpers import FAST_RETRY, use_connection, with_secret


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


def test_a_refused_credential_drops_the_connection_read_shared_by_triggers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
    from airflow_provider_querytasks.common.transport.process_state import process_state

    emulator = AdobeQueryServiceEmulator()
    emulator.start()
    try:
        use_connection(monkeypatch, with_secret(emulator.connection("creds"), "mistyped-secret"))

        async def poll() -> None:
            try:
                await AdobeQueryServiceHook("creds", retry=FAST_RETRY).aget_status("q-1")
            finally:
                await close_shared_client_session()

        with pytest.raises(AuthenticationError, match="invalid_client"):
            asyncio.run(poll())
    finally:
        emulator.stop()
    # The next trigger on this connection reads it again (it may have been fixed meanwhile)
    # instead of reusing the refused read for up to SHARED_SETTINGS_TTL.
    assert (AdobeQueryServiceHook, "creds") not in process_state.shared_settings
    assert not [key for key in process_state.shared_async_clients if key[1] == "creds"]
