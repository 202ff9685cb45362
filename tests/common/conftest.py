"""The fake platform (``tests/common/fake_platform.py``) by the names this package's tests use."""

from __future__ import annotations

from .fake_platform import emulator, hook  # noqa: F401  (pytest fixtures)
