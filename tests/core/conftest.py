from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..helpers import FAST_RETRY, use_connection
from .fake_platform import FakeEmulator, FakeHook


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEmulator]:
    server = FakeEmulator(duration=0.3).start()
    use_connection(monkeypatch, server.connection())
    yield server
    server.stop()


@pytest.fixture
def hook(emulator: FakeEmulator) -> FakeHook:
    return FakeHook(retry=FAST_RETRY)
