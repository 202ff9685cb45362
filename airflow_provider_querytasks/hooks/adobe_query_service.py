"""Hook for Adobe Experience Platform Query Service (with the Catalog and Data Access it needs)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_querytasks.common.api.errors import (
    ApiError,
    InvalidInputError,
    QueryTimeoutError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.transport.fetch import Destination, fetch_url, in_folder
from airflow_provider_querytasks.common.transport.tokens import TokenSource
from airflow_provider_querytasks.common.wait.loop import PollSchedule, WaitLoop
from airflow_provider_querytasks.compat import Connection
from airflow_provider_querytasks.connection_forms import ADOBE_EXPERIENCE_PLATFORM_FORM
from airflow_provider_querytasks.hooks.base import QueryTaskHook
from airflow_provider_querytasks.protocols.adobe_query_service import (
    DEFAULT_PAGE_CAP,
    AdobeApi,
    AdobeQueryDefinition,
    AdobeSettings,
    ImsTokenSource,
    batch_snapshot,
    iso_seconds,
    listed_query_snapshot,
    new_run,
    query_snapshot,
    run_snapshot,
)


class AdobeQueryServiceHook(QueryTaskHook[AdobeSettings, AdobeApi]):
    """Query Service queries, templates and schedules; Catalog batches; Data Access files.

    The connection (type ``adobe_experience_platform``) holds the OAuth server-to-server client
    id in *login*, its secret in *password*, and the ``org_id``, ``sandbox`` (default ``prod``),
    ``scopes``, ``endpoint`` and ``ims_endpoint`` extras. Every call
    carries ``Authorization``, ``x-api-key``, ``x-gw-ims-org-id`` and ``x-sandbox-name``; TLS is
    always verified.

    :param conn_id: the Airflow connection id (``adobe_experience_platform_default``).
    :param retry: retry policy for API calls.
    :param timeout: (connect, read) timeout of one HTTP call, seconds.
    """

    default_conn_name = "adobe_experience_platform_default"
    conn_type = "adobe_experience_platform"
    hook_name = ADOBE_EXPERIENCE_PLATFORM_FORM.hook_name
    form = ADOBE_EXPERIENCE_PLATFORM_FORM

    # -- connection ---------------------------------------------------------------------------
    def build_settings(self, conn: Connection, extra: dict[str, Any]) -> AdobeSettings:
        return AdobeSettings.build(
            client_id=conn.login,
            client_secret=conn.password,
            org_id=self.extra_value(extra, "org_id"),
            sandbox=self.extra_value(extra, "sandbox"),
            scopes=self.extra_value(extra, "scopes"),
            endpoint=self.extra_value(extra, "endpoint"),
            ims_endpoint=self.extra_value(extra, "ims_endpoint"),
        )

    def build_api(self, settings: AdobeSettings) -> AdobeApi:
        return AdobeApi(settings)

    def build_token_source(self, settings: AdobeSettings) -> TokenSource | None:
        return ImsTokenSource(settings)

    def check_connection(self) -> str:
        listing = self.run(AdobeApi.list_queries, limit=1, max_pages=1)
        return (
            f"Query Service reachable in sandbox {self.settings.sandbox} ({len(listing.items)} query shown)"
        )

    def describe_query(self, query_id: str) -> str:
        return f"Adobe query {query_id}"

    # -- queries ------------------------------------------------------------------------------
    def create_query(
        self, definition: AdobeQueryDefinition | None = None, /, **fields: Any
    ) -> dict[str, Any]:
        """Submit SQL (or a template) and return the query object (state ``SUBMITTED``).

        The query is an :class:`AdobeQueryDefinition`, or its fields as keywords
        (``create_query(sql="SELECT 1")``). ``db_name`` defaults to ``<sandbox>:all``.
        ``query_parameters`` are sent as parameters (Adobe substitutes ``$name`` textually: quote
        literals in the SQL). Not idempotent.
        """
        if definition is not None and fields:
            raise InvalidInputError("definition", "give an AdobeQueryDefinition or its fields, not both")
        body = (definition or AdobeQueryDefinition(**fields)).body(self.settings.sandbox)
        return self.run(AdobeApi.create_query, body)

    def get_query(self, query_id: str) -> dict[str, Any]:
        return self.run(AdobeApi.get_query, query_id)

    async def aget_query(self, query_id: str) -> dict[str, Any]:
        return await self.arun(AdobeApi.get_query, query_id)

    def iter_queries(
        self,
        property: str | None = None,
        *,
        orderby: str = "-created",
        limit: int = 50,
        exclude_soft_deleted: bool = True,
        exclude_hidden: bool = True,
        max_pages: int = DEFAULT_PAGE_CAP,
    ) -> Iterator[dict[str, Any]]:
        """Every query matching ``property`` (e.g. ``state==IN_PROGRESS,client==API``), the filter
        sent on every page; a list longer than ``max_pages`` pages fails (never returned in part)."""
        listing = self.run(
            AdobeApi.list_queries,
            property,
            orderby=orderby,
            limit=limit,
            exclude_soft_deleted=exclude_soft_deleted,
            exclude_hidden=exclude_hidden,
            max_pages=max_pages,
        )
        return iter(listing.require_complete())

    def find_submitted_query(self, marker: str, created_after: datetime) -> dict[str, Any] | None:
        """The newest query (any state) whose ``description`` carries ``marker``, created at or
        after ``created_after``; ``None`` when there is none (or no single newest one)."""
        return self.run(AdobeApi.find_submitted_query, marker, created_after)

    def cancel_query(self, query_id: str) -> None:
        """PATCH ``{"op": "cancel"}``; a 409 means it had already ended (not an error)."""
        self._log_patch(query_id, "cancel", self.run(AdobeApi.patch_query, query_id, "cancel"))

    async def acancel_query(self, query_id: str) -> None:
        self._log_patch(query_id, "cancel", await self.arun(AdobeApi.patch_query, query_id, "cancel"))

    def soft_delete_query(self, query_id: str) -> None:
        """Hide a query from the list (its history stays)."""
        self._log_patch(query_id, "soft_delete", self.run(AdobeApi.patch_query, query_id, "soft_delete"))

    def _log_patch(self, query_id: str, op: str, status: int) -> None:
        if status == 409:
            self.log.info("%s: %s refused with 409, the query had already ended", query_id, op)
        else:
            self.log.info("%s: %s requested", self.describe_query(query_id), op)

    def get_status(self, query_id: str) -> StatusSnapshot:
        return query_snapshot(self.get_query(query_id))

    async def aget_status(self, query_id: str) -> StatusSnapshot:
        return query_snapshot(await self.aget_query(query_id))

    async def alist_statuses(self, wanted: Mapping[str, float]) -> dict[str, StatusSnapshot] | None:
        """The wanted queries ``GET /queries`` shows (coalesced polling; see
        ``docs/design/adobe_query_service.md``): created since the earliest wait start (minus 5 min),
        newest first, 100 a page, 10 pages at most. An object lacking what its final state
        needs (a CTAS's created dataset, a failure's errors) is left out (polled on its own)."""
        queries = await self.arun(AdobeApi.find_queries, dict(wanted))
        snapshots = {query_id: listed_query_snapshot(query) for query_id, query in queries.items()}
        return {query_id: snapshot for query_id, snapshot in snapshots.items() if snapshot is not None}

    # -- templates ----------------------------------------------------------------------------
    def create_template(
        self, sql: str, name: str, query_parameters: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return self.run(AdobeApi.create_template, sql, name, query_parameters)

    def get_template(self, template_id: str) -> dict[str, Any]:
        return self.run(AdobeApi.get_template, template_id)

    def list_templates(
        self, limit: int = 50, *, max_pages: int = DEFAULT_PAGE_CAP
    ) -> Iterator[dict[str, Any]]:
        listing = self.run(AdobeApi.list_templates, limit, max_pages=max_pages)
        return iter(listing.require_complete())

    # -- scheduled queries --------------------------------------------------------------------
    def create_schedule(
        self, query_def: AdobeQueryDefinition | dict[str, Any], schedule: dict[str, Any]
    ) -> dict[str, Any]:
        """A scheduled query: ``query_def`` an :class:`AdobeQueryDefinition` (or its body),
        ``schedule`` ``{"schedule": cron, ...}``."""
        if isinstance(query_def, AdobeQueryDefinition):
            query_def = query_def.body(self.settings.sandbox)
        return self.run(AdobeApi.create_schedule, query_def, schedule)

    def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self.run(AdobeApi.get_schedule, schedule_id)

    def list_schedules(
        self, limit: int = 50, *, max_pages: int = DEFAULT_PAGE_CAP
    ) -> Iterator[dict[str, Any]]:
        listing = self.run(AdobeApi.list_schedules, limit, max_pages=max_pages)
        return iter(listing.require_complete())

    def set_schedule_enabled(self, schedule_id: str, enabled: bool) -> None:
        self.run(AdobeApi.set_schedule_state, schedule_id, enabled)

    def list_runs(
        self, schedule_id: str, property: str | None = None, *, max_pages: int = DEFAULT_PAGE_CAP
    ) -> Iterator[dict[str, Any]]:
        listing = self.run(AdobeApi.list_runs, schedule_id, property, max_pages=max_pages)
        return iter(listing.require_complete())

    def trigger_run(
        self, schedule_id: str, *, appear_timeout: float = 120.0, poll: float = 2.0, since: float = 600.0
    ) -> str:
        """Trigger a run now and return its id.

        ``triggerScheduleRun`` answers 202 without a run id, so the schedule's manual runs created
        in the last ``since`` seconds are listed before the trigger, and the one run that appears
        after it (listed again every ``poll`` seconds, then once more to be sure no second one
        came) is this trigger's: never "the newest run", which may be an earlier or another
        task's trigger.

        :raises RemoteQueryFailedError: when several runs appeared (a concurrent trigger), or none
            within ``appear_timeout`` seconds.
        """
        bound = datetime.now(timezone.utc) - timedelta(seconds=since)
        prop = f"externalTrigger==true,created>{iso_seconds(bound)}"
        before = {str(run.get("id")) for run in self.list_runs(schedule_id, prop)}
        self.run(AdobeApi.trigger_run, schedule_id)
        deadline = time.monotonic() + appear_timeout
        found: dict[str, Any] | None = None
        while True:
            run = new_run(before, list(self.list_runs(schedule_id, prop)), schedule_id)
            if run is not None and found is not None:
                return str(run["id"])  # seen twice, and still the only one
            found = run
            if found is None and time.monotonic() >= deadline:
                raise RemoteQueryFailedError(
                    f"Schedule {schedule_id}: no new manual run appeared within {appear_timeout:g} s "
                    "of the trigger",
                    platform=self.conn_type,
                )
            time.sleep(poll)

    def get_run(self, schedule_id: str, run_id: str) -> dict[str, Any]:
        return self.run(AdobeApi.get_run, schedule_id, run_id)

    def get_run_status(self, schedule_id: str, run_id: str) -> StatusSnapshot:
        return run_snapshot(schedule_id, self.get_run(schedule_id, run_id))

    def cancel_run(self, schedule_id: str, run_id: str) -> None:
        self.run(AdobeApi.cancel_run, schedule_id, run_id)

    # -- Catalog ------------------------------------------------------------------------------
    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        objects = self.run(AdobeApi.get_dataset, dataset_id)
        if not objects:
            raise ApiError(f"Catalog has no dataset {dataset_id}", platform=self.conn_type)
        return objects[0]

    def find_dataset_id(self, name: str) -> str | None:
        """The newest dataset called ``name`` (what an INSERT INTO or CTAS wrote to)."""
        found = self.run(AdobeApi.find_datasets, name)
        return found[0]["id"] if found else None

    def latest_batch(self, dataset_id: str, *, created_after_ms: int | None = None) -> dict[str, Any] | None:
        """The newest batch of a dataset (created after ``created_after_ms``), or ``None``."""
        batches = self.run(AdobeApi.list_batches, dataset_id, created_after_ms=created_after_ms, limit=1)
        return batches[0] if batches else None

    def wait_for_batch(
        self,
        dataset_id: str,
        *,
        created_after_ms: int | None = None,
        timeout: float = 900.0,
        poll: float = 10.0,
    ) -> dict[str, Any]:
        """The newest batch once it is ``success`` (Catalog may lag the query's SUCCESS).

        :raises RemoteQueryFailedError: when the batch failed, or none succeeded within ``timeout``.
        """
        loop = WaitLoop(
            f"Newest batch of dataset {dataset_id}",
            PollSchedule(initial=poll, maximum=poll),
            deadline=time.time() + timeout,
            logger=self.log,
        )
        try:
            snapshot = loop.run(
                lambda: batch_snapshot(
                    dataset_id, self.latest_batch(dataset_id, created_after_ms=created_after_ms)
                )
            )
        except QueryTimeoutError as exc:
            raise RemoteQueryFailedError(
                f"No successful batch of dataset {dataset_id} after {timeout:.0f} s ({exc})",
                platform=self.conn_type,
            ) from None
        if snapshot.state is not QueryState.SUCCEEDED:
            raise RemoteQueryFailedError(
                f"Batch {snapshot.raw.get('id')} of dataset {dataset_id} is {snapshot.remote_status}",
                platform=self.conn_type,
                detail=snapshot.raw,
            )
        return snapshot.raw

    # -- Data Access --------------------------------------------------------------------------
    def iter_batch_files(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every file of a batch as ``{"file_id", "name", "length"}``, through pages and directories."""
        return iter(self.run(AdobeApi.batch_files, batch_id))

    def download_file(self, file_id: str, name: str, destination: Destination) -> dict[str, Any]:
        """Stream one Data Access file (Parquet) to ``destination``, atomically.

        The file is on the Platform host, so it needs the credentials (refused for any other
        host); interrupted transfers resume with ``Range`` (the API answers within 60 s).
        """
        request = self.api.file_request(file_id, name)
        headers = {**self.client.credential_headers(request.path, request.operation), **request.headers}
        record = fetch_url(
            request.path,
            destination,
            headers=headers,
            decompress=False,
            retry=self.retry,
            resume_while_progressing=True,
        ).to_dict()
        record.update(file_id=file_id, name=name)
        return record

    def export_batch(self, batch_id: str, folder: Destination) -> list[dict[str, Any]]:
        """Every file of a batch into ``folder`` (``<name>``; names repeated across parts get the file id)."""
        records = []
        seen: set[str] = set()
        for item in self.iter_batch_files(batch_id):
            name = str(item["name"]).rsplit("/", 1)[-1]
            if name in seen:
                name = f"{item['file_id']}-{name}"
            seen.add(name)
            records.append(self.download_file(item["file_id"], str(item["name"]), in_folder(folder, name)))
        return records
