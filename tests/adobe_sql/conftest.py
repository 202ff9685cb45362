from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.postgres import LocalPostgres

from ..helpers import new_adobe_emulator, serve, use_connection

#: The emulated server's statement timeout in these tests (Query Service's is 600 s).
STATEMENT_TIMEOUT = 2.0


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL server for the package (initdb + pg_ctl, about a second)."""
    with LocalPostgres(statement_timeout=STATEMENT_TIMEOUT) as server:
        yield server


def serve_sql(
    server: AdobeQueryServiceEmulator, postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AdobeQueryServiceEmulator]:
    """:func:`~tests.helpers.serve` ``server`` with its PostgreSQL interface on ``postgres``, the
    SQL connection exposed too."""
    for running in serve(server, monkeypatch):
        running.attach_postgres(postgres)
        use_connection(monkeypatch, running.sql_connection())
        yield running


@pytest.fixture
def emulator(postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdobeQueryServiceEmulator]:
    """The Adobe emulator with its PostgreSQL interface, both connections exposed. It takes
    ``COPY ... TO STDOUT`` (``sql_copy``), so that the copy path can be tested; the emulator's
    default refuses it (``test_wire.py`` checks that)."""
    yield from serve_sql(new_adobe_emulator(sql_copy=True), postgres, monkeypatch)
