"""Test-wide setup: a throwaway AIRFLOW_HOME and metadata DB, and clean process-wide caches."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Airflow reads its home at import time: set it before anything imports airflow.
_HOME = Path(os.environ.get("QUERYTASKS_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="querytasks-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault(
    "AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parent.parent / "example_dags")
)
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME / 'airflow.db'}")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


def _fernet_key(home: Path) -> str:
    """The home's Fernet key (kept beside its DB): Variables are encrypted as in production."""
    path = home / "fernet.key"
    if not path.exists():
        from cryptography.fernet import Fernet

        path.write_text(Fernet.generate_key().decode())
    return path.read_text().strip()


os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", _fernet_key(_HOME))

# After the environment above: the helpers import Airflow.
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator  # noqa: E402
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator  # noqa: E402
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator  # noqa: E402

from .helpers import (  # noqa: E402
    new_adobe_emulator,
    new_data_kiosk_emulator,
    new_fake_emulator,
    new_shoplazza_emulator,
    serve,
)

if TYPE_CHECKING:
    from .common.fake_platform import FakeEmulator


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated metadata DB (needed by ``dag.test()``); migrated once per test session."""
    marker = _HOME / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
        )
        marker.touch()
    return _HOME


# Each platform package names its own ``emulator``; other packages ask for these by name.
# When the test ends, its exchanges are checked against the platform's published spec
# (tests/contracts), unless the test is marked ``contract_exempt`` (it sends what the spec refuses
# on purpose, e.g. a call without a required header).
@pytest.fixture
def shoplazza_emulator(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[ShoplazzaEmulator]:
    yield from serve(new_shoplazza_emulator(), monkeypatch, contract=_contract(request))


@pytest.fixture
def data_kiosk_emulator(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[DataKioskEmulator]:
    yield from serve(new_data_kiosk_emulator(), monkeypatch, contract=_contract(request))


@pytest.fixture
def adobe_emulator(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[AdobeQueryServiceEmulator]:
    yield from serve(new_adobe_emulator(), monkeypatch, contract=_contract(request))


def _contract(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("contract_exempt") is None


@pytest.fixture
def fake_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEmulator]:
    """The fake platform the shared machinery is tested against (``tests/common/fake_platform.py``)."""
    yield from serve(new_fake_emulator(), monkeypatch)


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """Tokens, rate-limit buckets, shared reads and clients are process-wide: start every test
    without them."""
    from airflow_provider_querytasks.common.transport.process_state import process_state

    process_state.reset()
    yield
    process_state.reset()
