from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from ..helpers import FAST_RETRY, use_connection


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
