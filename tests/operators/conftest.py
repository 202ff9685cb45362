"""The fake platform (``tests/common/fake_platform.py``) by the name this package's tests use."""

from __future__ import annotations

import pytest

from ..common.fake_platform import FakeEmulator


@pytest.fixture
def emulator(fake_emulator: FakeEmulator) -> FakeEmulator:
    """The fake platform's emulator (``tests/conftest.py``), serving for this test."""
    return fake_emulator
