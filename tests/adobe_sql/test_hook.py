"""The SQL hook against a real PostgreSQL behind the Adobe emulator's /connection_parameters."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
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
    with pytest.raises(InvalidInputError, match="file_format.*csv, jsonl"):
        hook.export_rows("SELECT 1", tmp_path / "x", file_format="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="fetch_size"):
        AdobeQueryServiceSqlHook(fetch_size=0)
    assert emulator.requests_to("api") == [] and emulator.requests_to("ims") == []


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
    encoder = sql_module._csv_encoder
    expired: list[int] = []

    def expiring_encoder(*args: Any) -> Any:
        encode = encoder(*args)

        def wrapped(batch: list[tuple[Any, ...]]) -> None:
            encode(batch)
            if batch and not expired:
                expired.append(len(batch))
                emulator.expire_tokens()  # new password, sessions ended

        return wrapped

    monkeypatch.setattr(sql_module, "_csv_encoder", expiring_encoder)
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
    encoder = sql_module._csv_encoder

    def always_expiring(*args: Any) -> Any:
        encode = encoder(*args)

        def wrapped(batch: list[tuple[Any, ...]]) -> None:
            encode(batch)
            if batch:
                emulator.expire_tokens()

        return wrapped

    monkeypatch.setattr(sql_module, "_csv_encoder", always_expiring)
    with pytest.raises(SqlConnectionLostError, match="lost after 100 rows"):
        AdobeQueryServiceSqlHook(fetch_size=100).export_rows("SELECT * FROM web_events", tmp_path / "e.csv")
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no temporary file


def test_a_dropped_session_with_a_valid_token_is_a_clear_error(
    emulator: AdobeQueryServiceEmulator,
    postgres: LocalPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoder = sql_module._csv_encoder

    def dropping(*args: Any) -> Any:
        encode = encoder(*args)

        def wrapped(batch: list[tuple[Any, ...]]) -> None:
            encode(batch)
            if batch:
                postgres.end_sessions(emulator.org_id)  # the token stays valid

        return wrapped

    monkeypatch.setattr(sql_module, "_csv_encoder", dropping)
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
