"""Query Service's limits on the emulator's PostgreSQL interface: the wire proxy in front of a
real PostgreSQL server, and the hook against it."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.hooks.adobe_query_service_sql import (
    AdobeQueryServiceSqlHook,
    SqlInterfaceError,
    SqlLimitError,
    SqlRowCapError,
)
from airflow_provider_querytasks.testing import pgwire
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.postgres import LocalPostgres

from .conftest import serve_sql

OVER = "SELECT i FROM generate_series(1, 200000) AS i LIMIT 200000"


# -- message parsing (no server) ---------------------------------------------------------------
def test_sql_is_searched_in_code_only() -> None:
    sql = "SELECT 'LIMIT 999999', \"limit 5\" /* LIMIT 7 */ FROM t -- LIMIT 8\n$x$ LIMIT 9 $x$ LIMIT 10"
    masked = pgwire.mask_sql(sql)
    assert len(masked) == len(sql) and "999999" not in masked and "LIMIT 10" in masked
    assert pgwire.over_limit(sql) is None
    assert pgwire.over_limit("select * from t limit 100001") == 100_001
    assert pgwire.over_limit("SELECT * FROM t LIMIT 100000") is None
    assert pgwire.over_limit('DECLARE "c" CURSOR FOR SELECT * FROM t LIMIT 200000') == 200_000
    assert pgwire.has_limit("SELECT 1 LIMIT ALL") and not pgwire.has_limit("SELECT 'limit'")


def test_limit_zero_becomes_limit_all_in_code_only() -> None:
    assert pgwire.lift_limit_zero("SELECT 'LIMIT 0' FROM t limit 0;") == "SELECT 'LIMIT 0' FROM t LIMIT ALL;"
    assert pgwire.lift_limit_zero("SELECT 1 LIMIT 10") == "SELECT 1 LIMIT 10"


def test_messages_are_split_on_their_framing() -> None:
    data = pgwire.message(b"D", b"\x00\x01\x00\x00\x00\x01x") + pgwire.message(b"C", b"SELECT 1\0")
    found, rest = pgwire.split_messages(data + b"Z\x00\x00")  # an incomplete header
    assert [kind for kind, _start, _end in found] == [b"D", b"C"] and rest == len(data)
    assert list(pgwire.iter_payloads(data))[1] == (b"C", b"SELECT 1\0")
    found, rest = pgwire.split_messages(data[:-1])  # an incomplete body
    assert len(found) == 1 and data[rest : rest + 1] == b"C"


def test_error_responses_round_trip() -> None:
    ((kind, payload),) = pgwire.iter_payloads(pgwire.error_response("53400", "too long", "why"))
    assert kind == b"E"
    assert pgwire.error_fields(payload) == {
        "S": "ERROR",
        "V": "ERROR",
        "C": "53400",
        "M": "too long",
        "D": "why",
    }


def test_parse_and_startup_payloads() -> None:
    payload = b"stmt\0SELECT $1\0" + struct.pack("!hI", 1, 23)
    assert pgwire.parse_parts(payload) == (b"stmt", "SELECT $1", struct.pack("!hI", 1, 23))
    startup = struct.pack("!I", pgwire.PROTOCOL_V3) + b"user\0u\0options\0-c a=b\0\0"
    changed = pgwire.startup_with_options(startup, "-c statement_timeout=2000")
    assert changed == struct.pack("!I", pgwire.PROTOCOL_V3) + (
        b"user\0u\0options\0-c a=b -c statement_timeout=2000\0\0"
    )


# -- the hook through the proxy ----------------------------------------------------------------
def test_tls_is_negotiated(emulator: AdobeQueryServiceEmulator) -> None:
    if not emulator.sql_tls:
        pytest.skip("asyncio streams start TLS from Python 3.11")
    hook = AdobeQueryServiceSqlHook()
    assert hook.connection_parameters()["sslmode"] == "require"
    connection = hook.get_conn()
    try:
        assert connection.info.ssl_in_use
        assert connection.info.ssl_attribute("protocol").startswith("TLS")
    finally:
        connection.close()


def test_a_limit_over_100000_is_53400_for_every_path(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    hook = AdobeQueryServiceSqlHook()
    for call in (
        lambda: hook.get_records(OVER),
        lambda: hook.export_rows(OVER, tmp_path / "over.csv"),  # DECLARE ... CURSOR FOR
        lambda: hook.export_rows(OVER, tmp_path / "over.csv", transfer="copy"),
    ):
        with pytest.raises(SqlLimitError, match=r"53400.*LIMIT 200000 exceeds.*ctas_parameters") as caught:
            call()
        assert caught.value.sqlstate == "53400"
    assert list(tmp_path.iterdir()) == []
    assert hook.get_records(
        "SELECT count(*) FROM (SELECT 1 FROM generate_series(1, 3) LIMIT 100000) AS t"
    ) == [(3,)]


def test_a_refused_statement_aborts_the_transaction_as_a_real_error(
    emulator: AdobeQueryServiceEmulator,
) -> None:
    import psycopg2

    connection = AdobeQueryServiceSqlHook().get_conn()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            with pytest.raises(psycopg2.Error) as caught:
                cursor.execute(OVER)
            assert caught.value.pgcode == "53400"
            with pytest.raises(psycopg2.Error) as aborted:
                cursor.execute("SELECT 2")
            assert aborted.value.pgcode == "25P02"  # in failed transaction
        connection.rollback()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 3")
            assert cursor.fetchone() == (3,)
    finally:
        connection.close()


def test_rows_without_limit_are_cut_at_the_cap(emulator: AdobeQueryServiceEmulator, tmp_path: Path) -> None:
    hook = AdobeQueryServiceSqlHook()
    over_cap = "SELECT i FROM generate_series(1, 50001) AS i"
    with pytest.raises(SqlRowCapError, match="LIMIT 0"):
        hook.get_records(over_cap)
    with pytest.raises(SqlRowCapError, match="LIMIT 0"):
        hook.export_rows(over_cap, tmp_path / "cut.csv")
    assert list(tmp_path.iterdir()) == []
    # LIMIT 0 lifts the cap (PostgreSQL gets LIMIT ALL); a LIMIT decides the count.
    assert len(hook.get_records(over_cap + " LIMIT 0")) == 50_001
    assert hook.export_rows(over_cap + " LIMIT 0", tmp_path / "all.csv")["rows"] == 50_001
    assert len(hook.get_records(over_cap + " LIMIT 60000")) == 50_001


def test_the_operator_sees_the_limits(emulator: AdobeQueryServiceEmulator) -> None:
    from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

    def run(sql: str) -> Any:
        operator = SQLExecuteQueryOperator(task_id="q", conn_id="adobe_query_service_sql_default", sql=sql)
        return operator.execute({})

    with pytest.raises(SqlLimitError, match="53400"):
        run(OVER)
    with pytest.raises(SqlRowCapError):
        run("SELECT i FROM generate_series(1, 50001) AS i")
    assert run("SELECT count(*) FROM generate_series(1, 50001) AS i") == [(50_001,)]


def test_a_statement_timeout_is_53400(emulator: AdobeQueryServiceEmulator) -> None:
    from .conftest import STATEMENT_TIMEOUT

    with pytest.raises(SqlLimitError, match=r"53400.*statement timeout") as caught:
        AdobeQueryServiceSqlHook().get_records(f"SELECT pg_sleep({STATEMENT_TIMEOUT + 1}) LIMIT 0")
    assert caught.value.sqlstate == "53400"


# -- a small cap, raw sessions ---------------------------------------------------------------------
@pytest.fixture
def small_cap(
    postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AdobeQueryServiceEmulator]:
    yield from serve_sql(AdobeQueryServiceEmulator(duration=0.3, sql_row_cap=7), postgres, monkeypatch)


def test_a_cursors_cap_counts_every_fetch(small_cap: AdobeQueryServiceEmulator) -> None:
    connection = AdobeQueryServiceSqlHook().get_conn()
    try:
        named = connection.cursor(name="capped")
        named.execute("SELECT i FROM generate_series(1, 20) AS i")
        fetched = [len(named.fetchmany(3)) for _ in range(4)]
        assert fetched == [3, 3, 1, 0]
        named.close()
        with connection.cursor() as cursor:
            # Several result sets in one Query: each is cut; the tag tells the cut count.
            cursor.execute("SELECT 1 FROM generate_series(1, 9); SELECT i FROM generate_series(1, 10) AS i")
            assert cursor.rowcount == 7 and len(cursor.fetchall()) == 7
            cursor.execute('DECLARE "Free" CURSOR FOR SELECT i FROM generate_series(1, 20) AS i LIMIT 0')
            cursor.execute('FETCH ALL FROM "Free"')
            assert len(cursor.fetchall()) == 20
    finally:
        connection.close()


def test_the_extended_protocol_is_refused_too(emulator: AdobeQueryServiceEmulator) -> None:
    """asyncpg sends Parse/Bind/Execute (psycopg2 only simple queries)."""
    asyncpg = pytest.importorskip("asyncpg")
    params = AdobeQueryServiceSqlHook().connection_parameters()

    async def session() -> tuple[str, int]:
        connection = await asyncpg.connect(
            host=params["host"],
            port=params["port"],
            user=params["user"],
            password=params["password"],
            database=params["dbname"],
            ssl="require" if emulator.sql_tls else False,
        )
        try:
            try:
                await connection.fetch("SELECT i FROM generate_series(1, $1::int) AS i LIMIT 200000", 5)
            except asyncpg.PostgresError as exc:
                code = str(exc.sqlstate)
            rows = await connection.fetch("SELECT i FROM generate_series(1, $1::int) AS i LIMIT 0", 5)
        finally:
            await connection.close()
        return code, len(rows)

    assert asyncio.run(session()) == ("53400", 5)


@pytest.fixture
def without_tls(
    postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AdobeQueryServiceEmulator]:
    yield from serve_sql(AdobeQueryServiceEmulator(duration=0.3, sql_tls=False), postgres, monkeypatch)


def test_without_tls_the_proxy_answers_n_and_the_connection_prefers(
    without_tls: AdobeQueryServiceEmulator,
) -> None:
    """What Python 3.10 gets (its asyncio streams cannot start TLS)."""
    hook = AdobeQueryServiceSqlHook()
    assert hook.connection_parameters()["sslmode"] == "prefer"
    connection = hook.get_conn()
    try:
        assert not connection.info.ssl_in_use
    finally:
        connection.close()


@pytest.fixture
def copy_refused(
    postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AdobeQueryServiceEmulator]:
    """The emulator as it comes: Adobe does not document COPY, so it refuses it."""
    yield from serve_sql(AdobeQueryServiceEmulator(duration=0.3), postgres, monkeypatch)


def test_copy_is_refused_unless_asked_for_and_auto_falls_back_to_the_cursor(
    copy_refused: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    hook = AdobeQueryServiceSqlHook()
    sql = "SELECT _id, page_views FROM web_events ORDER BY _id"
    with pytest.raises(SqlInterfaceError, match=r"refused COPY .*0A000.*use transfer='cursor' or 'auto'"):
        hook.export_rows(sql, tmp_path / "copy.csv", transfer="copy")
    assert list(tmp_path.iterdir()) == []
    by_auto = hook.export_rows(sql, tmp_path / "auto.csv", transfer="auto")
    by_cursor = hook.export_rows(sql, tmp_path / "cursor.csv")
    assert by_auto["transfer"] == "cursor" and by_auto["rows"] == 1000
    assert by_auto["sha256"] == by_cursor["sha256"]
