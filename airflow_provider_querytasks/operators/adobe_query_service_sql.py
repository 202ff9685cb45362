"""Rows of a Query Service ``SELECT`` to a file, over its PostgreSQL interface.

For statements and data-quality checks use common.sql's operators as they are
(``SQLExecuteQueryOperator``, ``SQLColumnCheckOperator``, ``SQLTableCheckOperator``, ...) with an
``adobe_query_service_sql`` connection: they find ``AdobeQueryServiceSqlHook`` through the
connection type. Needs the ``adobe-sql`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.hooks.adobe_query_service_sql import (
    FORMATS,
    AdobeQueryServiceSqlHook,
    FileFormat,
    Transfer,
)
from airflow_provider_querytasks.operators.base import FailWithoutRetryMixin

if TYPE_CHECKING:
    from airflow_provider_querytasks.common.transport.fetch import Destination
    from airflow_provider_querytasks.compat import Context


class AdobeSqlToFileOperator(FailWithoutRetryMixin, SQLExecuteQueryOperator):
    """Stream the rows of one ``SELECT`` on Query Service to a file (CSV, JSON Lines or Parquet).

    The rows come through a server-side cursor (``DECLARE ... CURSOR`` / ``FETCH``), a
    ``fetch_size`` at a time, and are written as they come under a temporary name, moved into
    place when complete; memory stays flat. The XCom value is the fetch record the other fetches
    return (``uri``, ``bytes``, ``sha256``, ``lines``, ``source``) with ``rows``, ``columns``,
    ``format`` and ``transfer``: never the data (``lines`` is ``None`` for Parquet; ``columns``
    is ``None`` when COPY wrote a CSV without header: not known). Query
    Service's interactive limits apply (10 minutes per statement, ``LIMIT`` at most 100,000,
    50,000 rows without ``LIMIT``): a statement that meets one fails with an error saying what to
    do (``docs/adobe_sql.md``). OpenLineage: the tables read (common.sql's parser, named as
    ``AdobeQueryOperator`` names them) and the file written.

    :param sql: one ``SELECT`` (templated; a ``.sql`` file name is read as a template).
    :param destination: a local path or object-storage URI (templated); one ending in ``/`` is a
        folder, the file then being ``<filename>.<file_format>``.
    :param file_format: ``csv``, ``jsonl`` or ``parquet`` (one row group a ``FETCH``, column types
        from the result's; the mapping is in ``docs/adobe_sql.md``).
    :param filename: the file's name without extension in a folder destination (templated;
        default ``<dag_id>__<task_id>__<run_id>``, made safe for a file name).
    :param parameters: query parameters for psycopg2's ``%s`` / ``%(name)s`` placeholders (templated).
    :param header: whether a CSV file starts with the column names (CSV only).
    :param fetch_size: rows per ``FETCH`` round trip.
    :param transfer: ``cursor`` (server-side cursor, the default), ``copy`` (``COPY ... TO
        STDOUT``, CSV only, no ``parameters``: faster, but not documented by Adobe; see
        ``docs/adobe_sql.md``) or ``auto`` (``copy`` where it can run, the cursor where the
        server refuses it or for other formats or ``parameters``).
    :param conn_id: an ``adobe_query_service_sql`` connection (or ``adobe_experience_platform``).
    :param database: the database, default ``<sandbox>:all`` (templated).
    """

    template_fields: Sequence[str] = (*SQLExecuteQueryOperator.template_fields, "destination", "filename")
    template_ext: Sequence[str] = (".sql",)
    ui_color = "#e8f0ff"

    def __init__(
        self,
        *,
        sql: str,
        destination: Destination,
        file_format: FileFormat = "csv",
        filename: str | None = None,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        header: bool = True,
        fetch_size: int = 10_000,
        transfer: Transfer = "cursor",
        conn_id: str = AdobeQueryServiceSqlHook.default_conn_name,
        database: str | None = None,
        **kwargs: Any,
    ) -> None:
        AdobeQueryServiceSqlHook.validate_export(file_format, fetch_size, transfer)
        if not isinstance(header, bool):
            raise InvalidInputError("header", f"must be True or False, got {header!r}")
        hook_params = {**(kwargs.pop("hook_params", None) or {}), "fetch_size": fetch_size}
        super().__init__(
            sql=sql,
            parameters=parameters,
            conn_id=conn_id,
            database=database,
            hook_params=hook_params,
            **kwargs,
        )
        self.destination = destination
        self.file_format = file_format
        self.filename = filename
        self.header = header
        self.fetch_size = fetch_size
        self.transfer = transfer
        self._record: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        if not isinstance(self.sql, str) or not self.sql.strip():
            raise InvalidInputError("sql", "give one SELECT statement (a string)")
        if not str(self.destination or "").strip():
            raise InvalidInputError("destination", "must be a local path or an object storage URI")
        if self.file_format not in FORMATS:
            raise InvalidInputError("file_format", f"{self.file_format!r} is not one of {', '.join(FORMATS)}")
        hook = self.get_db_hook()
        if not isinstance(hook, AdobeQueryServiceSqlHook):
            raise InvalidInputError(
                "conn_id",
                f"connection {self.conn_id!r} gives a {type(hook).__name__}; "
                "use an adobe_query_service_sql connection",
            )
        filename = self.filename or _safe_name(
            f"{self.dag_id}__{self.task_id}__{context.get('run_id') or 'manual'}"
        )
        self._record = hook.export_rows(
            self.sql,
            self.destination,
            file_format=self.file_format,
            parameters=self.parameters,
            filename=filename,
            header=self.header,
            transfer=self.transfer,
        )
        return self._record

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """common.sql's lineage (the tables read) plus the file written."""
        lineage = super().get_openlineage_facets_on_complete(task_instance)
        if lineage is None or not self._record:
            return lineage
        from airflow_provider_querytasks.lineage import file_dataset

        lineage.outputs = [*lineage.outputs, file_dataset(self._record["uri"])]
        return lineage


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
