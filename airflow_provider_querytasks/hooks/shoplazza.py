"""Hook for Shoplazza OpenAPI 2022-01 data query tasks."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_provider_querytasks.common.api.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.transport.clients import RetryPolicy
from airflow_provider_querytasks.common.transport.fetch import Destination, fetch_url
from airflow_provider_querytasks.common.transport.token_store import AirflowVariableTokenStore
from airflow_provider_querytasks.common.transport.tokens import TokenSource
from airflow_provider_querytasks.compat import Connection
from airflow_provider_querytasks.connection_forms import SHOPLAZZA_FORM
from airflow_provider_querytasks.hooks.base import QueryTaskHook
from airflow_provider_querytasks.protocols.shoplazza import (
    MAX_PAGE_SIZE,
    ShoplazzaApi,
    ShoplazzaSettings,
    ShoplazzaTokenSource,
    listed_task_snapshot,
    result_url,
    task_snapshot,
    validate_event,
)


class ShoplazzaHook(QueryTaskHook[ShoplazzaSettings, ShoplazzaApi]):
    """Shoplazza data query tasks: create, read, list and count tasks, download their CSV.

    The connection (type ``shoplazza``) holds the shop in *host* (``mystore`` or
    ``mystore.myshoplaza.com``) and a private-app access token in *password*; a public app sets
    the ``client_id``, ``client_secret`` and ``refresh_token`` extras instead. ``endpoint``
    replaces ``https://<shop>`` (e.g. an emulator on 127.0.0.1) and ``api_version`` the
    ``2022-01`` in paths.

    Shoplazza has no endpoint to cancel a task: :meth:`cancel_query` only logs.

    :param conn_id: the Airflow connection id (``shoplazza_default``).
    :param retry: retry policy for API calls.
    :param timeout: (connect, read) timeout of one HTTP call, seconds.
    :param url_grace: how long a complete task may lack its result URL before it counts as failed.
    """

    default_conn_name = "shoplazza_default"
    conn_type = "shoplazza"
    hook_name = "Shoplazza"
    form = SHOPLAZZA_FORM

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        url_grace: float = 300.0,
    ) -> None:
        super().__init__(conn_id, retry=retry, timeout=timeout)
        self.url_grace = url_grace
        self._complete_without_url: dict[str, float] = {}

    # -- connection ---------------------------------------------------------------------------
    def build_settings(self, conn: Connection, extra: dict[str, Any]) -> ShoplazzaSettings:
        return ShoplazzaSettings.build(
            shop=conn.host,
            access_token=conn.password,
            api_version=self.extra_value(extra, "api_version"),
            endpoint=self.extra_value(extra, "endpoint"),
            client_id=self.extra_value(extra, "client_id"),
            client_secret=self.extra_value(extra, "client_secret"),
            refresh_token=self.extra_value(extra, "refresh_token"),
        )

    def build_api(self, settings: ShoplazzaSettings) -> ShoplazzaApi:
        return ShoplazzaApi(settings)

    def build_token_source(self, settings: ShoplazzaSettings) -> TokenSource | None:
        return ShoplazzaTokenSource(settings, AirflowVariableTokenStore()) if settings.uses_oauth else None

    def static_token(self, settings: ShoplazzaSettings) -> str | None:
        return None if settings.uses_oauth else settings.access_token

    def check_connection(self) -> str:
        return f"{self.settings.shop}: {self.count_tasks()} data query tasks"

    def describe_query(self, query_id: str) -> str:
        return f"Shoplazza data task {query_id}"

    # -- tasks --------------------------------------------------------------------------------
    def create_task(self, event: str, begin_time: str, end_time: str) -> str:
        """Create a data query task; returns its ``query_id``.

        Not idempotent (every call creates a task): never re-sent after an ambiguous failure.
        Times are sent as given (``YYYY-MM-DDTHH:MM:SS``, see
        :func:`~airflow_provider_querytasks.protocols.shoplazza.split_window`).
        """
        validate_event(event)
        return self.run(ShoplazzaApi.create_task, event, begin_time, end_time)

    def get_task(self, query_id: str) -> dict[str, Any]:
        """One task (``query_id``, ``query_status``, ``query.url``); an empty id is refused."""
        return self.run(ShoplazzaApi.get_task, query_id)

    async def aget_task(self, query_id: str) -> dict[str, Any]:
        return await self.arun(ShoplazzaApi.get_task, query_id)

    def list_tasks(self, page: int = 1, limit: int = 20) -> list[dict[str, Any]]:
        """One page of the store's tasks (``limit`` at most 250)."""
        return self.run(ShoplazzaApi.list_tasks, page, limit)

    def iter_tasks(self, limit: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Every task, page by page (the list has no cursor: a short page is the last one)."""
        page = 1
        while True:
            items = self.list_tasks(page, limit)
            yield from items
            if len(items) < limit:
                return
            page += 1

    def shop_timezone(self) -> str | None:
        """The shop's ``timezone`` as ``GET /shop`` reports it (``"+0800"``: an offset from UTC),
        or ``None`` when the shop cannot be read (no ``read_shop`` scope, no such field)."""
        try:
            return self.run(ShoplazzaApi.get_shop_timezone)
        except (PermissionDeniedError, NotFoundError, AuthenticationError) as exc:
            self.log.warning("Could not read the shop's time zone: %s", exc)
            return None

    def count_tasks(self) -> int:
        """Number of data query tasks in the store."""
        return self.run(ShoplazzaApi.count_tasks)

    # -- waiting ------------------------------------------------------------------------------
    def _snapshot(self, query_id: str, task: dict[str, Any]) -> StatusSnapshot:
        snapshot = task_snapshot(query_id, task)
        if snapshot.remote_status == 2 and snapshot.state is QueryState.RUNNING:
            first_seen = self._complete_without_url.setdefault(query_id, time.monotonic())
            waited = time.monotonic() - first_seen
            if waited >= self.url_grace:
                return StatusSnapshot(
                    query_id,
                    QueryState.FAILED,
                    2,
                    raw=task,
                    message=f"complete but without a result URL for {waited:.0f} s; the task: {task}",
                )
            return task_snapshot(query_id, task, url_missing_for=waited)
        self._complete_without_url.pop(query_id, None)
        return snapshot

    def get_status(self, query_id: str) -> StatusSnapshot:
        return self._snapshot(query_id, self.get_task(query_id))

    async def aget_status(self, query_id: str) -> StatusSnapshot:
        return self._snapshot(query_id, await self.aget_task(query_id))

    async def alist_statuses(self, wanted: Mapping[str, float]) -> dict[str, StatusSnapshot] | None:
        """The wanted tasks the task list shows (coalesced polling; see ``docs/design/shoplazza.md``).

        The list takes no filter, so the wait start times are not used: it is read 250 tasks a
        page from the newest, at most 4 pages. A complete task listed without its URL is left
        out (polled on its own).
        """
        tasks = await self.arun(ShoplazzaApi.find_tasks, list(wanted))
        snapshots = {query_id: listed_task_snapshot(query_id, task) for query_id, task in tasks.items()}
        return {query_id: snapshot for query_id, snapshot in snapshots.items() if snapshot is not None}

    def cancel_query(self, query_id: str) -> None:
        self.log.warning(
            "Shoplazza has no endpoint to cancel a data task: %s keeps running remotely", query_id
        )

    async def acancel_query(self, query_id: str) -> None:
        self.cancel_query(query_id)

    # -- results ------------------------------------------------------------------------------
    def result_url(self, query_id: str) -> str:
        """The current result URL of a complete task.

        :raises RemoteQueryFailedError: when the task is not complete or has no URL.
        """
        task = self.get_task(query_id)
        url = result_url(task) if task.get("query_status") == 2 else None
        if url is None:
            raise RemoteQueryFailedError(
                f"{self.describe_query(query_id)} has no result yet (query_status "
                f"{task.get('query_status')!r}); wait for it to complete first",
                platform=self.conn_type,
                detail=task,
            )
        return url

    def download_result(self, query_id: str, destination: Destination) -> dict[str, Any]:
        """Stream a task's CSV to ``destination`` (a path, URI or ``ObjectStoragePath``).

        The result lives on object storage, not on the shop: no Shoplazza header is sent. A
        refused (expired) URL is replaced once by reading the task again. gzip is decoded, and
        the file appears under its final name only when complete.

        :return: the fetch record (uri, bytes, sha256, lines, source without query string); the
            CSV's data ``rows`` are ``lines - 1``, assuming a header row.
        """
        record = fetch_url(
            lambda: self.result_url(query_id), destination, retry=self.retry, timeout=(10.0, 300.0)
        ).to_dict()
        # Assumes a header row (the documented export is a table; whether it has one is unknown).
        record["rows"] = max(0, record["lines"] - 1)
        return record
