"""Helpers shared by the platform test packages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_querytasks.common.transport import RetryPolicy, close_shared_client_session
from airflow_provider_querytasks.testing import connection_env

#: Retries without waiting: the emulators answer at once.
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.2, jitter=0.0)


def use_connection(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> str:
    """Expose an emulator's connection dict as ``AIRFLOW_CONN_<ID>`` (as a user would)."""
    name, value = connection_env(conn)
    monkeypatch.setenv(name, value)
    return str(conn["conn_id"])


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
