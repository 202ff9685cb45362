from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_querytasks.common.transport import RetryPolicy
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.2, jitter=0.0)


def use_connection(monkeypatch: pytest.MonkeyPatch, conn: dict[str, object]) -> str:
    conn = dict(conn)
    conn_id = str(conn.pop("conn_id"))
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShoplazzaEmulator]:
    server = ShoplazzaEmulator(duration=0.3, rows=20)
    server.start()
    use_connection(monkeypatch, server.connection())
    yield server
    server.stop()


@pytest.fixture
def hook(emulator: ShoplazzaEmulator) -> ShoplazzaHook:
    return ShoplazzaHook(retry=FAST_RETRY)
