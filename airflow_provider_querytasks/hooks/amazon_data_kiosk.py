"""Hook for the Amazon Selling Partner API Data Kiosk (2023-11-15)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from airflow_provider_querytasks.common.api.errors import (
    QueryCancelledError,
    QueryTaskError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.api.notifications import Decoder
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.api.validation import required_id
from airflow_provider_querytasks.common.transport.fetch import Destination, fetch_url
from airflow_provider_querytasks.common.transport.ratelimit import RateBudget, rate_limiters
from airflow_provider_querytasks.common.transport.tokens import TokenSource
from airflow_provider_querytasks.compat import Connection
from airflow_provider_querytasks.connection_forms import AMAZON_SP_API_FORM
from airflow_provider_querytasks.hooks.base import QueryTaskHook
from airflow_provider_querytasks.protocols.amazon_data_kiosk import (
    DataKioskApi,
    DataKioskSettings,
    LwaTokenSource,
    account_key,
    error_document_message,
    iso_time,
    next_token,
    parse_time,
    query_snapshot,
    read_notification,
    validate_query,
)


class DataKioskHook(QueryTaskHook[DataKioskSettings, DataKioskApi]):
    """Data Kiosk queries: create, read, list, cancel; documents: locate and download.

    The connection (type ``amazon_sp_api``) holds the LWA client id in *login*, the client secret
    in *password*, and the ``refresh_token``, ``region`` (na/eu/fe), ``sandbox``, ``endpoint``,
    ``lwa_endpoint`` and ``selling_partner_id`` extras.

    :param conn_id: the Airflow connection id (``amazon_sp_api_default``).
    :param retry: retry policy for API calls.
    :param timeout: (connect, read) timeout of one HTTP call, seconds.
    """

    default_conn_name = "amazon_sp_api_default"
    conn_type = "amazon_sp_api"
    hook_name = AMAZON_SP_API_FORM.hook_name
    form = AMAZON_SP_API_FORM

    # -- connection ---------------------------------------------------------------------------
    def build_settings(self, conn: Connection, extra: dict[str, Any]) -> DataKioskSettings:
        return DataKioskSettings.build(
            client_id=conn.login,
            client_secret=conn.password,
            refresh_token=self.extra_value(extra, "refresh_token"),
            region=self.extra_value(extra, "region"),
            sandbox=self.extra_value(extra, "sandbox", False),
            endpoint=self.extra_value(extra, "endpoint"),
            lwa_endpoint=self.extra_value(extra, "lwa_endpoint"),
            selling_partner_id=self.extra_value(extra, "selling_partner_id"),
        )

    def build_api(self, settings: DataKioskSettings) -> DataKioskApi:
        return DataKioskApi(settings)

    def build_token_source(self, settings: DataKioskSettings) -> TokenSource | None:
        return LwaTokenSource(settings)

    def check_connection(self) -> str:
        queries, _ = self.run(DataKioskApi.get_queries, page_size=1)
        return f"Data Kiosk reachable ({len(queries)} recent query shown)"

    @classmethod
    def notification_decoder(cls) -> Decoder:
        return read_notification

    def notification_account(self) -> str | None:
        """The connection's ``selling_partner_id`` in the form notifications are compared in
        (:func:`~..protocols.amazon_data_kiosk.account_key`: ``amzn1.merchant.o.`` or
        ``amzn1.vg.`` prefix dropped, upper-case)."""
        return account_key(self.settings.selling_partner_id)

    def describe_query(self, query_id: str) -> str:
        return f"Data Kiosk query {query_id}"

    # -- queries ------------------------------------------------------------------------------
    def create_query(
        self, query: str, pagination_token: str | None = None, *, validate_schema: bool = True
    ) -> str:
        """Submit a GraphQL query (or its next page); returns the ``queryId``.

        Validated first (length, and the shipped schemas unless ``validate_schema=False``). Not
        idempotent: never re-sent after an ambiguous failure.
        """
        validate_query(query, validate_schema=validate_schema)
        return self.run(DataKioskApi.create_query, query, pagination_token)

    def get_query(self, query_id: str) -> dict[str, Any]:
        """The Query object (``processingStatus``, document ids, ``pagination``)."""
        return self.run(DataKioskApi.get_query, query_id)

    async def aget_query(self, query_id: str) -> dict[str, Any]:
        return await self.arun(DataKioskApi.get_query, query_id)

    def iter_queries(
        self,
        processing_statuses: list[str] | None = None,
        *,
        page_size: int = 100,
        created_since: str | None = None,
        created_until: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every query matching the filters, following ``nextToken`` (same filters each page)."""
        token: str | None = None
        while True:
            queries, token = self.run(
                DataKioskApi.get_queries,
                processing_statuses=processing_statuses,
                page_size=page_size,
                created_since=created_since,
                created_until=created_until,
                pagination_token=token,
            )
            yield from queries
            if not token:
                return

    #: getQueries pages a re-attach look-up may read (100 queries each; the plan's burst is 10).
    FIND_PAGES = 5

    def find_submitted_query(self, marker: str, created_after: float) -> dict[str, Any] | None:
        """The query a previous try of this task instance submitted, to re-attach to: the newest
        IN_QUEUE, IN_PROGRESS or DONE query whose operation name carries ``marker``
        (:func:`~..protocols.amazon_data_kiosk.query_marker`) created at or after
        ``created_after``; ``None`` (submit again) when there is none, and also when the walk
        stopped at :attr:`FIND_PAGES` before the end, or when a marked query has a next page
        (result pages repeat the query's text: which page a live query is cannot be told).
        """
        found, complete = self.run(DataKioskApi.find_marked, marker, created_after, self.FIND_PAGES)
        if not complete:
            self.log.warning(
                "Not re-attaching: getQueries lists more than %d pages of queries since %s; submitting again",
                self.FIND_PAGES,
                iso_time(created_after),
            )
            return None
        if any(next_token(query) for query in found):
            self.log.warning(
                "Not re-attaching: a query of this task instance has further result pages, and "
                "which page a listed query is cannot be told; submitting again from the first page"
            )
            return None
        usable = [q for q in found if q.get("processingStatus") in ("IN_QUEUE", "IN_PROGRESS", "DONE")]
        return max(usable, key=lambda q: parse_time(q.get("createdTime")) or 0.0, default=None)

    def cancel_query(self, query_id: str) -> None:
        """Cancel a queued or running query; a finished one is left alone (not an error).

        :raises NotFoundError: for an unknown query (of this account).
        """
        self._log_cancel(query_id, self.run(DataKioskApi.cancel_query, query_id))

    async def acancel_query(self, query_id: str) -> None:
        self._log_cancel(query_id, await self.arun(DataKioskApi.cancel_query, query_id))

    def _log_cancel(self, query_id: str, finished_as: str | None) -> None:
        if finished_as is None:
            self.log.info("Cancelled %s", self.describe_query(query_id))
        else:
            self.log.info(
                "%s was not cancelled: it had already finished (%s)",
                self.describe_query(query_id),
                finished_as,
            )

    # -- waiting ------------------------------------------------------------------------------
    def get_status(self, query_id: str) -> StatusSnapshot:
        return query_snapshot(self.get_query(query_id))

    async def aget_status(self, query_id: str) -> StatusSnapshot:
        return query_snapshot(await self.aget_query(query_id))

    #: A getQueries sweep spends only what the process's getQueries bucket holds beyond this
    #: fraction of its size (kept for the account's other callers: a task's re-attach look-up,
    #: a connection test), and goes at most once per refill interval of that bucket.
    LIST_KEEP = 1 / 3

    async def alist_statuses(self, wanted: Mapping[str, float]) -> dict[str, StatusSnapshot] | None:
        """Snapshots of many of this account's queries from one getQueries sweep (see
        :meth:`DataKioskApi.list_statuses`), or ``None`` when getQueries has no call to spare now
        (its plan allows one call every 45 s: the waits then poll with getQuery).

        :param wanted: query id -> wall-clock time its wait started.
        """
        if not wanted:
            return {}
        bucket = await self._list_bucket()
        if self._sweep_ready_in(bucket) > 0:
            return None
        pages = int(bucket.spare(self.LIST_KEEP))
        return await self.arun(DataKioskApi.list_statuses, wanted, pages)

    async def alist_ready_in(self) -> float:
        """Seconds until :meth:`alist_statuses` may sweep again (see :attr:`LIST_KEEP`)."""
        return self._sweep_ready_in(await self._list_bucket())

    async def _list_bucket(self) -> RateBudget:
        """This process's getQueries bucket for the account."""
        bucket = rate_limiters.budget((await self.aclient()).api, "getQueries")
        assert bucket is not None, "getQueries has a published usage plan"
        return bucket

    def _sweep_ready_in(self, bucket: RateBudget) -> float:
        """Seconds until a sweep may go: a page spare beyond :attr:`LIST_KEEP`, and a refill
        interval since the bucket's last call (0: now)."""
        return max(bucket.until_spare(self.LIST_KEEP), 1 / bucket.rate_now() - bucket.idle_for(), 0.0)

    def failure_error(self, snapshot: StatusSnapshot) -> QueryTaskError:
        """FATAL: the error document's ``errorMessage`` goes into the exception."""
        if snapshot.state is QueryState.CANCELLED:
            return QueryCancelledError(
                f"{self.describe_query(snapshot.query_id)} was CANCELLED",
                platform=self.conn_type,
                detail=snapshot.raw,
            )
        document_id = snapshot.raw.get("errorDocumentId")
        reason = snapshot.message or "no error document"
        if document_id:
            try:
                reason = self.read_error_document(str(document_id))
            except QueryTaskError as exc:
                reason = f"error document {document_id} could not be read: {exc}"
        return RemoteQueryFailedError(
            f"{self.describe_query(snapshot.query_id)} ended {snapshot.remote_status}: {reason}",
            platform=self.conn_type,
            detail=snapshot.raw,
        )

    # -- documents ----------------------------------------------------------------------------
    def get_document(self, document_id: str) -> str:
        """A fresh presigned URL of a data or error document (it expires after 5 minutes)."""
        return self.run(DataKioskApi.get_document, document_id)

    def download_document(self, document_id: str, destination: Destination) -> dict[str, Any]:
        """Stream a document (JSONL data or JSON error) to ``destination``, atomically.

        No SP-API credential is sent to the document host; an expired URL is replaced once by
        calling getDocument again; gzip is decoded.

        :return: the fetch record (``uri``, ``bytes``, ``sha256``, ``lines``, ``source``) plus
            ``document_id`` and ``rows`` (JSON Lines: one record per non-empty line).
        """
        document_id = required_id(document_id, "document_id")
        record = fetch_url(
            lambda: self.get_document(document_id), destination, retry=self.retry, timeout=(10.0, 300.0)
        ).to_dict()
        record.update(document_id=document_id, rows=record["lines"])
        return record

    def read_error_document(self, document_id: str) -> str:
        """The ``errorMessage`` of a FATAL query's error document (or its raw text)."""
        with tempfile.TemporaryDirectory(prefix="querytasks-dk-") as folder:
            path = Path(folder) / "error.json"
            self.download_document(document_id, path)
            return error_document_message(path.read_bytes())
