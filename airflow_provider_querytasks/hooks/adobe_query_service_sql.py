"""Query Service as a SQL database: a ``DbApiHook`` on its PostgreSQL interface.

``SQLExecuteQueryOperator`` and common.sql's check operators find this hook through the
``adobe_query_service_sql`` connection type; :meth:`AdobeQueryServiceSqlHook.export_rows` streams
a ``SELECT``'s rows to a file through a server-side cursor. Facts (limits, error codes) and the
design choices are in ``docs/adobe_sql.md``.

Needs the ``adobe-sql`` extra (common.sql and psycopg2).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import re
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, Literal

from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_provider_querytasks.common.api.calls import ApiRequest
from airflow_provider_querytasks.common.api.errors import (
    AuthenticationError,
    InvalidInputError,
    QueryTaskError,
)
from airflow_provider_querytasks.common.api.validation import is_loopback_host
from airflow_provider_querytasks.common.transport.clients import token_cache
from airflow_provider_querytasks.common.transport.fetch import (
    AtomicTarget,
    Destination,
    FetchRecord,
    destination_for,
)
from airflow_provider_querytasks.compat import mask_secret
from airflow_provider_querytasks.connection_forms import ADOBE_QUERY_SERVICE_SQL_FORM
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.lineage import ADOBE_SCHEME
from airflow_provider_querytasks.protocols.adobe_query_service import (
    QUERY,
    SQL_LIMIT_SQLSTATE,
    SQL_MAX_LIMIT,
    SQL_ROW_CAP,
    SQL_STATEMENT_TIMEOUT,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from airflow_provider_querytasks.compat import Connection

PLATFORM = "adobe_query_service"
#: sslmode values allowed for any host, and those allowed only for a loopback host (an emulator).
SSLMODES = ("require", "verify-ca", "verify-full")
LOOPBACK_SSLMODES = ("prefer", "disable")
FORMATS = ("csv", "jsonl", "parquet")
FileFormat = Literal["csv", "jsonl", "parquet"]
#: How rows travel: a server-side cursor (documented by Adobe), PostgreSQL's COPY protocol, or
#: COPY with the cursor as fallback where the server refuses COPY.
TRANSFERS = ("cursor", "copy", "auto")
Transfer = Literal["cursor", "copy", "auto"]
#: The SQLSTATEs of a server that does not take ``COPY (...) TO STDOUT``: not supported, not understood.
COPY_REFUSED = ("0A000", "42601")
TECHNICAL_ACCOUNT = re.compile(r"^[^:\s]+:\S+$")
HAS_LIMIT = re.compile(r"\blimit\b", re.IGNORECASE)
#: What the advice for the interactive limits says (errors 53400 and the row cap).
USE_REST_ADVICE = (
    "for long queries or large results use AdobeQueryOperator with ctas_parameters (batch: 24 h, "
    "no row cap; the result becomes a dataset) and AdobeExportDatasetOperator"
)


# -- errors -------------------------------------------------------------------------------------
class SqlInterfaceError(QueryTaskError):
    """An error of Query Service's PostgreSQL interface, with its SQLSTATE (``sqlstate``)."""

    def __init__(self, message: str, *, sqlstate: str | None = None, **kwargs: Any) -> None:
        self.sqlstate = sqlstate
        super().__init__(message, platform=PLATFORM, **kwargs)


class SqlLimitError(SqlInterfaceError):
    """``53400``: the 10-minute statement timeout, or a ``LIMIT`` over 100,000 rows (a retry
    would meet the same limit)."""


class SqlRowCapError(SqlInterfaceError):
    """A result of exactly the default row cap (50,000) from a SELECT without ``LIMIT``:
    probably truncated by the server."""


class SqlConnectionLostError(SqlInterfaceError):
    """The session ended before the statement did (network, server restart, ended session)."""

    retryable = True


class SqlAuthenticationError(AuthenticationError):
    """``28P01`` / ``28000``: the PostgreSQL login was refused."""


def sqlstate_of(error: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error (``53400``, ``28P01``...), or ``None``."""
    code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    return str(code) if code else None


def translate_error(error: BaseException, *, rows: int | None = None) -> BaseException:
    """The provider's error for a driver error, saying what to do; other errors unchanged."""
    import psycopg2

    if not isinstance(error, psycopg2.Error):
        return error
    code = sqlstate_of(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    after = f" after {rows} rows" if rows else ""
    if code in ("28P01", "28000") or "password authentication failed" in text:
        return SqlAuthenticationError(
            f"Query Service refused the PostgreSQL login ({code or '28P01'}: {text}): the IMS access "
            "token, or the technical_account_password extra, was not accepted. Check the client id "
            "and secret (and the credential's Query Service permissions) in the Adobe Developer "
            "Console, or replace an expired technical account credential",
            platform=PLATFORM,
            operation="postgresLogin",
        )
    if code == SQL_LIMIT_SQLSTATE:
        return SqlLimitError(
            f"Query Service stopped the statement{after} ({code}: {text}): an interactive "
            f"statement may run {SQL_STATEMENT_TIMEOUT / 60:g} minutes and a LIMIT may not exceed "
            f"{SQL_MAX_LIMIT:,} rows; {USE_REST_ADVICE}",
            sqlstate=code,
        )
    if code == "57014" and "timeout" in text.lower():  # PostgreSQL's own statement_timeout
        return SqlLimitError(
            f"The statement ran past the server's statement timeout{after} ({code}: {text}); "
            f"Query Service allows {SQL_STATEMENT_TIMEOUT / 60:g} minutes; {USE_REST_ADVICE}",
            sqlstate=code,
        )
    if (
        isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError)
        and (code is None or code.startswith(("08", "57P")))
    ) or code == "57P01":
        return SqlConnectionLostError(
            f"The connection to Query Service's PostgreSQL interface was lost{after} "
            f"({code or type(error).__name__}: {text}); the task's retries run the statement "
            "again (a partial file is never left behind). If it keeps happening, check the "
            "network path (port 80/5432, TLS) and the session limit of the licence",
            sqlstate=code,
        )
    return error


# -- the REST side of the SQL connection --------------------------------------------------------
def row_cap_error() -> SqlRowCapError:
    """What exactly :data:`SQL_ROW_CAP` rows from a statement without ``LIMIT`` mean."""
    return SqlRowCapError(
        f"The statement returned exactly {SQL_ROW_CAP:,} rows and has no LIMIT: Query Service "
        "returns at most that many rows by default, so the result is probably cut. Add LIMIT 0 "
        f"(no row cap; still 10 minutes), or LIMIT {SQL_ROW_CAP} to accept exactly these rows, "
        f"or {USE_REST_ADVICE}"
    )


class _SqlConnectionRestHook(AdobeQueryServiceHook):
    """The REST hook read from an ``adobe_query_service_sql`` connection (same credentials):
    IMS tokens (shared process-wide with the REST hook's, keyed by credential) and
    ``GET /connection_parameters``."""

    conn_type = ADOBE_QUERY_SERVICE_SQL_FORM.connection_type
    hook_name = ADOBE_QUERY_SERVICE_SQL_FORM.hook_name
    form = ADOBE_QUERY_SERVICE_SQL_FORM


class AdobeQueryServiceSqlHook(DbApiHook):
    """Query Service's PostgreSQL interface as a DB-API database (psycopg2).

    The connection (type ``adobe_query_service_sql``; an ``adobe_experience_platform``
    connection works too when the hook is built directly) holds the OAuth server-to-server
    credential as the REST hook's does: client id in *login*, secret in *password*, the
    ``org_id``, ``sandbox``, ``scopes``, ``endpoint`` and ``ims_endpoint`` extras; optionally the
    ``technical_account_password`` extra (a non-expiring ``technicalAccountId:credential``
    used as the password instead of the IMS token), ``sslmode`` (``require`` by default) and the
    database in *schema* (default ``<sandbox>:all``). Each new session asks
    ``GET /connection_parameters`` for host, port and user, and logs in with the IMS access token
    (refreshed as the REST hook refreshes it); a refused token is replaced once.

    :param adobe_sql_conn_id: the Airflow connection id (``adobe_query_service_sql_default``).
    :param schema: the database, overriding the connection's (``<sandbox>:all``).
    :param fetch_size: rows a server-side cursor fetches per round trip (:meth:`export_rows`).
    :param connect_timeout: seconds to establish a session.
    """

    conn_name_attr = "adobe_sql_conn_id"
    default_conn_name = "adobe_query_service_sql_default"
    conn_type = ADOBE_QUERY_SERVICE_SQL_FORM.connection_type
    hook_name = ADOBE_QUERY_SERVICE_SQL_FORM.hook_name
    supports_autocommit = True
    supports_executemany = False
    _test_connection_sql = "SELECT 1"

    def __init__(
        self,
        *args: Any,
        schema: str | None = None,
        fetch_size: int = 10_000,
        connect_timeout: int = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, schema=schema, **kwargs)
        if not isinstance(fetch_size, int) or isinstance(fetch_size, bool) or fetch_size < 1:
            raise InvalidInputError("fetch_size", f"must be a positive integer, got {fetch_size!r}")
        if not isinstance(connect_timeout, int) or connect_timeout < 1:
            raise InvalidInputError("connect_timeout", f"must be a positive integer, got {connect_timeout!r}")
        #: The database (``<sandbox>:all``); common.sql's ``database=`` sets it too.
        self.schema = schema
        self.fetch_size = fetch_size
        self.connect_timeout = connect_timeout

    # -- connection forms (Airflow 2.11 - 3.1; 3.2+ reads the provider metadata) ---------------
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form."""
        return ADOBE_QUERY_SERVICE_SQL_FORM.connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder standard fields of the connection form."""
        return ADOBE_QUERY_SERVICE_SQL_FORM.ui_field_behaviour()

    # -- connection ---------------------------------------------------------------------------
    @cached_property
    def rest_hook(self) -> AdobeQueryServiceHook:
        """The REST hook on the same connection (tokens, ``/connection_parameters``)."""
        conn_id = self.get_conn_id()
        conn = self.get_connection(conn_id)
        if (conn.conn_type or "").replace("-", "_") == AdobeQueryServiceHook.conn_type:
            return AdobeQueryServiceHook(conn_id)
        return _SqlConnectionRestHook(conn_id)

    def _extra(self, name: str) -> Any:
        return self.rest_hook.extra_value(self.connection.extra_dejson, name)

    def _technical_account(self) -> str | None:
        value = self._extra("technical_account_password")
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not TECHNICAL_ACCOUNT.match(value):
            raise InvalidInputError(
                "technical_account_password",
                "must be technicalAccountId:credential, as POST /queryauth/accounts returns them",
            )
        mask_secret(value)
        return value

    def _sslmode(self, host: str) -> str:
        value = self._extra("sslmode") or "require"
        if value in SSLMODES or (value in LOOPBACK_SSLMODES and is_loopback_host(host)):
            return str(value)
        allowed = ", ".join(SSLMODES)
        raise InvalidInputError(
            "sslmode",
            f"{value!r} is not allowed for {host!r}: use {allowed} "
            f"({', '.join(LOOPBACK_SSLMODES)} only for a loopback host)",
        )

    def _database(self, answered: str | None) -> str:
        sandbox = self.rest_hook.settings.sandbox
        name = self.schema or self.connection.schema or answered or f"{sandbox}:all"
        if name.split(":", 1)[0] != sandbox:
            raise InvalidInputError(
                "schema", f"database {name!r} is not in the connection's sandbox {sandbox!r} (<sandbox>:all)"
            )
        return name

    def connection_parameters(self) -> dict[str, Any]:
        """The psycopg2 ``connect()`` keywords for a new session (the password masked in logs).

        ``GET /connection_parameters`` answers host, port, user and database, and echoes the
        access token: the answer is never logged, and the token is registered with the secrets
        masker before anything else happens to it.
        """
        answer = self.rest_hook.call(
            ApiRequest("GET", f"{QUERY}/connection_parameters", "listConnectionParameters")
        ).json_object()
        for secret in (answer.get("token"), answer.get("compressedToken")):
            if isinstance(secret, str) and secret:
                mask_secret(secret)
        host = answer.get("host")
        if not isinstance(host, str) or not host:
            raise QueryTaskError(
                "GET /connection_parameters answered without a host",
                platform=PLATFORM,
                operation="listConnectionParameters",
            )
        password = self._technical_account() or answer.get("token")
        if not isinstance(password, str) or not password:
            raise QueryTaskError(
                "GET /connection_parameters answered without a token",
                platform=PLATFORM,
                operation="listConnectionParameters",
            )
        return {
            "host": host,
            "port": int(answer.get("port") or 80),
            "user": str(answer.get("username") or self.rest_hook.settings.org_id),
            "password": password,
            "dbname": self._database(answer.get("dbName")),
            "sslmode": self._sslmode(host),
            "connect_timeout": self.connect_timeout,
            "application_name": "airflow-provider-querytasks",
            # A dead peer is noticed in about a minute, not at the OS's two hours.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }

    def _forget_token(self) -> None:
        """Drop this connection's cached IMS token: the next call obtains a fresh one."""
        source = self.rest_hook.client.policy.token_source
        if source is not None:
            token_cache.invalidate(source)

    def _connect(self) -> tuple[Any, str]:
        """A new session and the password it logged in with; a refused token is replaced once."""
        import psycopg2

        for attempt in (1, 2):
            params = self.connection_parameters()
            try:
                return psycopg2.connect(**params), params["password"]
            except psycopg2.Error as exc:
                error = translate_error(exc)
                token_login = self._technical_account() is None
                if isinstance(error, SqlAuthenticationError) and token_login and attempt == 1:
                    self.log.info(
                        "Query Service refused the IMS token at login; retrying once with a fresh one"
                    )
                    self._forget_token()
                    continue
                raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def get_conn(self) -> Any:
        """A psycopg2 connection to Query Service's PostgreSQL interface."""
        return self._connect()[0]

    def _token_was_replaced(self, used: str) -> bool:
        """Whether the password ``used`` is no longer the one a session gets (an expired token:
        the REST call refreshes it on its 401). A technical account credential never is."""
        if self._technical_account() is not None:
            return False
        try:
            return self.connection_parameters()["password"] != used
        except QueryTaskError:
            return False

    def test_connection(self) -> tuple[bool, str]:  # type: ignore[override]  # DbApiHook is untyped
        """One session and ``SELECT current_database(), current_user`` (the UI's *Test* button)."""
        try:
            row = self.get_first("SELECT current_database(), current_user")
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Query Service's PostgreSQL interface answered: database {row[0]}, user {row[1]}"

    @property
    def sqlalchemy_url(self) -> URL:
        """SQLAlchemy URL of a new session (``postgresql+psycopg2``; the token as password)."""
        from sqlalchemy.engine import URL

        params = self.connection_parameters()
        return URL.create(
            "postgresql+psycopg2",
            username=params["user"],
            password=params["password"],
            host=params["host"],
            port=params["port"],
            database=params["dbname"],
            query={"sslmode": params["sslmode"]},
        )

    def get_uri(self) -> str:
        """The session's URI (it holds the token: registered with the secrets masker)."""
        return self.sqlalchemy_url.render_as_string(hide_password=False)

    def _make_common_data_structure(self, result: Any) -> Any:
        """Rows as tuples (common.sql's ADR-0002)."""
        if isinstance(result, list):
            return [tuple(row) if isinstance(row, Sequence) else row for row in result]
        return tuple(result) if isinstance(result, Sequence) and not isinstance(result, str) else result

    def _run_command(self, cur: Any, sql_statement: str, parameters: Any) -> None:
        try:
            super()._run_command(cur, sql_statement, parameters)
        except Exception as exc:
            error = translate_error(exc)
            if error is exc:
                raise
            raise error from None
        # get_records, SQLExecuteQueryOperator and the checks: the same row-cap check as export_rows.
        if (
            cur.description is not None
            and cur.rowcount == SQL_ROW_CAP
            and not HAS_LIMIT.search(sql_statement)
        ):
            raise row_cap_error()

    # -- OpenLineage (the REST operator's naming: adobe-experience-platform://<org> / <sandbox>.<table>)
    def get_openlineage_database_info(self, connection: Connection) -> Any:
        from airflow.providers.openlineage.sqlparser import DatabaseInfo

        return DatabaseInfo(
            scheme=ADOBE_SCHEME,
            authority=self.rest_hook.settings.org_id,
            database=None,
        )

    def get_openlineage_database_dialect(self, connection: Connection) -> str:
        return "postgres"

    def get_openlineage_default_schema(self) -> str | None:
        return self.rest_hook.settings.sandbox

    # -- streaming a result -------------------------------------------------------------------
    @staticmethod
    def validate_export(file_format: str, fetch_size: int | None = None, transfer: str = "cursor") -> None:
        """Raise :class:`InvalidInputError` for a bad format, fetch size or transfer (before any call)."""
        if file_format not in FORMATS:
            raise InvalidInputError("file_format", f"{file_format!r} is not one of {', '.join(FORMATS)}")
        if transfer not in TRANSFERS:
            raise InvalidInputError("transfer", f"{transfer!r} is not one of {', '.join(TRANSFERS)}")
        if transfer == "copy" and file_format != "csv":
            raise InvalidInputError("transfer", "'copy' writes CSV only (file_format='csv'); use 'cursor'")
        if fetch_size is not None and (not isinstance(fetch_size, int) or fetch_size < 1):
            raise InvalidInputError("fetch_size", f"must be a positive integer, got {fetch_size!r}")

    def export_rows(
        self,
        sql: str,
        destination: Destination,
        *,
        file_format: FileFormat = "csv",
        parameters: Mapping[str, Any] | Iterable[Any] | None = None,
        filename: str = "result",
        header: bool = True,
        transfer: Transfer = "cursor",
    ) -> dict[str, Any]:
        """Stream a ``SELECT``'s rows to ``destination`` through a server-side cursor, atomically.

        Rows are fetched ``fetch_size`` at a time (``DECLARE ... CURSOR`` / ``FETCH``) and written
        as they come, so memory stays flat whatever the result's size. The file is written under a
        temporary name and moved into place only when every row is in it. A session that ends
        because its token expired is reopened once with a fresh token and the statement run again
        (the file starts over); any other lost session is an error.

        :param sql: one ``SELECT`` statement.
        :param destination: a local path or object-storage URI; one ending in ``/`` is a folder
            (the file is then ``<filename>.<format>`` in it).
        :param file_format: ``csv`` (the server's text of each value, as ``COPY ... CSV`` writes
            it; NULL is an empty field), ``jsonl`` (one JSON object a row) or ``parquet`` (one
            row group a ``FETCH``; column types from the result's type OIDs, see
            ``docs/adobe_sql.md``; needs pyarrow, in the ``adobe-sql`` extra).
        :param parameters: query parameters (psycopg2 ``%s`` / ``%(name)s`` placeholders).
        :param filename: the file's name (without extension) when ``destination`` is a folder.
        :param header: whether a CSV starts with the column names (CSV only).
        :param transfer: ``cursor`` (``DECLARE``/``FETCH``, documented by Adobe for streaming),
            ``copy`` (``COPY (<sql>) TO STDOUT WITH (FORMAT csv)``: the server writes the CSV,
            several times faster; Adobe does not document ``COPY ... TO STDOUT``, so a server
            that refuses it fails the task saying to use ``cursor``) or ``auto`` (``copy`` for a
            CSV without ``parameters``, and the cursor, the file started over, when the server
            refuses ``COPY`` with ``0A000`` or ``42601``; the cursor for everything else).
            ``copy`` takes no ``parameters`` and writes CSV only. The record's ``transfer`` says
            which one ran.
        :return: the fetch record (``uri``, ``bytes``, ``sha256``, ``lines``, ``source``) plus
            ``rows``, ``columns``, ``format`` and ``transfer``. ``columns`` is the result's
            column names; when COPY ran without a header it is ``None`` (not known: COPY sends
            no column description, and a second query to learn them could meet Query Service's
            limits). ``lines`` is ``None`` for Parquet
            (a binary file has no lines; ``rows`` counts the rows).
        :raises SqlLimitError: ``53400`` (10 minutes, ``LIMIT`` over 100,000).
        :raises SqlRowCapError: exactly 50,000 rows from a SELECT without ``LIMIT``.
        :raises SqlAuthenticationError: ``28P01`` twice.
        :raises SqlConnectionLostError: the session ended for another reason.
        """
        self.validate_export(file_format, transfer=transfer)
        if transfer == "copy" and parameters:
            raise InvalidInputError("parameters", "transfer='copy' takes none: use transfer='cursor'")
        # What runs: COPY where asked for, or where "auto" can (CSV, no parameters to bind).
        used = (
            "copy"
            if transfer == "copy" or (transfer == "auto" and file_format == "csv" and not parameters)
            else "cursor"
        )
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidInputError("sql", "give one SELECT statement")
        target = AtomicTarget(destination_for(destination, f"{filename}.{file_format}"))
        try:
            for attempt in (1, 2):
                connection, password = self._connect()
                writer = _RecordWriter(target.open())
                try:
                    if used == "copy":
                        try:
                            rows, columns = self._copy(connection, sql, writer, header)
                        except SqlInterfaceError as exc:
                            if transfer != "auto" or exc.sqlstate not in COPY_REFUSED:
                                raise
                            # The same SELECT through the cursor, into a fresh file: the row
                            # count and its cap check are the cursor's, as if asked for.
                            self.log.info("%s; transfer='auto' streams through a server-side cursor", exc)
                            used = "cursor"
                            writer.abandon()
                            connection.rollback()
                            writer = _RecordWriter(target.open())
                            rows, columns = self._stream(
                                connection, sql, parameters, writer, file_format, header
                            )
                    else:
                        rows, columns = self._stream(connection, sql, parameters, writer, file_format, header)
                    writer.close()
                    break
                except Exception as exc:
                    writer.abandon()
                    error = translate_error(exc, rows=writer.rows)
                    if (
                        isinstance(error, SqlConnectionLostError | SqlAuthenticationError)
                        and attempt == 1
                        and self._token_was_replaced(password)
                    ):
                        self.log.info(
                            "The session ended after %d rows and its token had expired; "
                            "reconnecting once with a fresh token and running the statement again",
                            writer.rows,
                        )
                        continue
                    if error is exc:
                        raise
                    raise error from None
                finally:
                    connection.close()
            if rows == SQL_ROW_CAP and not HAS_LIMIT.search(sql):
                raise row_cap_error()
            target.commit()
        except BaseException:
            target.discard()
            raise
        record = FetchRecord(
            uri=target.uri,
            bytes=writer.size,
            sha256=writer.sha.hexdigest(),
            lines=writer.lines,
            source=f"{ADOBE_SCHEME}://{self.rest_hook.settings.org_id}/{self.rest_hook.settings.sandbox}",
        ).to_dict()
        record.update(rows=rows, columns=columns, format=file_format, transfer=used)
        if file_format == "parquet":
            record["lines"] = None
        self.log.info("Exported %d rows -> %s (%d bytes)", rows, record["uri"], record["bytes"])
        return record

    def _stream(
        self,
        connection: Any,
        sql: str,
        parameters: Any,
        writer: _RecordWriter,
        file_format: str,
        header: bool,
    ) -> tuple[int, list[str] | None]:
        import psycopg2.extensions

        # A named cursor is a server-side cursor (DECLARE ... CURSOR, FETCH FORWARD n): it lives
        # in a transaction, so autocommit stays off; the transaction only reads.
        connection.autocommit = False
        cursor = connection.cursor(name=f"querytasks_{uuid.uuid4().hex[:12]}")
        cursor.itersize = self.fetch_size
        if file_format == "csv":
            # Every value as the server's text (no Python objects in between): what COPY ... CSV
            # writes, at a fraction of the cost.
            _register_text(cursor, tuple(psycopg2.extensions.string_types))
        elif file_format == "parquet":
            _register_text(cursor, parquet_text_oids())
        self.log.info("Streaming the rows of: %s", sql)
        cursor.execute(sql, parameters)
        rows = 0
        columns: list[str] = []
        encode: Any = None
        batches = _prefetched(cursor, self.fetch_size)
        try:
            for batch in batches:
                if encode is None:
                    description = list(cursor.description or ())
                    columns = [str(column[0]) for column in description]
                    if file_format == "csv":
                        encode = _csv_encoder(writer, columns, header)
                    elif file_format == "parquet":
                        encode = _parquet_encoder(writer, description)
                    else:
                        encode = _jsonl_encoder(writer, columns)
                # The last, empty batch ends the file (Parquet writes its footer).
                encode(batch)
                rows += len(batch)
                writer.rows = rows
        finally:
            batches.close()  # waits for a FETCH in flight: the connection is closed after this
        cursor.close()
        connection.rollback()
        return rows, columns

    def _copy(
        self, connection: Any, sql: str, writer: _RecordWriter, header: bool
    ) -> tuple[int, list[str] | None]:
        """``COPY (<sql>) TO STDOUT`` into ``writer`` through a 1 MiB buffer (psycopg2 writes
        each row's line on its own).

        The column names are the header's (the first CSV record, parsed as the server wrote
        it); without a header they are not known (``None``): COPY sends no description."""
        import psycopg2

        statement = sql.strip().rstrip(";")
        # The newline ends a trailing "-- comment" before the closing parenthesis.
        copy = f"COPY ({statement}\n) TO STDOUT WITH (FORMAT csv, HEADER {'true' if header else 'false'})"
        self.log.info("Copying the rows of: %s", statement)
        first = _FirstRecord(writer) if header else None
        buffered = io.BufferedWriter(first or writer, buffer_size=1 << 20)
        with connection.cursor() as cursor:
            try:
                cursor.copy_expert(copy, buffered)
            except psycopg2.Error as exc:
                if sqlstate_of(exc) in COPY_REFUSED:
                    raise SqlInterfaceError(
                        f"The server refused COPY ... TO STDOUT ({sqlstate_of(exc)}: "
                        f"{str(exc).strip().splitlines()[0]}): use transfer='cursor' or 'auto'",
                        sqlstate=sqlstate_of(exc),
                    ) from None
                raise
            buffered.flush()
            rows = int(cursor.rowcount)
        writer.rows = rows
        connection.rollback()
        return rows, (first.columns() if first is not None else None)


class _FirstRecord(io.RawIOBase):
    """Passes every write on to ``out``, keeping the bytes up to the end of the first CSV
    record (the header COPY writes; a quoted name may hold a line break)."""

    def __init__(self, out: _RecordWriter) -> None:
        super().__init__()
        self.out = out
        self.head = bytearray()
        self.complete = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = self.out.write(data)
        view = memoryview(data).cast("B")
        # 64 KiB at a time: the header is kept, not the megabyte written with it.
        for offset in range(0, len(view), 1 << 16):
            if self.complete:
                break
            start = len(self.head)
            self.head += view[offset : offset + (1 << 16)]
            end = self.head.find(b"\n", start)
            while end != -1:
                # A line feed ends the record where the quotes before it are balanced.
                if self.head.count(b'"', 0, end) % 2 == 0:
                    del self.head[end + 1 :]
                    self.complete = True
                    break
                end = self.head.find(b"\n", end + 1)
        return written

    def columns(self) -> list[str]:
        """The header's column names, parsed as CSV (``[]`` if nothing was written)."""
        text = bytes(self.head).decode("utf-8")
        return next(csv.reader(io.StringIO(text, newline="")), [])


def _register_text(cursor: Any, oids: tuple[int, ...]) -> None:
    """Have ``cursor`` return the server's text for ``oids`` (psycopg2's C-level text caster)."""
    import psycopg2.extensions

    text = psycopg2.extensions.new_type(oids, "QT_TEXT", psycopg2.extensions.UNICODE)
    psycopg2.extensions.register_type(text, cursor)


def _prefetched(cursor: Any, size: int) -> Generator[list[tuple[Any, ...]], None, None]:
    """The cursor's batches, up to and including the last, empty one. The next batch is fetched
    on a helper thread while the caller writes this one: psycopg2 releases the GIL while the
    server answers a ``FETCH``, so the server's work and the writing overlap.

    Close the generator before the connection: that waits for the ``FETCH`` in flight."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="querytasks-sql-fetch")
    try:
        pending = pool.submit(cursor.fetchmany, size)
        while True:
            batch = pending.result()
            if not batch:
                yield batch
                return
            pending = pool.submit(cursor.fetchmany, size)
            yield batch
    finally:
        pool.shutdown(wait=True)


#: What makes COPY ... CSV quote a value (besides the empty string, and ``\.`` alone on a line).
CSV_SPECIAL = re.compile(r'[,"\n\r]')


def _csv_line(row: Sequence[Any], single: bool) -> str:
    """One row as ``COPY ... CSV`` writes it: NULL empty, an empty string ``""``, a value with a
    comma, quote or line break quoted (quotes doubled)."""
    fields = []
    for value in row:
        if value is None:
            fields.append("")
            continue
        text = str(value)
        if not text or CSV_SPECIAL.search(text) or (single and text == "\\."):
            text = '"' + text.replace('"', '""') + '"'
        fields.append(text)
    return ",".join(fields) + "\n"


def _csv_encoder(writer: _RecordWriter, columns: list[str], header: bool) -> Any:
    """Writes batches of text values byte for byte as ``COPY ... CSV`` does.

    csv.writer (C) writes most batches; it differs from COPY only for an empty string (not
    quoted: the same as NULL), a ``\\r`` without ``\\n`` (not quoted) and a one-column row
    (NULL quoted), so a batch holding one of those is written by :func:`_csv_line` instead.
    """
    buffer = io.StringIO()
    csv_writer = csv.writer(buffer, lineterminator="\n")
    single = len(columns) == 1

    def encode(batch: list[tuple[Any, ...]]) -> None:
        text = None
        if not single and "" not in itertools.chain.from_iterable(batch):
            csv_writer.writerows(batch)
            text = buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if "\r" in text:
                text = None
        if text is None:
            text = "".join([_csv_line(row, single) for row in batch])
        writer.write(text.encode("utf-8"))

    if header:
        writer.write(_csv_line(columns, single).encode("utf-8"))
    return encode


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        # A number when it is exactly one; else its digits as text (never silently rounded).
        as_float = float(value)
        return as_float if value.is_finite() and Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def _jsonl_encoder(writer: _RecordWriter, columns: list[str]) -> Any:
    encoder = json.JSONEncoder(default=_json_value, ensure_ascii=False, separators=(",", ":"))

    def encode(batch: list[tuple[Any, ...]]) -> None:
        lines = "".join(encoder.encode(dict(zip(columns, row, strict=True))) + "\n" for row in batch)
        writer.write(lines.encode("utf-8"))

    return encode


# -- Parquet --------------------------------------------------------------------------------
#: PostgreSQL's built-in type OIDs (pg_type.oid, fixed since PostgreSQL 7) that Parquet keeps typed.
PG_BOOL, PG_BYTEA, PG_INT8, PG_INT2, PG_INT4 = 16, 17, 20, 21, 23
PG_FLOAT4, PG_FLOAT8 = 700, 701
PG_DATE, PG_TIMESTAMP, PG_TIMESTAMPTZ = 1082, 1114, 1184
PG_NUMERIC, PG_JSON, PG_JSONB = 1700, 114, 3802
#: Those read as psycopg2's Python values (int, float, bool, bytes, date, datetime); every other
#: column is read as the server's text.
PARQUET_TYPED_OIDS = frozenset(
    {
        PG_BOOL,
        PG_BYTEA,
        PG_INT8,
        PG_INT2,
        PG_INT4,
        PG_FLOAT4,
        PG_FLOAT8,
        PG_DATE,
        PG_TIMESTAMP,
        PG_TIMESTAMPTZ,
    }
)
#: The widest numeric decimal128 holds.
DECIMAL128_DIGITS = 38


def parquet_text_oids() -> tuple[int, ...]:
    """The OIDs a Parquet export reads as text: numeric (exact digits), json/jsonb (not parsed)
    and every type psycopg2 would turn into something else (arrays, intervals, ranges...)."""
    import psycopg2.extensions

    known = set(psycopg2.extensions.string_types) | {PG_NUMERIC, PG_JSON, PG_JSONB}
    return tuple(sorted(known - PARQUET_TYPED_OIDS))


def arrow_type(type_code: int, precision: int | None, scale: int | None) -> Any:
    """The Arrow type a Parquet export stores a column of PostgreSQL type ``type_code`` as.

    numeric with a known precision (1 to 38) and scale becomes ``decimal128``; any other numeric,
    json, jsonb and every type not listed below, a string (the server's text).

    :param type_code: the column's type OID (``cursor.description``).
    :param precision: numeric's declared precision, else ``None`` (or psycopg2's 65535).
    :param scale: numeric's declared scale, else ``None``.
    """
    import pyarrow as pa

    if type_code == PG_NUMERIC:
        if precision and scale is not None and 0 <= scale <= precision <= DECIMAL128_DIGITS:
            return pa.decimal128(precision, scale)
        return pa.string()
    simple = {
        PG_BOOL: pa.bool_(),
        PG_BYTEA: pa.binary(),
        PG_INT2: pa.int16(),
        PG_INT4: pa.int32(),
        PG_INT8: pa.int64(),
        PG_FLOAT4: pa.float32(),
        PG_FLOAT8: pa.float64(),
        PG_DATE: pa.date32(),
        PG_TIMESTAMP: pa.timestamp("us"),
        PG_TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    }
    return simple.get(type_code, pa.string())


def _parquet_encoder(
    writer: _RecordWriter, description: Sequence[Any]
) -> Callable[[list[tuple[Any, ...]]], None]:
    """Writes each batch as one Parquet row group; an empty batch closes the file (its footer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [pa.field(str(column[0]), arrow_type(column[1], column[4], column[5])) for column in description]
    )
    parquet = pq.ParquetWriter(writer, schema)

    def array(values: Sequence[Any], field: Any) -> Any:
        if pa.types.is_decimal(field.type):
            # The server's digits, cast: a value the type cannot hold (NaN, more digits) is an
            # error, never rounded.
            try:
                return pa.array(values, pa.string()).cast(field.type)
            except pa.ArrowInvalid as exc:
                raise SqlInterfaceError(
                    f"Column {field.name!r} holds a value Parquet's {field.type} cannot hold "
                    f"exactly ({exc}): cast the column to text in the SELECT"
                ) from None
        return pa.array(values, field.type)

    def encode(batch: list[tuple[Any, ...]]) -> None:
        if not batch:
            parquet.close()
            return
        columns = list(zip(*batch, strict=True))
        parquet.write_batch(
            pa.record_batch(
                [array(values, field) for values, field in zip(columns, schema, strict=True)], schema=schema
            )
        )

    return encode


class _RecordWriter(io.RawIOBase):
    """Writes to the temporary file, hashing, counting bytes and lines on the way."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0
        self.newlines = 0
        self.last = b"\n"
        self.rows = 0
        self.abandoned = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if not data or self.abandoned:  # a Parquet writer may flush its footer when collected
            return len(data)
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
        self.newlines += data.count(b"\n")
        self.last = data[-1:]
        return len(data)

    @property
    def lines(self) -> int:
        return self.newlines + (0 if self.last == b"\n" else 1)

    def close(self) -> None:
        if not self.out.closed:
            self.out.close()
        super().close()

    def abandon(self) -> None:
        self.abandoned = True
        with contextlib.suppress(Exception):  # the error being handled matters more
            self.close()
