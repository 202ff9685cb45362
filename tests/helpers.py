"""Helpers shared by the platform test packages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from airflow_provider_querytasks.common.transport import RetryPolicy, close_shared_client_session
from airflow_provider_querytasks.testing import connection_env
from airflow_provider_querytasks.testing.server import EmulatorServer

#: Retries without waiting: the emulators answer at once.
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.2, jitter=0.0)

ServerT = TypeVar("ServerT", bound=EmulatorServer)


def use_connection(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> str:
    """Expose an emulator's connection dict as ``AIRFLOW_CONN_<ID>`` (as a user would)."""
    name, value = connection_env(conn)
    monkeypatch.setenv(name, value)
    return str(conn["conn_id"])


def serve(server: ServerT, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerT]:
    """Run an emulator for one test, its default connection exposed as ``AIRFLOW_CONN_*``."""
    server.start()
    use_connection(monkeypatch, server.connection())
    yield server
    server.stop()


def run_trigger(trigger: Any) -> dict[str, Any]:
    """Run a trigger to its first event and return the payload."""

    async def first() -> dict[str, Any]:
        try:
            async for event in trigger.run():
                return dict(event.payload)
        finally:
            await close_shared_client_session()
        raise AssertionError("no event")

    return asyncio.run(first())
