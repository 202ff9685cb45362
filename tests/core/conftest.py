from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..common.fake_platform import FakeEmulator, FakeHook
from ..helpers import FAST_RETRY, serve


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEmulator]:
    yield from serve(FakeEmulator(duration=0.3), monkeypatch)


@pytest.fixture
def hook(emulator: FakeEmulator) -> FakeHook:
    return FakeHook(retry=FAST_RETRY)
