from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.postgres import LocalPostgres

from ..helpers import new_adobe_emulator, use_connection

#: The emulated server's statement timeout in these tests (Query Service's is 600 s).
STATEMENT_TIMEOUT = 2.0


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL server for the package (initdb + pg_ctl, about a second)."""
    with LocalPostgres(statement_timeout=STATEMENT_TIMEOUT) as server:
        yield server


@pytest.fixture
def emulator(postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdobeQueryServiceEmulator]:
    """The Adobe emulator with its PostgreSQL interface, both connections exposed."""
    server = new_adobe_emulator()
    server.start()
    server.attach_postgres(postgres)
    use_connection(monkeypatch, server.connection())
    use_connection(monkeypatch, server.sql_connection())
    yield server
    server.stop()
