"""Adobe Experience Platform Query Service, Catalog and Data Access: URLs, payloads, states, IMS.

Written once and executed by the sync and async clients of :mod:`~..common.transport`. Facts and
sources are in ``docs/adobe_query_service.md``.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from airflow_provider_querytasks.common.api.calls import ApiRequest, ApiResponse, PlatformApi
from airflow_provider_querytasks.common.api.errors import ApiError, InvalidInputError, RemoteQueryFailedError
from airflow_provider_querytasks.common.api.operations import Steps, one_call
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.api.validation import path_segment, validate_base_url
from airflow_provider_querytasks.common.transport.tokens import TokenSource

DEFAULT_ENDPOINT = "https://platform.adobe.io"
DEFAULT_IMS_TOKEN_URL = "https://ims-na1.adobelogin.com/ims/token/v3"  # noqa: S105 (a URL)
DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
QUERY = "/data/foundation/query"
CATALOG = "/data/foundation/catalog"
EXPORT = "/data/foundation/export"

#: A query's ``state`` -> the provider's :class:`QueryState`.
ADOBE_QUERY_STATE_TO_QUERY_STATE = {
    "SUBMITTED": QueryState.PENDING,
    "IN_PROGRESS": QueryState.RUNNING,
    "SUCCESS": QueryState.SUCCEEDED,
    "FAILED": QueryState.FAILED,
    "KILLED": QueryState.CANCELLED,
    "TIMEOUT": QueryState.FAILED,
}
#: A scheduled-query run's (and its tasks') ``state`` -> the provider's :class:`QueryState`.
ADOBE_RUN_STATE_TO_QUERY_STATE = {
    "QUEUED": QueryState.PENDING,
    "QUEUED_FOR_RETRY": QueryState.PENDING,
    "IN_PROGRESS": QueryState.RUNNING,
    "SUCCESS": QueryState.SUCCEEDED,
    "FAILED": QueryState.FAILED,
    "CANCELLED": QueryState.CANCELLED,
    "KILLED": QueryState.CANCELLED,
}
#: Catalog batch statuses that mean the batch will never be readable.
BATCH_FAILED = frozenset({"failure", "failed", "aborted", "abandoned", "deleted"})
ORG_ID = re.compile(r"^[A-Za-z0-9]+@AdobeOrg$")
SANDBOX = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
DB_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*:[A-Za-z0-9_.:-]+$")
MAX_PAGE = 100
#: Coalesced polling's list (``GET /queries``): queries a page (the documented maximum is
#: unknown; Adobe's own CLI pages by 100), pages a round at most, and how far before the
#: earliest wait start the ``created`` filter reaches (clock skew between hosts).
LIST_PAGE_SIZE = 100
LIST_PAGE_CAP = 10
LIST_CREATED_MARGIN = 300.0
PARAMETER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Every list walk reads this many pages at most (a walk cut there says so: :class:`Listing`).
DEFAULT_PAGE_CAP = 20
#: Parameters a next link carries as its cursor: never re-added from the first request.
CURSOR_PARAMS = frozenset({"start", "isPrevLink", "page"})
#: The PostgreSQL interface's limits (the API note, section 5.2), as the SQL hook reads them:
#: rows a SELECT without LIMIT returns at most, the largest LIMIT accepted, a statement's seconds,
#: and the SQLSTATE of the last two.
SQL_ROW_CAP = 50_000
SQL_MAX_LIMIT = 100_000
SQL_STATEMENT_TIMEOUT = 600.0
SQL_LIMIT_SQLSTATE = "53400"
#: The accept header of a Data Access file download (the files are bytes, not JSON).
FILE_ACCEPT = "application/octet-stream"
#: The PATCH of a query: one operation in the spec (``cancelQuery``) for both ``op`` values.
QUERY_PATCH_OPS = ("cancel", "soft_delete")
#: Where the task-instance marker goes in a query's ``description`` (see :func:`with_marker`).
MARKER_PREFIX = "querytasks-ti: "


@dataclass(frozen=True)
class Listing:
    """What a list walk read: the items (deduplicated by ``id``) and whether the list ended.

    :param items: the items, in the order the pages gave them.
    :param complete: the last page had no next link. ``False``: the walk stopped at its page cap,
        on a next link it had already followed, or because the caller had found what it wanted.
    :param operation: the list operation walked (``listQueries``).
    :param max_pages: the walk's page cap.
    """

    items: list[dict[str, Any]]
    complete: bool
    operation: str
    max_pages: int

    def require_complete(self) -> list[dict[str, Any]]:
        """The items, or a clear error when the walk was cut (a partial list is never returned)."""
        if not self.complete:
            raise ApiError(
                f"{self.operation}: the list did not end within {self.max_pages} pages; narrow the "
                "filter or raise max_pages (a partial list is never returned as if whole)",
                platform=AdobeApi.platform,
                operation=self.operation,
            )
        return self.items


@dataclass(frozen=True)
class AdobeSettings:
    """A validated ``adobe_experience_platform`` connection.

    :param base_url: ``https://platform.adobe.io`` or the ``endpoint`` override.
    :param token_url: the IMS token endpoint.
    :param client_id: OAuth server-to-server client id (also the ``x-api-key``).
    :param client_secret: its secret.
    :param org_id: IMS organisation id (``...@AdobeOrg``).
    :param sandbox: sandbox name, lower case.
    :param scopes: comma-separated scopes.
    """

    base_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    org_id: str
    sandbox: str
    scopes: str

    @classmethod
    def build(
        cls,
        *,
        client_id: str | None,
        client_secret: str | None,
        org_id: str | None,
        sandbox: str | None = None,
        scopes: str | None = None,
        endpoint: str | None = None,
        ims_endpoint: str | None = None,
    ) -> AdobeSettings:
        """Validate connection fields (raise :class:`InvalidInputError` naming the field)."""
        if not client_id:
            raise InvalidInputError("login", "set the OAuth server-to-server client id (the API key)")
        if not client_secret:
            raise InvalidInputError("password", "set the client secret")
        if not org_id or not ORG_ID.match(org_id.strip()):
            raise InvalidInputError(
                "org_id", f"{org_id!r} is not an IMS organisation id such as ABC123@AdobeOrg"
            )
        name = validate_sandbox(sandbox or "prod", "sandbox")
        scope_list = ",".join(s.strip() for s in (scopes or DEFAULT_SCOPES).split(",") if s.strip())
        if not scope_list:
            raise InvalidInputError("scopes", "give at least one scope from the Developer Console project")
        return cls(
            base_url=validate_base_url(endpoint or DEFAULT_ENDPOINT, "endpoint"),
            token_url=validate_base_url(ims_endpoint or DEFAULT_IMS_TOKEN_URL, "ims_endpoint"),
            client_id=client_id,
            client_secret=client_secret,
            org_id=org_id.strip(),
            sandbox=name,
            scopes=scope_list,
        )


def validate_sandbox(value: str, parameter: str) -> str:
    if not isinstance(value, str) or not SANDBOX.match(value):
        raise InvalidInputError(
            parameter, f"{value!r} is not a sandbox name: lower-case letters, digits and '-' (e.g. prod)"
        )
    return value


class AdobeApi(PlatformApi):
    """Query Service, Catalog and Data Access calls and answers (one host, one credential).

    Every call the hook makes is an operation here (a method returning :data:`Steps`), named by
    the spec's ``operationId``; every list is read by one walk (:meth:`walk`).
    """

    platform = "adobe_query_service"
    request_id_header = "x-request-id"
    logged_headers = ("x-request-id", "Retry-After")

    def __init__(self, settings: AdobeSettings) -> None:
        super().__init__(settings.base_url, f"{settings.org_id}/{settings.sandbox}")
        self.settings = settings

    def headers(self, token: str | None) -> dict[str, str]:
        # No Accept here: each request says what it accepts (JSON, or a file's bytes).
        headers = {
            "x-api-key": self.settings.client_id,
            "x-gw-ims-org-id": self.settings.org_id,
            "x-sandbox-name": self.settings.sandbox,
            "x-request-id": str(uuid.uuid4()),
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    # error_message: the base reads all three shapes Adobe uses (gateway {"error_code",
    # "message"}, Query Service {"message", "statusCode"} and problem details).

    # -- the one list walk --------------------------------------------------------------------
    def walk(
        self,
        request: ApiRequest,
        key: str,
        *,
        max_pages: int = DEFAULT_PAGE_CAP,
        until: Callable[[list[dict[str, Any]]], bool] | None = None,
    ) -> Steps[Listing]:
        """Every item under ``key``, page by page, following ``_links.next``.

        Each next request is the link's path and query against the configured base (never the
        link's host), with every parameter of ``request`` the link lacks added back (the
        documented ``/queries`` next link carries only ``orderby`` and ``start``: its filter
        would otherwise be lost from page 2 on). Items with an ``id`` seen before (a cursor that
        includes its own start repeats tied items) are dropped. The walk stops when the list ends,
        at ``max_pages``, on a next link already followed, or when ``until(new items)`` is true.
        """
        if max_pages < 1:
            raise InvalidInputError("max_pages", f"must be at least 1, got {max_pages}")
        kept = [(name, value) for name, value in request.query_items() if name not in CURSOR_PARAMS]
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        followed: set[str] = set()
        operation = request.operation

        def listing(complete: bool) -> Listing:
            return Listing(items, complete, operation, max_pages)

        for _ in range(max_pages):
            body = (yield request).json_object()
            page = [item for item in body.get(key) or [] if isinstance(item, dict)]
            new = []
            for item in page:
                ident = item.get("id")
                if ident is not None:
                    if str(ident) in seen:
                        continue
                    seen.add(str(ident))
                new.append(item)
            items.extend(new)
            if until is not None and until(new):
                return listing(complete=False)
            href = next_href(body)
            if not href or not page:
                return listing(complete=True)
            if href in followed:
                return listing(complete=False)
            followed.add(href)
            request = self.next_page_request(href, request.operation)
            pairs = request.query_items()
            given = {name for name, _ in pairs}
            request = dataclasses.replace(
                request, params=[*pairs, *((n, v) for n, v in kept if n not in given)]
            )
        return listing(complete=False)

    def next_page_request(self, href: str, operation: str) -> ApiRequest:
        """``_links.next.href`` as a request against the configured base (never its own host)."""
        parts = urlsplit(href)
        if not parts.path.startswith("/data/foundation/"):
            raise ApiError(f"{operation}: unexpected next link {href!r}", platform=self.platform)
        return _json("GET", parts.path, operation, params=link_query_pairs(parts.query))

    # -- queries ------------------------------------------------------------------------------
    def create_query_request(self, query_def: dict[str, Any]) -> ApiRequest:
        return _json("POST", f"{QUERY}/queries", "createQuery", json=query_def, idempotent=False)

    def create_query(self, query_def: dict[str, Any]) -> Steps[dict[str, Any]]:
        """createQuery: the query object (state ``SUBMITTED``); an answer without an id fails."""
        query = (yield self.create_query_request(query_def)).json_object()
        if not query.get("id"):
            raise ApiError(f"createQuery answered without an id: {query}", platform=self.platform)
        return query

    def get_query_request(self, query_id: str) -> ApiRequest:
        return _json("GET", f"{QUERY}/queries/{path_segment(query_id, 'query_id')}", "retrieveQuery")

    def patch_query_request(self, query_id: str, op: str) -> ApiRequest:
        if op not in QUERY_PATCH_OPS:
            raise InvalidInputError("op", f"{op!r}: use one of {', '.join(QUERY_PATCH_OPS)}")
        # 409: the query already ended; the caller re-reads its state.
        return _json(
            "PATCH",
            f"{QUERY}/queries/{path_segment(query_id, 'query_id')}",
            "cancelQuery",
            json={"op": op},
            ok_statuses=(409,),
        )

    def get_query(self, query_id: str) -> Steps[dict[str, Any]]:
        """retrieveQuery: the query object."""
        return one_call(self.get_query_request(query_id), ApiResponse.json_object)

    def patch_query(self, query_id: str, op: str) -> Steps[int]:
        """A PATCH of a query (``cancel``, ``soft_delete``): its status (409: it had already ended)."""
        return one_call(self.patch_query_request(query_id, op), _status)

    def list_queries_request(
        self,
        *,
        property: str | None = None,
        orderby: str = "-created",
        limit: int = 50,
        start: str | None = None,
        exclude_soft_deleted: bool = True,
        exclude_hidden: bool = True,
    ) -> ApiRequest:
        if orderby.lstrip("+-") not in ("created", "updated"):
            raise InvalidInputError("orderby", f"{orderby!r}: use created or updated, prefixed by + or -")
        params = {
            "orderby": orderby,
            "limit": _limit(limit, 1000),
            "start": start,
            "property": property,
            "excludeSoftDeleted": exclude_soft_deleted,
            "excludeHidden": exclude_hidden,
        }
        return _json("GET", f"{QUERY}/queries", "listQueries", params=params)

    def list_queries(
        self,
        property: str | None = None,
        *,
        orderby: str = "-created",
        limit: int = 50,
        exclude_soft_deleted: bool = True,
        exclude_hidden: bool = True,
        max_pages: int = DEFAULT_PAGE_CAP,
    ) -> Steps[Listing]:
        """listQueries: every query matching ``property``, through :meth:`walk`."""
        request = self.list_queries_request(
            property=property,
            orderby=orderby,
            limit=limit,
            exclude_soft_deleted=exclude_soft_deleted,
            exclude_hidden=exclude_hidden,
        )
        return (yield from self.walk(request, "queries", max_pages=max_pages))

    def find_queries(
        self,
        wanted: Mapping[str, float],
        *,
        page_size: int = LIST_PAGE_SIZE,
        max_pages: int = LIST_PAGE_CAP,
        margin: float = LIST_CREATED_MARGIN,
    ) -> Steps[dict[str, dict[str, Any]]]:
        """listQueries for coalesced polling: the wanted query objects found.

        One filter, ``created>=`` the earliest wait start minus ``margin`` (a query is created
        before its wait starts), newest first (``orderby=-created``), ``page_size`` a page,
        through :meth:`walk` until every wanted query is found, the list ends, or ``max_pages``.
        A query created before the bound (a sensor on an old query) is absent.

        :param wanted: query id -> wall-clock start of the wait on it.
        """
        remaining = set(wanted)
        found: dict[str, dict[str, Any]] = {}
        if not remaining:
            return found

        def collect(items: list[dict[str, Any]]) -> bool:
            for item in items:
                query_id = str(item.get("id"))
                if query_id in remaining:
                    found[query_id] = item
                    remaining.discard(query_id)
            return not remaining

        since = datetime.fromtimestamp(min(wanted.values()) - margin, tz=timezone.utc)
        request = self.list_queries_request(
            property=f"created>={iso_seconds(since)}", orderby="-created", limit=page_size
        )
        yield from self.walk(request, "queries", max_pages=max_pages, until=collect)
        return found

    def find_submitted_query(
        self,
        marker: str,
        created_after: datetime,
        *,
        page_size: int = LIST_PAGE_SIZE,
        max_pages: int = LIST_PAGE_CAP,
    ) -> Steps[dict[str, Any] | None]:
        """listQueries: the newest query carrying ``marker`` (:func:`has_marker`) created at or
        after ``created_after``, whatever its state, or ``None``.

        Filtered by ``created>=created_after`` and ``client==API`` on every page (the marker is
        not a filter the spec offers: it is compared here). Newest by each object's ``created``,
        not by the list's order (the spec leaves ties unordered); two matches with the same newest
        ``created`` are ambiguous: ``None`` (submit again rather than guess). A walk cut at
        ``max_pages`` without a match answers ``None`` too.
        """
        request = self.list_queries_request(
            property=f"created>={iso_seconds(created_after)},client==API", orderby="-created", limit=page_size
        )
        listing = yield from self.walk(request, "queries", max_pages=max_pages)
        bound = created_after.astimezone(timezone.utc)
        matches = []
        for query in listing.items:
            created = parse_time(query.get("created"))
            if has_marker(query, marker) and created is not None and created >= bound:
                matches.append((created, query))
        if not matches:
            return None
        matches.sort(key=lambda pair: pair[0], reverse=True)
        if len(matches) > 1 and matches[0][0] == matches[1][0]:
            return None
        return matches[0][1]

    # -- templates ----------------------------------------------------------------------------
    def create_template(
        self, sql: str, name: str, query_parameters: dict[str, str] | None = None
    ) -> Steps[dict[str, Any]]:
        """createQueryTemplate: the template."""
        body: dict[str, Any] = {"sql": sql, "name": name}
        if query_parameters:
            body["queryParameters"] = query_parameters
        request = _json(
            "POST", f"{QUERY}/query-templates", "createQueryTemplate", json=body, idempotent=False
        )
        return one_call(request, ApiResponse.json_object)

    def get_template(self, template_id: str) -> Steps[dict[str, Any]]:
        """retrieveQueryTemplate: the template."""
        path = f"{QUERY}/query-templates/{path_segment(template_id, 'template_id')}"
        return one_call(_json("GET", path, "retrieveQueryTemplate"), ApiResponse.json_object)

    def list_templates(self, limit: int = 50, *, max_pages: int = DEFAULT_PAGE_CAP) -> Steps[Listing]:
        """listQueryTemplates, through :meth:`walk`."""
        request = _json(
            "GET", f"{QUERY}/query-templates", "listQueryTemplates", params={"limit": _limit(limit, 1000)}
        )
        return (yield from self.walk(request, "templates", max_pages=max_pages))

    # -- schedules ----------------------------------------------------------------------------
    def create_schedule(self, query_def: dict[str, Any], schedule: dict[str, Any]) -> Steps[dict[str, Any]]:
        """createSchedule: the schedule (``REGISTERING``)."""
        body = {"query": query_def, "schedule": schedule}
        request = _json("POST", f"{QUERY}/schedules", "createSchedule", json=body, idempotent=False)
        return one_call(request, ApiResponse.json_object)

    def get_schedule(self, schedule_id: str) -> Steps[dict[str, Any]]:
        """retrieveSchedule: the schedule."""
        return one_call(
            _json("GET", self._schedule_path(schedule_id), "retrieveSchedule"), ApiResponse.json_object
        )

    def list_schedules(self, limit: int = 50, *, max_pages: int = DEFAULT_PAGE_CAP) -> Steps[Listing]:
        """listSchedules, through :meth:`walk`."""
        request = _json("GET", f"{QUERY}/schedules", "listSchedules", params={"limit": _limit(limit, 1000)})
        return (yield from self.walk(request, "schedules", max_pages=max_pages))

    def set_schedule_state(self, schedule_id: str, enabled: bool) -> Steps[int]:
        """updateSchedule of ``/state``: the status. The PATCH body is wrapped in ``body``."""
        body = {"body": [{"op": "replace", "path": "/state", "value": "enable" if enabled else "disable"}]}
        return one_call(
            _json("PATCH", self._schedule_path(schedule_id), "updateSchedule", json=body), _status
        )

    def list_runs(
        self,
        schedule_id: str,
        property: str | None = None,
        *,
        limit: int = 50,
        max_pages: int = DEFAULT_PAGE_CAP,
    ) -> Steps[Listing]:
        """listScheduleRuns, newest first, through :meth:`walk`."""
        request = _json(
            "GET",
            f"{self._schedule_path(schedule_id)}/runs",
            "listScheduleRuns",
            params={"limit": _limit(limit, 1000), "orderby": "-created", "property": property},
        )
        return (yield from self.walk(request, "runsSchedules", max_pages=max_pages))

    def trigger_run(self, schedule_id: str) -> Steps[int]:
        """triggerScheduleRun: the status (202). The answer names no run: see :func:`new_run`."""
        request = _json(
            "POST", f"{self._schedule_path(schedule_id)}/runs", "triggerScheduleRun", idempotent=False
        )
        return one_call(request, _status)

    def get_run(self, schedule_id: str, run_id: str) -> Steps[dict[str, Any]]:
        """retrieveScheduledQueryRun: the run."""
        request = _json("GET", self._run_path(schedule_id, run_id), "retrieveScheduledQueryRun")
        return one_call(request, ApiResponse.json_object)

    def cancel_run(self, schedule_id: str, run_id: str) -> Steps[int]:
        """cancelScheduledQueryRun: the status (409: it had already ended)."""
        request = _json(
            "PATCH",
            self._run_path(schedule_id, run_id),
            "cancelScheduledQueryRun",
            json={"op": "cancel"},
            ok_statuses=(409,),
        )
        return one_call(request, _status)

    @staticmethod
    def _schedule_path(schedule_id: str) -> str:
        return f"{QUERY}/schedules/{path_segment(schedule_id, 'schedule_id')}"

    def _run_path(self, schedule_id: str, run_id: str) -> str:
        return f"{self._schedule_path(schedule_id)}/runs/{path_segment(run_id, 'run_id')}"

    # -- Catalog ------------------------------------------------------------------------------
    def get_dataset(self, dataset_id: str) -> Steps[list[dict[str, Any]]]:
        """retrieveDataset: the dataset (a list of one, or none)."""
        path = f"{CATALOG}/dataSets/{path_segment(dataset_id, 'dataset_id')}"
        return one_call(_json("GET", path, "retrieveDataset"), _keyed)

    def find_datasets(self, name: str, limit: int = 10) -> Steps[list[dict[str, Any]]]:
        """listDatasets by ``name``, newest first."""
        params = {"name": name, "orderBy": "desc:created", "limit": _limit(limit, MAX_PAGE)}
        return one_call(_json("GET", f"{CATALOG}/dataSets", "listDatasets", params=params), _keyed)

    def list_batches(
        self, dataset_id: str, *, created_after_ms: int | None = None, limit: int = 20, start: int = 0
    ) -> Steps[list[dict[str, Any]]]:
        """listBatches of a dataset, newest first."""
        params = {
            "dataSet": dataset_id,
            "createdAfter": created_after_ms,
            "orderBy": "desc:created",
            "limit": _limit(limit, MAX_PAGE),
            "start": start,
        }
        return one_call(_json("GET", f"{CATALOG}/batches", "listBatches", params=params), _keyed)

    # -- Data Access --------------------------------------------------------------------------
    def batch_files(self, batch_id: str, *, max_pages: int = DEFAULT_PAGE_CAP) -> Steps[list[dict[str, Any]]]:
        """listDatasetFiles, then retrieveDatasetFile of each (recursing into directories): every
        file of a batch as ``{"file_id", "name", "length"}``. A listing cut at ``max_pages`` fails
        (a batch is never exported in part)."""
        request = _json(
            "GET",
            f"{EXPORT}/batches/{path_segment(batch_id, 'batch_id')}/files",
            "listDatasetFiles",
            params={"start": 0, "limit": MAX_PAGE},
        )
        listing = yield from self.walk(request, "data", max_pages=max_pages)
        files: list[dict[str, Any]] = []
        for entry in listing.require_complete():
            files.extend((yield from self._file_entries(str(entry.get("dataSetFileId")), max_pages, 0)))
        return files

    def _file_entries(self, file_id: str, max_pages: int, depth: int) -> Steps[list[dict[str, Any]]]:
        if depth > 20:
            raise ApiError(
                f"retrieveDatasetFile: directories nested too deep at {file_id}", platform=self.platform
            )
        request = _json(
            "GET", self._file_path(file_id), "retrieveDatasetFile", params={"start": 0, "limit": MAX_PAGE}
        )
        listing = yield from self.walk(request, "data", max_pages=max_pages)
        files: list[dict[str, Any]] = []
        for item in listing.require_complete():
            href = ((item.get("_links") or {}).get("self") or {}).get("href", "")
            if "path=" in href:
                files.append({"file_id": file_id, "name": item.get("name"), "length": item.get("length")})
            elif item.get("dataSetFileId"):  # a directory entry
                files.extend(
                    (yield from self._file_entries(str(item["dataSetFileId"]), max_pages, depth + 1))
                )
        return files

    def file_request(self, file_id: str, path: str) -> ApiRequest:
        """retrieveDatasetFile of one file's bytes (streamed by the fetch, not run as a step)."""
        return ApiRequest(
            "GET",
            f"{self.base_url}{self._file_path(file_id)}?path={quote(path, safe='')}",
            "retrieveDatasetFile",
            headers={"Accept": FILE_ACCEPT},
        )

    def file_url(self, file_id: str, path: str) -> str:
        return self.file_request(file_id, path).path

    @staticmethod
    def _file_path(file_id: str) -> str:
        return f"{EXPORT}/files/{path_segment(file_id, 'file_id')}"


def _json(method: str, path: str, operation: str, **kwargs: Any) -> ApiRequest:
    """A call answered with JSON (``Accept: application/json``)."""
    return ApiRequest(method, path, operation, headers={"Accept": "application/json"}, **kwargs)


def _keyed(response: ApiResponse) -> list[dict[str, Any]]:
    return keyed_objects(response.json_object())


def iso_seconds(at: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC: nothing a form decoder could turn into a space ('+')."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time of the API (``Z`` or an offset; none means UTC), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def with_marker(description: str | None, marker: str) -> str:
    """The ``description`` to submit: the user's text, then the marker on a line of its own.

    The marker goes in ``description`` because the spec's query object echoes the submitted
    ``query_def`` (``request``, with ``description``) and nothing else a client chooses: ``name``
    is what the UI shows (the user's to set), and a SQL comment changes the SQL (and
    ``effectiveSQL``), does not exist for a template query, and may be stripped.
    """
    line = f"{MARKER_PREFIX}{marker}"
    return f"{description}\n{line}" if description else line


def has_marker(query: dict[str, Any], marker: str) -> bool:
    """Whether ``query``'s echoed ``request.description`` ends with exactly this marker line."""
    description = (query.get("request") or {}).get("description")
    if not isinstance(description, str):
        return False
    return description.rsplit("\n", 1)[-1] == f"{MARKER_PREFIX}{marker}"


def new_run(before: Collection[str], runs: list[dict[str, Any]], schedule_id: str) -> dict[str, Any] | None:
    """The one run of ``runs`` whose id is not in ``before`` (listed before a trigger), or ``None``
    when none appeared yet.

    :raises RemoteQueryFailedError: when several appeared (another trigger ran at the same time:
        which one is this task's is not knowable, and the newest is a guess).
    """
    appeared = [run for run in runs if run.get("id") and str(run["id"]) not in before]
    if len(appeared) > 1:
        ids = ", ".join(str(run["id"]) for run in appeared)
        raise RemoteQueryFailedError(
            f"Schedule {schedule_id}: {len(appeared)} runs appeared after the trigger ({ids}); "
            "triggerScheduleRun names none, so which one this trigger started is unknown",
            platform=AdobeApi.platform,
        )
    return appeared[0] if appeared else None


def _status(response: ApiResponse) -> int:
    return response.status


def _limit(value: int, maximum: int) -> int:
    if not 1 <= int(value) <= maximum:
        raise InvalidInputError("limit", f"must be 1 to {maximum}, got {value}")
    return int(value)


# -- query definitions --------------------------------------------------------------------------
@dataclass(frozen=True)
class AdobeQueryDefinition:
    """What a query runs: the ``POST /queries`` body (also a scheduled query's ``query``).

    :param sql: the SQL; exactly one of ``sql`` and ``template_id``.
    :param template_id: a query template id.
    :param query_parameters: values for ``$name`` placeholders, sent as ``queryParameters``
        (Adobe substitutes them as text: quote literals in the SQL).
    :param db_name: ``<sandbox>:all`` (or ``<sandbox>:<db>.<schema>``); default the sandbox's ``all``.
    :param name: the query's name.
    :param description: the query's description.
    :param ctas_parameters: ``{"datasetName", "description"?, "targetSchemaTitle"?}``: CREATE TABLE AS.
    :param insert_into_parameters: ``{"datasetName"}``: INSERT INTO an existing dataset.
    """

    sql: str | None = None
    template_id: str | None = None
    query_parameters: dict[str, Any] | None = None
    db_name: str | None = None
    name: str | None = None
    description: str | None = None
    ctas_parameters: dict[str, Any] | None = None
    insert_into_parameters: dict[str, Any] | None = None

    def body(self, sandbox: str | None = None) -> dict[str, Any]:
        """The request body, validated.

        :param sandbox: the connection's sandbox: the default ``db_name`` is ``<sandbox>:all``,
            and a ``db_name`` naming another sandbox is refused. Unknown (``None``): ``prod``
            is assumed for the default and nothing is compared.
        :raises InvalidInputError: naming the parameter (``sql``/``template_id``, ``db_name``...).
        """
        sql, template_id = self.sql, self.template_id
        db_name = self.db_name or f"{sandbox or 'prod'}:all"
        has_sql = isinstance(sql, str) and bool(sql.strip())
        has_template = isinstance(template_id, str) and bool(template_id.strip())
        if has_sql == has_template:
            raise InvalidInputError("sql", "give exactly one of sql (non-empty) and template_id")
        if not isinstance(db_name, str) or not DB_NAME.match(db_name):
            raise InvalidInputError(
                "db_name", f"{db_name!r} is not '<sandbox>:all' (or '<sandbox>:<db>.<schema>')"
            )
        if sandbox is not None and db_name.split(":", 1)[0] != sandbox:
            raise InvalidInputError(
                "db_name",
                f"{db_name!r} names sandbox {db_name.split(':', 1)[0]!r} but the connection uses {sandbox!r}",
            )
        if self.ctas_parameters and self.insert_into_parameters:
            raise InvalidInputError(
                "ctas_parameters", "give ctas_parameters or insert_into_parameters, not both"
            )
        for parameter, target in (
            ("ctas_parameters", self.ctas_parameters),
            ("insert_into_parameters", self.insert_into_parameters),
        ):
            if target is not None and (not isinstance(target, dict) or not target.get("datasetName")):
                raise InvalidInputError(parameter, "must be a dict with a non-empty datasetName")
        query_parameters = self.query_parameters
        if query_parameters is not None and not (
            isinstance(query_parameters, dict)
            and all(isinstance(k, str) and PARAMETER.match(k) for k in query_parameters)
        ):
            raise InvalidInputError("query_parameters", "must map names ([A-Za-z_][A-Za-z0-9_]*) to values")
        body: dict[str, Any] = {"dbName": db_name}
        if has_sql:
            body["sql"] = sql
        else:
            body["templateId"] = str(template_id).strip()
        if query_parameters:
            body["queryParameters"] = {k: str(v) for k, v in query_parameters.items()}
        if self.name:
            body["name"] = self.name
        if self.description:
            body["description"] = self.description
        if self.ctas_parameters:
            body["ctasParameters"] = dict(self.ctas_parameters)
        if self.insert_into_parameters:
            body["insertIntoParameters"] = dict(self.insert_into_parameters)
        return body


def errors_text(errors: Any) -> str:
    """``errors[]`` of a query as ``code errorType: message; ...``."""
    if not isinstance(errors, list):
        return ""
    return "; ".join(
        f"{e.get('code', '?')} {e.get('errorType', '')}: {e.get('message', '')}".replace(" :", ":")
        for e in errors
        if isinstance(e, dict)
    )


def query_snapshot(query: dict[str, Any]) -> StatusSnapshot:
    """Normalise a query object; an unknown state fails with the raw object."""
    state_name = query.get("state")
    state = ADOBE_QUERY_STATE_TO_QUERY_STATE.get(str(state_name), QueryState.FAILED)
    message = errors_text(query.get("errors")) or None
    if state_name not in ADOBE_QUERY_STATE_TO_QUERY_STATE:
        message = f"unknown state {state_name!r}"
    return StatusSnapshot(str(query.get("id")), state, state_name, raw=query, message=message)


def listed_query_snapshot(query: dict[str, Any]) -> StatusSnapshot | None:
    """A query object from the list as :func:`query_snapshot` reads it, or ``None`` (poll it on
    its own) where the object lacks what its final state needs: the created dataset of a
    successful CTAS, the ``errors`` of a failed query."""
    if not query.get("id") or not query.get("state"):
        return None
    state = query["state"]
    is_ctas = bool(query.get("isCTAS") or (query.get("request") or {}).get("ctasParameters"))
    if state == "SUCCESS" and is_ctas and created_dataset_id(query) is None:
        return None
    if state in ("FAILED", "TIMEOUT") and not isinstance(query.get("errors"), list):
        return None
    return query_snapshot(query)


def batch_snapshot(dataset_id: str, batch: dict[str, Any] | None) -> StatusSnapshot:
    """The newest batch of a dataset, as a wait sees it: done once Catalog shows it ``success``."""
    status = str((batch or {}).get("status", "")).lower()
    if batch is not None and status == "success":
        state = QueryState.SUCCEEDED
    elif status in BATCH_FAILED:
        state = QueryState.FAILED
    else:  # none yet, or loading
        state = QueryState.RUNNING if batch is not None else QueryState.PENDING
    batch_id = (batch or {}).get("id")
    return StatusSnapshot(f"{dataset_id}/{batch_id}", state, status or "none", raw=batch or {})


def run_snapshot(schedule_id: str, run: dict[str, Any]) -> StatusSnapshot:
    """Normalise a scheduled-query run."""
    state_name = run.get("state")
    state = ADOBE_RUN_STATE_TO_QUERY_STATE.get(str(state_name), QueryState.FAILED)
    message = errors_text(run.get("errors")) or (
        None if state_name in ADOBE_RUN_STATE_TO_QUERY_STATE else f"unknown state {state_name!r}"
    )
    return StatusSnapshot(f"{schedule_id}/{run.get('id')}", state, state_name, raw=run, message=message)


def created_dataset_id(query: dict[str, Any]) -> str | None:
    link = (query.get("_links") or {}).get("created_dataset") or {}
    value = link.get("id") if isinstance(link, dict) else None
    return str(value) if value else None


def query_record(snapshot: StatusSnapshot) -> dict[str, Any]:
    """What XCom shows of a finished query."""
    raw = snapshot.raw
    return {
        "query_id": snapshot.query_id,
        "state": snapshot.remote_status,
        "row_count": raw.get("rowCount"),
        "elapsed_time_ms": raw.get("elapsedTime"),
        "created_dataset_id": created_dataset_id(raw),
        "errors": raw.get("errors") or [],
    }


def link_query_pairs(query: str) -> list[tuple[str, str]]:
    """A link's query string as (name, value) pairs: percent-decoded, ``+`` kept as ``+``.

    Not form decoding (``parse_qsl``): a next link's ``start`` cursor may carry a literal
    ``+HH:MM`` offset, which form decoding would turn into a space.
    """
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def next_href(body: dict[str, Any]) -> str | None:
    """``_links.next.href`` (or ``_links.next`` as a plain string, as on ``/schedules``)."""
    link = (body.get("_links") or {}).get("next")
    if isinstance(link, dict):
        link = link.get("href")
    return link if isinstance(link, str) and link else None


def keyed_objects(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Catalog answer (objects keyed by id) as a list, each with its ``id``."""
    return [{"id": key, **value} for key, value in body.items() if isinstance(value, dict)]


class ImsTokenSource(TokenSource):
    """IMS OAuth server-to-server (client_credentials; ~24 h tokens, no refresh token).

    ``expires_in`` is in seconds, as the base reads it (the retired JWT exchange used ms).
    """

    service = "IMS token endpoint"
    platform = "adobe_query_service"
    operation = "imsToken"
    hints = {
        **TokenSource.hints,
        "invalid_client": "check the client id (login) and client secret (password) of {conn}, "
        "as the Adobe Developer Console shows them for the OAuth server-to-server credential",
        "invalid_scope": "check the scopes extra of {conn} against the credential's scopes in "
        "the Adobe Developer Console",
    }

    def __init__(self, settings: AdobeSettings) -> None:
        super().__init__(
            (settings.token_url, settings.client_id, settings.client_secret, settings.scopes),
            margin=300.0,
        )
        self.settings = settings

    def token_request(self) -> ApiRequest:
        # In the body, not the query string: a query string ends up in access logs.
        data = {
            "grant_type": "client_credentials",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "scope": self.settings.scopes,
        }
        return self.form_request(self.settings.token_url, data)


# -- Experience Platform UI pages (operator extra links) --------------------------------------
#: Documented: UI URLs are ``https://experience.adobe.com/#/@<IMS org id>/sname:<sandbox>/platform/
#: <app>/...`` (the ``url`` of Adobe's Experience Platform alert payloads), and the Queries
#: workspace is ``platform/query`` with its Log tab at ``platform/query/log`` (linked from Adobe's
#: license-usage dashboard help). Inferred: the paths of one query's log details page and of one
#: schedule's details page below (no public document spells them); see docs/adobe_query_service.md.
UI_HOST = "https://experience.adobe.com"


def ui_query_workspace_url(org_id: str, sandbox: str) -> str:
    """The Queries workspace of a sandbox in the Experience Platform UI."""
    return f"{UI_HOST}/#/@{quote(org_id, safe='@')}/sname:{quote(sandbox, safe='')}/platform/query"


def ui_query_url(org_id: str, sandbox: str, query_id: str) -> str:
    """A query's page (Queries > Log > query log details); the path after ``log/`` is inferred."""
    return f"{ui_query_workspace_url(org_id, sandbox)}/log/{quote(query_id, safe='')}"


def ui_schedule_url(org_id: str, sandbox: str, schedule_id: str) -> str:
    """A scheduled query's page (Queries > Scheduled Queries > schedule details); path inferred."""
    return f"{ui_query_workspace_url(org_id, sandbox)}/scheduled-queries/{quote(schedule_id, safe='')}"
