"""The SQL hook against a real PostgreSQL behind the Adobe emulator's /connection_parameters."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import AuthenticationError, InvalidInputError
from airflow_provider_querytasks.hooks import adobe_query_service_sql as sql_module
from airflow_provider_querytasks.hooks.adobe_query_service_sql import (
    AdobeQueryServiceSqlHook,
    SqlAuthenticationError,
    SqlConnectionLostError,
    SqlLimitError,
    SqlRowCapError,
)
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.postgres import LocalPostgres

from ..helpers import use_connection


def admin_rows(postgres: LocalPostgres, sql: str) -> list[tuple[Any, ...]]:
    """Rows as the server's admin sees them (not through the hook)."""
    with postgres.admin("prod:all") as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def token_calls(emulator: AdobeQueryServiceEmulator) -> int:
    return len(emulator.requests_to("ims", "POST", r"/ims/token/v3$"))


def test_records_come_from_the_sandbox_database(
    emulator: AdobeQueryServiceEmulator, postgres: LocalPostgres
) -> None:
    hook = AdobeQueryServiceSqlHook()
    expected = admin_rows(postgres, "SELECT count(*), count(DISTINCT ecid) FROM web_events")
    assert hook.get_records("SELECT count(*), count(DISTINCT ecid) FROM web_events") == expected
    assert hook.get_first("SELECT current_database(), current_user") == ("prod:all", emulator.org_id)
    (answer,) = emulator.requests_to("api", "GET", r"/connection_parameters$")[:1]
    assert answer.header("x-sandbox-name") == "prod"


def test_the_database_must_be_in_the_connections_sandbox(emulator: AdobeQueryServiceEmulator) -> None:
    with pytest.raises(InvalidInputError, match="schema"):
        AdobeQueryServiceSqlHook(schema="dev:all").get_conn()


def test_csv_export_is_the_servers_text_streamed_atomically(
    emulator: AdobeQueryServiceEmulator, postgres: LocalPostgres, tmp_path: Path
) -> None:
    hook = AdobeQueryServiceSqlHook(fetch_size=7)  # many FETCH round trips
    record = hook.export_rows("SELECT * FROM web_events ORDER BY _id", f"{tmp_path}/out/", filename="events")
    path = Path(record["uri"])
    assert path == tmp_path / "out" / "events.csv"
    expected = admin_rows(
        postgres, 'SELECT _id, "timestamp"::text, commerce_order_total::text FROM web_events ORDER BY _id'
    )
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert record["rows"] == len(rows) == len(expected) == 1000
    assert [(r["_id"], r["timestamp"], r["commerce_order_total"] or None) for r in rows] == expected
    data = path.read_bytes()
    assert record["bytes"] == len(data) and record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["lines"] == 1001
    assert [p.name for p in path.parent.iterdir()] == ["events.csv"]  # no temporary file left
    assert record["columns"][0] == "_id" and record["format"] == "csv"


def test_jsonl_export_keeps_numbers_and_json(
    emulator: AdobeQueryServiceEmulator, postgres: LocalPostgres, tmp_path: Path
) -> None:
    hook = AdobeQueryServiceSqlHook()
    record = hook.export_rows(
        "SELECT _id, page_views, commerce_order_total, identity_map FROM web_events "
        "WHERE commerce_order_total IS NOT NULL ORDER BY _id LIMIT %(n)s",
        tmp_path / "orders.jsonl",
        file_format="jsonl",
        parameters={"n": 5},
    )
    lines = [json.loads(line) for line in Path(record["uri"]).read_text().splitlines()]
    expected = admin_rows(
        postgres,
        "SELECT _id, page_views, commerce_order_total::text, identity_map::text FROM web_events "
        "WHERE commerce_order_total IS NOT NULL ORDER BY _id LIMIT 5",
    )
    assert [
        (line["_id"], line["page_views"], f"{line['commerce_order_total']:.2f}", line["identity_map"])
        for line in lines
    ] == [(e[0], e[1], e[2], json.loads(e[3])) for e in expected]


def test_bad_export_input_fails_before_any_call(emulator: AdobeQueryServiceEmulator, tmp_path: Path) -> None:
    hook = AdobeQueryServiceSqlHook()
    with pytest.raises(InvalidInputError, match="file_format.*csv, jsonl, parquet"):
        hook.export_rows("SELECT 1", tmp_path / "x", file_format="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="fetch_size"):
        AdobeQueryServiceSqlHook(fetch_size=0)
    with pytest.raises(InvalidInputError, match="'copy' writes CSV only"):
        hook.export_rows("SELECT 1", tmp_path / "x", file_format="parquet", transfer="copy")
    assert emulator.requests_to("api") == [] and emulator.requests_to("ims") == []


def after_each_batch(
    monkeypatch: pytest.MonkeyPatch, encoder_name: str, act: Callable[[list[tuple[Any, ...]]], object]
) -> None:
    """Run ``act(batch)`` each time the hook's encoder ``encoder_name`` has written a batch of rows."""
    encoder = getattr(sql_module, encoder_name)

    def acting_encoder(*args: Any) -> Any:
        encode = encoder(*args)

        def wrapped(batch: list[tuple[Any, ...]]) -> None:
            encode(batch)
            if batch:
                act(batch)

        return wrapped

    monkeypatch.setattr(sql_module, encoder_name, acting_encoder)


def expire_tokens_after_the_first_batch(
    monkeypatch: pytest.MonkeyPatch, emulator: AdobeQueryServiceEmulator, encoder_name: str
) -> list[int]:
    """Expire the emulator's tokens (new password, sessions ended) once the hook's encoder
    ``encoder_name`` has written the first batch; returns the list the batch's size goes in."""
    expired: list[int] = []

    def expire_once(batch: list[tuple[Any, ...]]) -> None:
        if not expired:
            expired.append(len(batch))
            emulator.expire_tokens()

    after_each_batch(monkeypatch, encoder_name, expire_once)
    return expired


def test_a_token_expired_mid_session_costs_one_reconnect(
    emulator: AdobeQueryServiceEmulator,
    postgres: LocalPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The token expires after the first FETCH: the server ends the session; the hook sees its
    token was replaced, reconnects once with the fresh one and runs the statement again."""
    expired = expire_tokens_after_the_first_batch(monkeypatch, emulator, "_csv_encoder")
    hook = AdobeQueryServiceSqlHook(fetch_size=100)
    with caplog.at_level(logging.INFO):
        record = hook.export_rows("SELECT * FROM web_events ORDER BY _id", tmp_path / "events.csv")
    assert expired == [100]
    assert record["rows"] == 1000
    assert len(Path(record["uri"]).read_text().splitlines()) == 1001  # started over, no duplicates
    assert token_calls(emulator) == 2  # the first token, and one fresh one
    # Connection parameters answered: the first session, the check that the token changed (after
    # the expired token's 401), the reconnect.
    answered = [r for r in emulator.requests_to("api", "GET", r"/connection_parameters$") if r.status == 200]
    assert len(answered) == 3
    # Airflow 3 logs through structlog to stdout, 2.11 through logging (caught by both).
    printed, recorded = capfd.readouterr().out, "".join(r.getMessage() for r in caplog.records)
    assert max(printed.count("reconnecting once"), recorded.count("reconnecting once")) == 1


def test_a_token_expiring_again_after_the_reconnect_is_an_error(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    after_each_batch(monkeypatch, "_csv_encoder", lambda batch: emulator.expire_tokens())
    # 100 or 200 rows: the next FETCH may be in already when the session ends (prefetch).
    with pytest.raises(SqlConnectionLostError, match=r"lost after [1-9]\d* rows"):
        AdobeQueryServiceSqlHook(fetch_size=100).export_rows("SELECT * FROM web_events", tmp_path / "e.csv")
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no temporary file


def test_a_dropped_session_with_a_valid_token_is_a_clear_error(
    emulator: AdobeQueryServiceEmulator,
    postgres: LocalPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session ends while the token stays valid.
    after_each_batch(monkeypatch, "_csv_encoder", lambda batch: postgres.end_sessions(emulator.org_id))
    with pytest.raises(SqlConnectionLostError, match="retries run the statement again"):
        AdobeQueryServiceSqlHook(fetch_size=50).export_rows("SELECT * FROM web_events", tmp_path / "e.csv")
    assert token_calls(emulator) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_refused_token_at_login_is_replaced_once(
    emulator: AdobeQueryServiceEmulator, postgres: LocalPostgres
) -> None:
    hook = AdobeQueryServiceSqlHook()
    assert hook.get_first("SELECT 1") == (1,)
    # The server stops taking the cached token (the REST API still does).
    postgres.set_password(emulator.org_id, "rotated-elsewhere-0123456789")
    emulator._sql_token = None  # the next IMS call issues a new token and sets it as password
    assert AdobeQueryServiceSqlHook().get_first("SELECT 2") == (2,)
    assert token_calls(emulator) == 2


def test_a_wrong_client_secret_is_an_authentication_error(
    emulator: AdobeQueryServiceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = emulator.sql_connection("wrong_secret")
    conn["password"] = "not-the-secret"
    use_connection(monkeypatch, conn)
    with pytest.raises(AuthenticationError, match="invalid_client") as caught:
        AdobeQueryServiceSqlHook("wrong_secret").get_records("SELECT 1")
    assert "not-the-secret" not in str(caught.value)
    ok, message = AdobeQueryServiceSqlHook("wrong_secret").test_connection()
    assert not ok and "invalid_client" in message


def test_a_wrong_technical_account_password_is_refused_by_the_server_without_retry(
    emulator: AdobeQueryServiceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = emulator.sql_connection("technical")
    conn["extra"]["technical_account_password"] = "tech-acct-1:wrong-credential-value"
    use_connection(monkeypatch, conn)
    with pytest.raises(SqlAuthenticationError, match=r"28P01.*technical_account_password") as caught:
        AdobeQueryServiceSqlHook("technical").get_conn()
    assert "wrong-credential-value" not in str(caught.value)
    # One login attempt: a fixed credential is not replaced by asking again.
    assert len(emulator.requests_to("api", "GET", r"/connection_parameters$")) == 1


def test_a_statement_over_the_timeout_is_a_limit_error(emulator: AdobeQueryServiceEmulator) -> None:
    from .conftest import STATEMENT_TIMEOUT

    with pytest.raises(SqlLimitError, match="10 minutes.*AdobeQueryOperator with ctas_parameters"):
        AdobeQueryServiceSqlHook().run(f"SELECT pg_sleep({STATEMENT_TIMEOUT + 1})")


def test_an_export_over_the_timeout_is_a_limit_error_and_leaves_no_file(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    from .conftest import STATEMENT_TIMEOUT

    with pytest.raises(SqlLimitError, match="statement timeout"):
        AdobeQueryServiceSqlHook().export_rows(
            f"SELECT i, pg_sleep({STATEMENT_TIMEOUT + 1}) FROM generate_series(1, 2) AS i",  # noqa: S608
            tmp_path / "slow.csv",
        )
    assert list(tmp_path.iterdir()) == []


def test_53400_from_the_server_says_what_to_do() -> None:
    import psycopg2

    class Limit(psycopg2.OperationalError):
        pgcode = "53400"

    error = sql_module.translate_error(Limit("LIMIT 200000 exceeds the maximum"), rows=0)
    assert isinstance(error, SqlLimitError) and error.sqlstate == "53400"
    assert "100,000" in str(error) and "ctas_parameters" in str(error)


def test_exactly_the_default_row_cap_without_limit_fails_loudly(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    hook = AdobeQueryServiceSqlHook()
    with pytest.raises(SqlRowCapError, match="LIMIT 0"):
        hook.export_rows("SELECT i FROM generate_series(1, 50000) AS i", tmp_path / "capped.csv")
    assert list(tmp_path.iterdir()) == []
    record = hook.export_rows("SELECT i FROM generate_series(1, 50000) AS i LIMIT 50000", tmp_path / "ok.csv")
    assert record["rows"] == 50_000


def test_sslmode_is_required_except_for_loopback(
    emulator: AdobeQueryServiceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator's proxy speaks TLS where asyncio can (3.11+); "prefer" is for loopback only.
    expected = "require" if emulator.sql_tls else "prefer"
    assert AdobeQueryServiceSqlHook().connection_parameters()["sslmode"] == expected
    conn = emulator.sql_connection("plain")
    conn["extra"]["sslmode"] = "prefer"
    use_connection(monkeypatch, conn)
    hook = AdobeQueryServiceSqlHook("plain")
    assert hook.connection_parameters()["sslmode"] == "prefer"  # loopback
    with pytest.raises(InvalidInputError, match="sslmode.*require, verify-ca, verify-full"):
        hook._sslmode("example.platform-query.adobe.io")


def test_the_token_never_reaches_the_logs(
    emulator: AdobeQueryServiceEmulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_querytasks.compat import redact

    with caplog.at_level(logging.DEBUG):
        hook = AdobeQueryServiceSqlHook()
        params = hook.connection_parameters()
        record = hook.export_rows("SELECT 1 AS one", tmp_path / "one.csv")
        hook.get_records("SELECT 1")
    token = emulator._sql_token
    assert token and params["password"] == token
    assert token not in json.dumps(record)
    assert token not in str(redact(params))  # the secrets masker knows it
    logged = capfd.readouterr()
    assert "Exported 1 rows" in logged.out + "".join(r.getMessage() for r in caplog.records)
    assert token not in logged.out + logged.err
    assert all(token not in str(redact(r.getMessage())) for r in caplog.records)


def test_openlineage_naming_is_the_rest_operators(emulator: AdobeQueryServiceEmulator) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    hook = AdobeQueryServiceSqlHook()
    info = hook.get_openlineage_database_info(hook.connection)
    assert (info.scheme, info.authority) == ("adobe-experience-platform", emulator.org_id)
    assert hook.get_openlineage_default_schema() == "prod"
    assert hook.get_openlineage_database_dialect(hook.connection) == "postgres"


def test_copy_transfer_writes_the_same_csv_as_the_cursor(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    hook = AdobeQueryServiceSqlHook()
    sql = "SELECT * FROM web_events ORDER BY _id"
    by_cursor = hook.export_rows(sql, tmp_path / "cursor.csv")
    by_copy = hook.export_rows(sql, tmp_path / "copy.csv", transfer="copy")
    assert by_copy["rows"] == by_cursor["rows"] == 1000
    assert by_copy["sha256"] == by_cursor["sha256"] and by_copy["lines"] == 1001
    with pytest.raises(InvalidInputError, match="transfer"):
        hook.export_rows(sql, tmp_path / "x.jsonl", file_format="jsonl", transfer="copy")
    with pytest.raises(InvalidInputError, match="parameters"):
        hook.export_rows(sql, tmp_path / "x.csv", transfer="copy", parameters={"a": 1})


def test_copy_records_the_headers_column_names_and_none_without_a_header(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    """COPY sends no column description: the names are the header's, parsed as CSV (a quoted
    name with a comma, a quote or a line break included), and not known without a header."""
    hook = AdobeQueryServiceSqlHook()
    sql = "SELECT * FROM web_events ORDER BY _id"
    by_cursor = hook.export_rows(sql, tmp_path / "cursor.csv")
    by_copy = hook.export_rows(sql, tmp_path / "copy.csv", transfer="copy")
    assert by_copy["columns"] == by_cursor["columns"] and by_copy["columns"][0] == "_id"
    by_auto = hook.export_rows(sql, tmp_path / "auto.csv", transfer="auto")
    assert (by_auto["transfer"], by_auto["columns"]) == ("copy", by_cursor["columns"])
    odd = 'SELECT 1 AS "a,b", 2 AS "say ""hi""", 3 AS "two\nlines", 4 AS plain, \'x\' AS "\u00e9t\u00e9"'
    names = ["a,b", 'say "hi"', "two\nlines", "plain", "\u00e9t\u00e9"]
    assert hook.export_rows(odd, tmp_path / "odd-cursor.csv")["columns"] == names
    assert hook.export_rows(odd, tmp_path / "odd-copy.csv", transfer="copy")["columns"] == names
    empty = "SELECT _id, ecid FROM web_events WHERE false"
    assert hook.export_rows(empty, tmp_path / "empty.csv", transfer="copy")["columns"] == ["_id", "ecid"]
    bare = hook.export_rows(sql, tmp_path / "bare.csv", transfer="copy", header=False)
    assert bare["columns"] is None and bare["rows"] == 1000 and bare["lines"] == 1000
    assert hook.export_rows(sql, tmp_path / "bare-cursor.csv", header=False)["sha256"] == bare["sha256"]


def test_cursor_csv_quotes_as_copy_does_where_csv_writer_would_not(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    """An empty string (quoted: NULL is the empty field), a lone carriage return, a one-column
    NULL and ``\\.`` alone on a line: csv.writer writes each differently from COPY."""
    hook = AdobeQueryServiceSqlHook(fetch_size=2)  # batches with and without such values
    many = (
        "SELECT a, b, c FROM (VALUES (1, '', NULL, 'x,\"y'), (2, 'a', 'b', 'c'), "
        "(3, 'a', NULL, E'l1\\rl2'), (4, 'a', 'b', E'n\\nl'), (5, ' s ', '\\.', 'u')) AS v(n, a, b, c) "
        "ORDER BY n"
    )
    one = "SELECT o FROM (VALUES (1, NULL), (2, ''), (3, '\\.'), (4, 'x')) AS v(n, o) ORDER BY n"
    for name, sql in (("many", many), ("one", one)):
        by_cursor = hook.export_rows(sql, tmp_path / f"{name}-cursor.csv")
        by_copy = hook.export_rows(sql, tmp_path / f"{name}-copy.csv", transfer="copy")
        assert Path(by_cursor["uri"]).read_bytes() == Path(by_copy["uri"]).read_bytes()
    assert (tmp_path / "one-cursor.csv").read_bytes() == b'o\n\n""\n"\\."\nx\n'
    assert (tmp_path / "many-cursor.csv").read_bytes().split(b"\n")[1:4] == [
        b'"",,"x,""y"',
        b"a,b,c",
        b'a,,"l1\rl2"',
    ]


def test_auto_transfer_copies_where_it_can_and_is_never_another_file(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    hook = AdobeQueryServiceSqlHook()
    sql = "SELECT * FROM web_events ORDER BY _id -- a trailing comment"  # COPY gets it too
    by_cursor = hook.export_rows(sql, tmp_path / "cursor.csv")
    by_auto = hook.export_rows(sql, tmp_path / "auto.csv", transfer="auto")
    assert (by_auto["transfer"], by_cursor["transfer"]) == ("copy", "cursor")
    assert by_auto["sha256"] == by_cursor["sha256"] and by_auto["rows"] == 1000
    # COPY binds no parameters and writes only CSV: the cursor runs.
    limited = hook.export_rows(
        "SELECT _id FROM web_events LIMIT %(n)s", tmp_path / "p.csv", transfer="auto", parameters={"n": 3}
    )
    assert limited["transfer"] == "cursor" and limited["rows"] == 3
    as_jsonl = hook.export_rows(sql, tmp_path / "a.jsonl", file_format="jsonl", transfer="auto")
    assert as_jsonl["transfer"] == "cursor" and as_jsonl["rows"] == 1000
    # The row cap is checked whichever ran.
    with pytest.raises(SqlRowCapError):
        hook.export_rows(
            "SELECT i FROM generate_series(1, 50000) AS i", tmp_path / "cap.csv", transfer="auto"
        )
    assert not (tmp_path / "cap.csv").exists()


def test_auto_transfer_falls_back_to_the_cursor_only_where_copy_is_refused(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses COPY (here PostgreSQL's real 0A000, for a statement COPY does not
    take) after the file was begun: the file starts over through the cursor."""
    copy = AdobeQueryServiceSqlHook._copy
    sqlstates: list[str | None] = []

    def refusing(self: AdobeQueryServiceSqlHook, connection: Any, sql: str, writer: Any, header: bool) -> Any:
        writer.write(b"begun,by,copy\n")
        try:
            return copy(self, connection, "SELECT 1 INTO not_for_copy", writer, header)
        except sql_module.SqlInterfaceError as exc:
            sqlstates.append(exc.sqlstate)
            raise

    monkeypatch.setattr(AdobeQueryServiceSqlHook, "_copy", refusing)
    hook = AdobeQueryServiceSqlHook(fetch_size=300)
    sql = "SELECT * FROM web_events ORDER BY _id"
    record = hook.export_rows(sql, tmp_path / "auto.csv", transfer="auto")
    assert sqlstates == ["0A000"] and record["transfer"] == "cursor"
    monkeypatch.setattr(AdobeQueryServiceSqlHook, "_copy", copy)
    assert record["sha256"] == hook.export_rows(sql, tmp_path / "copy.csv", transfer="copy")["sha256"]
    assert record["rows"] == 1000 and record["lines"] == 1001
    # transfer="copy" does not fall back; nor does "auto" for another error.
    monkeypatch.setattr(AdobeQueryServiceSqlHook, "_copy", refusing)
    with pytest.raises(sql_module.SqlInterfaceError, match="0A000.*use transfer='cursor' or 'auto'"):
        hook.export_rows(sql, tmp_path / "refused.csv", transfer="copy")

    def failing(*args: Any) -> Any:
        raise sql_module.SqlInterfaceError("system error", sqlstate="58000")

    monkeypatch.setattr(AdobeQueryServiceSqlHook, "_copy", failing)
    with pytest.raises(sql_module.SqlInterfaceError, match="system error"):
        hook.export_rows(sql, tmp_path / "failed.csv", transfer="auto")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.csv", "copy.csv"]


def test_export_to_an_object_storage_path(emulator: AdobeQueryServiceEmulator, tmp_path: Path) -> None:
    """An ``ObjectStoragePath`` (``file://`` here: the code path the s3/gs stores take too)."""
    from airflow_provider_querytasks.compat import ObjectStoragePath

    (tmp_path / "obj").mkdir()  # an object store has no folders to create; a file system does
    target = ObjectStoragePath(f"file://{tmp_path}/obj/pages.csv")
    record = AdobeQueryServiceSqlHook().export_rows(
        "SELECT page_name, count(*) AS n FROM web_events GROUP BY 1 ORDER BY 1", target
    )
    assert record["uri"] == f"file://{tmp_path}/obj/pages.csv"
    written = (tmp_path / "obj" / "pages.csv").read_bytes()
    assert hashlib.sha256(written).hexdigest() == record["sha256"] and record["rows"] == 5
    assert [p.name for p in (tmp_path / "obj").iterdir()] == ["pages.csv"]  # no temporary name left


# -- Parquet ------------------------------------------------------------------------------------
#: One column of each type the Parquet export maps (docs/adobe_sql.md), every fifth row NULL.
PARQUET_TABLE = """
CREATE TABLE parquet_types AS
SELECT i AS id,
       CASE WHEN i % 5 <> 0 THEN (i - 20)::int2 END AS small,
       CASE WHEN i % 5 <> 0 THEN i * 1000 END AS medium,
       CASE WHEN i % 5 <> 0 THEN i * 10000000000 END AS big,
       CASE WHEN i % 5 <> 0 THEN (i / 3.0)::float4 END AS f4,
       CASE WHEN i % 5 <> 0 THEN i / 7.0::float8 END AS f8,
       CASE WHEN i % 5 <> 0 THEN i % 2 = 0 END AS flag,
       CASE WHEN i % 5 <> 0 THEN 'naïve ' || i END AS label,
       CASE WHEN i % 5 <> 0 THEN ('v' || i)::varchar(8) END AS short_label,
       (CASE WHEN i % 5 <> 0 THEN i * 1234567.89 END)::numeric(16, 2) AS amount,
       CASE WHEN i % 5 <> 0 THEN 12345678901234567890.123456789012345 * i END AS unbounded,
       (CASE WHEN i % 5 <> 0 THEN i * 1.5 END)::numeric(40, 5) AS too_wide,
       CASE WHEN i % 5 <> 0 THEN date '2026-02-27' + i END AS day,
       CASE WHEN i % 5 <> 0 THEN timestamp '2026-11-19 23:59:59.123456' + i * interval '1 hour' END
           AS local_ts,
       CASE WHEN i % 5 <> 0 THEN timestamptz '2026-11-19 12:00:00.5+05:30' + i * interval '1 day' END
           AS utc_ts,
       CASE WHEN i % 5 <> 0 THEN jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i)) END AS doc,
       CASE WHEN i % 5 <> 0 THEN json_build_object('i', i) END AS plain_json,
       CASE WHEN i % 5 <> 0 THEN decode(lpad(to_hex(i * 4099), 6, '0'), 'hex') END AS raw,
       CASE WHEN i % 5 <> 0 THEN i * interval '90 minutes' END AS span
FROM generate_series(1, 23) AS i
"""


@pytest.fixture
def parquet_types(emulator: AdobeQueryServiceEmulator, postgres: LocalPostgres) -> Iterator[str]:
    with postgres.admin("prod:all") as cursor:
        cursor.execute("DROP TABLE IF EXISTS parquet_types")
        cursor.execute(PARQUET_TABLE)
        cursor.execute(f'GRANT SELECT ON parquet_types TO "{emulator.org_id}"')
    yield "parquet_types"
    with postgres.admin("prod:all") as cursor:
        cursor.execute("DROP TABLE parquet_types")


def test_parquet_export_keeps_types_values_and_nulls(
    parquet_types: str, postgres: LocalPostgres, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    record = AdobeQueryServiceSqlHook(fetch_size=4).export_rows(
        "SELECT * FROM parquet_types ORDER BY id", f"{tmp_path}/", filename="types", file_format="parquet"
    )
    path = Path(record["uri"])
    assert path == tmp_path / "types.parquet" and [p.name for p in tmp_path.iterdir()] == ["types.parquet"]
    data = path.read_bytes()
    assert record["bytes"] == len(data) and record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["rows"] == 23 and record["lines"] is None and record["format"] == "parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups == 6  # one per FETCH of 4 rows
    table = pq.read_table(path)
    assert dict(zip(table.column_names, table.schema.types, strict=True)) == {
        "id": pa.int32(),
        "small": pa.int16(),
        "medium": pa.int32(),
        "big": pa.int64(),
        "f4": pa.float32(),
        "f8": pa.float64(),
        "flag": pa.bool_(),
        "label": pa.string(),
        "short_label": pa.string(),
        "amount": pa.decimal128(16, 2),
        "unbounded": pa.string(),  # no declared precision: the exact digits as text
        "too_wide": pa.string(),  # over decimal128's 38 digits
        "day": pa.date32(),
        "local_ts": pa.timestamp("us"),
        "utc_ts": pa.timestamp("us", tz="UTC"),
        "doc": pa.string(),
        "plain_json": pa.string(),
        "raw": pa.binary(),
        "span": pa.string(),  # not mapped: the server's text
    }
    assert record["columns"] == table.column_names
    # The admin's rows: psycopg2's Python values, and the server's text where Parquet keeps text.
    expected = admin_rows(
        postgres,
        "SELECT id, small, medium, big, f4, f8, flag, label, short_label, amount, unbounded::text, "
        "too_wide::text, day, local_ts, utc_ts, doc::text, plain_json::text, raw, span::text "
        "FROM parquet_types ORDER BY id",
    )
    got = [tuple(row.values()) for row in table.to_pylist()]
    assert len(got) == len(expected) == 23
    for row, want in zip(got, expected, strict=True):
        assert row[:4] == want[:4] and row[5:10] == want[5:10]
        # float4 round-trips as a 32-bit float: the same float the server holds.
        assert row[4] == (None if want[4] is None else float(pa.scalar(want[4], pa.float32()).as_py()))
        assert row[10:14] == want[10:14]  # numerics exact (never rounded), dates, timestamps
        assert row[14] == want[14] and (row[14] is None or row[14].utcoffset() == dt.timedelta(0))
        assert row[15:17] == want[15:17]  # json and jsonb: the server's text
        assert row[17] == (None if want[17] is None else bytes(want[17]))
        assert row[18] == want[18]
    assert got[4] == (5,) + (None,) * 18  # a NULL row: every column null, none filled in
    assert got[0][9] == Decimal("1234567.89")
    assert got[22][10] == "283950614728395061472.839506147283935"  # all 36 digits, as the server has them


def test_an_empty_parquet_result_is_a_valid_file_with_the_schema(parquet_types: str, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    record = AdobeQueryServiceSqlHook().export_rows(
        "SELECT id, amount, utc_ts FROM parquet_types WHERE false",
        tmp_path / "none.parquet",
        file_format="parquet",
    )
    table = pq.read_table(record["uri"])
    assert table.num_rows == record["rows"] == 0 and record["lines"] is None
    assert table.schema.types == [pa.int32(), pa.decimal128(16, 2), pa.timestamp("us", tz="UTC")]
    assert record["columns"] == ["id", "amount", "utc_ts"]


def test_a_numeric_parquet_cannot_hold_fails_and_leaves_no_file(parquet_types: str, tmp_path: Path) -> None:
    """NaN in a numeric(16, 2) column has no decimal128 form: an error, never a rounded or
    missing value; the row groups already written are discarded."""
    pytest.importorskip("pyarrow")
    sql = (
        "SELECT id, (CASE WHEN id = 17 THEN 'NaN' ELSE amount END)::numeric(16, 2) AS amount "
        "FROM parquet_types ORDER BY id"
    )
    with pytest.raises(sql_module.SqlInterfaceError, match="'amount'.*decimal128.*cast the column to text"):
        AdobeQueryServiceSqlHook(fetch_size=5).export_rows(
            sql, tmp_path / "nan.parquet", file_format="parquet"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_token_expired_mid_parquet_export_starts_the_file_over(
    emulator: AdobeQueryServiceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    expired = expire_tokens_after_the_first_batch(monkeypatch, emulator, "_parquet_encoder")
    record = AdobeQueryServiceSqlHook(fetch_size=100).export_rows(
        "SELECT _id, page_views FROM web_events ORDER BY _id",
        tmp_path / "events.parquet",
        file_format="parquet",
    )
    assert expired == [100] and token_calls(emulator) == 2
    ids = pq.read_table(record["uri"]).column("_id").to_pylist()
    assert record["rows"] == len(ids) == len(set(ids)) == 1000  # started over, no duplicates
    assert pq.ParquetFile(record["uri"]).metadata.num_row_groups == 10
    assert [p.name for p in tmp_path.iterdir()] == ["events.parquet"]


def test_numeric_is_a_decimal_only_with_a_precision_decimal128_holds() -> None:
    pa = pytest.importorskip("pyarrow")
    numeric = sql_module.PG_NUMERIC
    assert sql_module.arrow_type(numeric, 38, 38) == pa.decimal128(38, 38)
    assert sql_module.arrow_type(numeric, 1, 0) == pa.decimal128(1, 0)
    # No typmod (psycopg2 reads 65535), over 38 digits, a negative scale (PostgreSQL 15+, read as
    # 65534), none at all, zero: the server's digits as text.
    for precision, scale in ((65535, 65535), (39, 2), (10, 65534), (None, None), (0, 0)):
        assert sql_module.arrow_type(numeric, precision, scale) == pa.string()
    assert sql_module.arrow_type(1186, None, None) == pa.string()  # interval: not mapped
