from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_querytasks.common.transport import RetryPolicy

from .fake_platform import FakeEmulator, FakeHook

FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.2, jitter=0.0)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEmulator]:
    server = FakeEmulator(duration=0.3).start()
    conn = server.connection()
    conn_id = conn.pop("conn_id")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    yield server
    server.stop()


@pytest.fixture
def hook(emulator: FakeEmulator) -> FakeHook:
    return FakeHook(retry=FAST_RETRY)
