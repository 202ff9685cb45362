"""The emulator's PostgreSQL server on a machine without PostgreSQL: the pgserver wheel's binaries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from airflow_provider_querytasks.testing.postgres import LocalPostgres, find_bindir


def test_the_pgserver_wheels_binaries_run_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.origin:
        pytest.skip("the pgserver wheel is not installed (the test extra brings it)")
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    monkeypatch.setenv("QUERYTASKS_PG_BINDIR", str(bindir))
    assert find_bindir() == bindir
    with LocalPostgres(statement_timeout=5) as postgres:
        postgres.add_login_role("ORG1@AdobeOrg", "a-token-as-password")
        postgres.add_database("prod:all", "ORG1@AdobeOrg")
        import psycopg2

        connection = psycopg2.connect(
            host=postgres.host,
            port=postgres.port,
            user="ORG1@AdobeOrg",
            password="a-token-as-password",
            dbname="prod:all",
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('server_version_num')::int, count(*) FROM web_events")
                version, rows = cursor.fetchone()
        finally:
            connection.close()
    assert version >= 160000 and rows == 1000
