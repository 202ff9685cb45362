"""Amazon Selling Partner API, Data Kiosk 2023-11-15: URLs, payloads, answers, statuses, LWA.

Written once and executed by the sync and async clients of :mod:`~..common.transport`. Facts and
sources are in ``docs/data_kiosk.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from airflow_provider_querytasks.common.api.calls import (
    ApiRequest,
    ApiResponse,
    PlatformApi,
    first_error_text,
)
from airflow_provider_querytasks.common.api.errors import (
    ApiError,
    AuthenticationError,
    InvalidInputError,
    PermissionDeniedError,
)
from airflow_provider_querytasks.common.api.notifications import Notification
from airflow_provider_querytasks.common.api.operations import Steps, one_call
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.api.validation import path_segment, validate_base_url
from airflow_provider_querytasks.common.transport.tokens import TokenSource

API_PATH = "/dataKiosk/2023-11-15"
REGIONS = ("na", "eu", "fe")
DEFAULT_LWA_TOKEN_URL = "https://api.amazon.com/auth/o2/token"  # noqa: S105 (a URL)
#: The longest query text, after unnecessary whitespace is removed.
MAX_QUERY_LENGTH = 8000
MAX_PAGE_SIZE = 100
STATUSES = ("IN_QUEUE", "IN_PROGRESS", "DONE", "FATAL", "CANCELLED")
TERMINAL_STATUSES = ("DONE", "FATAL", "CANCELLED")
#: A Query's ``processingStatus`` -> the provider's :class:`QueryState`.
PROCESSING_STATUS_TO_QUERY_STATE = {
    "IN_QUEUE": QueryState.PENDING,
    "IN_PROGRESS": QueryState.RUNNING,
    "DONE": QueryState.SUCCEEDED,
    "FATAL": QueryState.FAILED,
    "CANCELLED": QueryState.CANCELLED,
}
#: Usage plans (requests per second, burst) per operation, per selling partner and application.
RATE_LIMITS: dict[str, tuple[float, float]] = {
    "createQuery": (0.0167, 15),
    "getQueries": (0.0222, 10),
    "getQuery": (2.0, 15),
    "cancelQuery": (0.0222, 10),
    "getDocument": (0.0167, 15),
}
NOTIFICATION_TYPE = "DATA_KIOSK_QUERY_PROCESSING_FINISHED"
#: What a 403 means once a fresh access token was refused too: Data Kiosk answers a revoked
#: authorisation and a missing role with the same body.
FORBIDDEN_HINT = (
    "Data Kiosk refused a freshly refreshed access token too, and answers two causes alike: "
    "(1) the application lacks the Brand Analytics role (Seller Central > Partner Network > "
    "Develop Apps: edit the app's roles, then have the selling partner authorise it again), or "
    "(2) the selling partner revoked the app's authorisation (Seller Central > Partner Network "
    "> Manage Your Apps: authorise it again and set the new refresh_token extra)"
)
#: Account id prefixes of notifications' ``payload.accountId`` (the schema's examples:
#: ``amzn1.merchant.o.A21CXK3C4ERTY8`` for a seller, ``amzn1.vg.6213651`` for a vendor group).
ACCOUNT_PREFIXES = ("amzn1.merchant.o.", "amzn1.vg.")
#: Coalesced polling (getQueries sweeps, see docs/design/data_kiosk.md "Coalesced polling"): how long
#: before its wait started a waited query may have been created (an operator defers seconds
#: after createQuery; a sensor's query is usually submitted by the task before it), and the
#: clock difference allowed between this machine and Amazon's.
LIST_LOOKBACK = 600.0
LIST_CLOCK_SKEW = 60.0
#: Windows of waits closer than this are listed as one: after its burst of 15, an account
#: creates at most one query a minute, so a gap of an hour adds at most 60 entries to a list.
LIST_MERGE_GAP = 3600.0
#: Answers to a sweep's page that end the sweep with what it found so far (the waits then poll
#: their queries one by one): refused for the rate (never waited for), or a server error.
LIST_GIVE_UP_STATUSES = (429, 500, 502, 503, 504)


def account_key(account: str | None) -> str | None:
    """An account id in the one form notifications and connections are compared in: the merchant
    token or vendor group id alone, upper-case (``amzn1.merchant.o.A21CXK3C4ERTY8``,
    ``a21cxk3c4erty8`` and ``A21CXK3C4ERTY8`` are one account; ``amzn1.vg.6213651`` and
    ``6213651`` another)."""
    if account is None:
        return None
    text = account.strip()
    for prefix in ACCOUNT_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    return text.upper() or None


def base_url_for(region: str, sandbox: bool) -> str:
    """The regional SP-API host (``sandbox.`` prefixed for the sandbox)."""
    return f"https://{'sandbox.' if sandbox else ''}sellingpartnerapi-{region}.amazon.com"


def _as_bool(value: Any, parameter: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise InvalidInputError(parameter, f"{value!r} is not a boolean; use true or false")


@dataclass(frozen=True)
class DataKioskSettings:
    """A validated ``amazon_sp_api`` connection.

    :param base_url: the SP-API host (region and sandbox, or the ``endpoint`` override).
    :param token_url: the LWA token endpoint.
    :param client_id: LWA client id.
    :param client_secret: LWA client secret.
    :param refresh_token: LWA refresh token of the selling partner's authorisation.
    :param account: what scopes rate limits and caches (selling partner id, else the
        refresh token's hash: one authorisation is one account).
    :param selling_partner_id: the ``selling_partner_id`` extra (matches notifications).
    """

    base_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    account: str
    selling_partner_id: str | None = None

    @classmethod
    def build(
        cls,
        *,
        client_id: str | None,
        client_secret: str | None,
        refresh_token: str | None,
        region: str | None = None,
        sandbox: Any = False,
        endpoint: str | None = None,
        lwa_endpoint: str | None = None,
        selling_partner_id: str | None = None,
    ) -> DataKioskSettings:
        """Validate connection fields (raise :class:`InvalidInputError` naming the field)."""
        region = (region or "na").strip().lower()
        if region not in REGIONS:
            raise InvalidInputError("region", f"{region!r} is not an SP-API region; use one of na, eu, fe")
        use_sandbox = _as_bool(sandbox, "sandbox")
        if not client_id:
            raise InvalidInputError("login", "set the LWA client id (amzn1.application-oa2-client...)")
        if not client_secret:
            raise InvalidInputError("password", "set the LWA client secret")
        if not refresh_token:
            raise InvalidInputError("refresh_token", "set the LWA refresh token extra")
        base = validate_base_url(endpoint, "endpoint") if endpoint else base_url_for(region, use_sandbox)
        token_url = validate_base_url(lwa_endpoint or DEFAULT_LWA_TOKEN_URL, "lwa_endpoint")
        account = selling_partner_id or "rt-" + hashlib.sha256(refresh_token.encode()).hexdigest()[:16]
        return cls(
            base, token_url, client_id, client_secret, refresh_token, account, selling_partner_id or None
        )


class DataKioskApi(PlatformApi):
    """Data Kiosk calls and answers."""

    platform = "amazon_data_kiosk"
    request_id_header = "x-amzn-RequestId"
    rate_limits = RATE_LIMITS
    logged_headers = ("x-amzn-RateLimit-Limit", "x-amzn-RequestId")
    rate_limit_header = "x-amzn-RateLimit-Limit"

    def __init__(self, settings: DataKioskSettings) -> None:
        super().__init__(settings.base_url, settings.account)
        self.settings = settings

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if token:
            headers["x-amz-access-token"] = token
        return headers

    def is_token_expired(self, response: ApiResponse) -> bool:
        # SP-API answers an expired token with 403 (no 401 is documented); a revoked token and a
        # missing role both answer 403 "Unauthorized" / "Access to requested resource is
        # denied." (open-readings.md): every 403 is retried once with a fresh token (refused
        # before processing, so safe even for createQuery), and a second 403 is the error.
        return response.status in (401, 403)

    def error_class(self, response: ApiResponse) -> type[ApiError]:
        if response.status == 403 and "expired" in self.error_message(response).lower():
            return AuthenticationError
        if response.status == 403:
            return PermissionDeniedError
        return super().error_class(response)

    def error_for(self, request: ApiRequest, response: ApiResponse) -> ApiError:
        """A 403 (after the retry with a fresh token) names both causes and what to check."""
        error = super().error_for(request, response)
        if type(error) is not PermissionDeniedError:
            return error
        return PermissionDeniedError(
            f"{error.message}. {FORBIDDEN_HINT}",
            platform=error.platform,
            operation=error.operation,
            status=error.status,
            request_id=error.request_id,
            detail=error.detail,
        )

    # -- requests -----------------------------------------------------------------------------
    def create_query_request(self, query: str, pagination_token: str | None = None) -> ApiRequest:
        body: dict[str, Any] = {"query": query}
        if pagination_token:
            body["paginationToken"] = pagination_token
        return ApiRequest("POST", f"{API_PATH}/queries", "createQuery", json=body, idempotent=False)

    def get_query_request(self, query_id: str) -> ApiRequest:
        return ApiRequest("GET", f"{API_PATH}/queries/{path_segment(query_id, 'query_id')}", "getQuery")

    def cancel_query_request(self, query_id: str) -> ApiRequest:
        # Cancelling a CANCELLED query is a documented no-op (204); a DONE or FATAL one is refused
        # with an error the model does not spell out, so a 400 is returned as an answer and read
        # with the query's status (cancel_query). A 404 is an unknown query: an error.
        return ApiRequest(
            "DELETE",
            f"{API_PATH}/queries/{path_segment(query_id, 'query_id')}",
            "cancelQuery",
            ok_statuses=(400,),
        )

    def get_queries_request(
        self,
        *,
        processing_statuses: list[str] | None = None,
        page_size: int = 10,
        created_since: str | None = None,
        created_until: str | None = None,
        pagination_token: str | None = None,
    ) -> ApiRequest:
        for status in processing_statuses or []:
            if status not in STATUSES:
                raise InvalidInputError(
                    "processing_statuses", f"{status!r} is not a status; use some of {', '.join(STATUSES)}"
                )
        if not 1 <= int(page_size) <= MAX_PAGE_SIZE:
            raise InvalidInputError("page_size", f"must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
        params = {
            "processingStatuses": ",".join(processing_statuses) if processing_statuses else None,
            "pageSize": int(page_size),
            "createdSince": created_since,
            "createdUntil": created_until,
            "paginationToken": pagination_token,
        }
        return ApiRequest("GET", f"{API_PATH}/queries", "getQueries", params=params)

    def get_document_request(self, document_id: str) -> ApiRequest:
        return ApiRequest(
            "GET", f"{API_PATH}/documents/{path_segment(document_id, 'document_id')}", "getDocument"
        )

    # -- operations (a request and its parser, run by either client) --------------------------
    def create_query(self, query: str, pagination_token: str | None = None) -> Steps[str]:
        """createQuery: the new ``queryId``."""
        return one_call(self.create_query_request(query, pagination_token), parse_created)

    def get_query(self, query_id: str) -> Steps[dict[str, Any]]:
        """getQuery: the Query object."""
        return one_call(self.get_query_request(query_id), parse_query)

    def get_queries(self, **filters: Any) -> Steps[tuple[list[dict[str, Any]], str | None]]:
        """getQueries (filters as :meth:`get_queries_request`): one page and the next token."""
        return one_call(self.get_queries_request(**filters), parse_queries_page)

    def list_statuses(self, wanted: Mapping[str, float], pages: int) -> Steps[dict[str, StatusSnapshot]]:
        """A getQueries sweep for coalesced polling: snapshots of the ``wanted`` queries it shows.

        Lists every status (so that every query shown answers its wait, running or finished)
        created within windows around the waits' start times (:func:`list_windows`), 100 a
        page, the windows with most waits first, at most ``pages`` calls in all; a window stops
        paging once all its waits are found. A 429 or 5xx page ends the sweep with what it
        found (never retried: the waits fall back to getQuery). A listed query lacking what its
        final snapshot needs is left out (:func:`listed_snapshot`).

        :param wanted: query id -> wall-clock time (``time.time()``) its wait started.
        :param pages: the most getQueries calls to make.
        """
        found: dict[str, StatusSnapshot] = {}
        for since, until, ids in list_windows(wanted, time.time()):
            token: str | None = None
            while pages > 0:
                request = self.get_queries_request(
                    processing_statuses=list(STATUSES),
                    page_size=MAX_PAGE_SIZE,
                    created_since=iso_time(since),
                    created_until=iso_time(until) if until is not None else None,
                    pagination_token=token,
                )
                response = yield replace(request, ok_statuses=LIST_GIVE_UP_STATUSES)
                pages -= 1
                if response.status in LIST_GIVE_UP_STATUSES:
                    return found
                queries, token = parse_queries_page(response)
                for query in queries:
                    query_id = str(query.get("queryId"))
                    snapshot = listed_snapshot(query) if query_id in wanted else None
                    if snapshot is not None:
                        found[query_id] = snapshot
                if not token or all(query_id in found for query_id in ids):
                    break
            if pages <= 0:
                break
        return found

    def find_marked(
        self, marker: str, created_after: float, pages: int
    ) -> Steps[tuple[list[dict[str, Any]], bool]]:
        """Every query whose operation name carries ``marker`` created at or after
        ``created_after`` (``time.time()`` seconds), and whether the walk saw them all.

        Lists every status created since ``created_after`` (whole seconds, rounded down; each
        listed ``createdTime`` is checked again), 100 a page, each page with every filter
        repeated (as getQueries requires with a ``paginationToken``), at most ``pages`` pages:
        a walk stopped by the cap is not complete.
        """
        filters = {
            "processing_statuses": list(STATUSES),
            "page_size": MAX_PAGE_SIZE,
            "created_since": iso_time(int(created_after)),
        }
        found: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(max(1, pages)):
            queries, token = yield from self.get_queries(**filters, pagination_token=token)
            for query in queries:
                created = parse_time(query.get("createdTime"))
                if (
                    created is not None
                    and created >= created_after
                    and marker_of(str(query.get("query") or "")) == marker
                ):
                    found.append(query)
            if not token:
                return found, True
        return found, False

    def get_document(self, document_id: str) -> Steps[str]:
        """getDocument: a fresh presigned URL."""
        return one_call(self.get_document_request(document_id), parse_document)

    def cancel_query(self, query_id: str) -> Steps[str | None]:
        """cancelQuery: ``None`` when cancelled, else the status the query had already reached.

        A 400 is read with the query's status: refused because the query has finished is not an
        error; refused for any other reason raises the 400 as the error it is.
        """
        request = self.cancel_query_request(query_id)
        response = yield request
        if response.status != 400:
            return None
        query = yield from self.get_query(query_id)
        if query.get("processingStatus") not in TERMINAL_STATUSES:
            raise self.error_for(request, response)
        return str(query.get("processingStatus"))


# -- answers ----------------------------------------------------------------------------------
def parse_created(response: ApiResponse) -> str:
    query_id = response.json_object().get("queryId")
    if not isinstance(query_id, str) or not query_id:
        raise ApiError(f"createQuery answered without a queryId: {response.text_excerpt()}")
    return query_id


def parse_query(response: ApiResponse) -> dict[str, Any]:
    body = response.json_object()
    if not body.get("queryId"):
        raise ApiError(f"getQuery answered without a queryId: {response.text_excerpt()}")
    return body


def parse_queries_page(response: ApiResponse) -> tuple[list[dict[str, Any]], str | None]:
    body = response.json_object()
    queries = body.get("queries") or []
    token = (body.get("pagination") or {}).get("nextToken")
    return [q for q in queries if isinstance(q, dict)], token or None


def iso_time(at: float) -> str:
    """A wall-clock time as getQueries' ``createdSince``/``createdUntil`` take it (ISO 8601, UTC)."""
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_windows(wanted: Mapping[str, float], now: float) -> list[tuple[float, float | None, list[str]]]:
    """Created-time windows of a getQueries sweep: ``(since, until, query ids)``, most ids first.

    A waited query was created at most :data:`LIST_LOOKBACK` before its wait started (one
    created earlier is simply not found, and its wait polls it with getQuery); windows closer
    than :data:`LIST_MERGE_GAP` are merged. ``until`` is ``None`` for a window reaching the
    present: getQueries then uses its own clock's now (ours may be ahead of Amazon's).
    """
    windows: list[tuple[float, float, list[str]]] = []
    for query_id, started in sorted(wanted.items(), key=lambda item: item[1]):
        since, until = started - LIST_LOOKBACK, started + LIST_CLOCK_SKEW
        if windows and since - windows[-1][1] <= LIST_MERGE_GAP:
            first, _, ids = windows[-1]
            windows[-1] = (first, max(until, windows[-1][1]), [*ids, query_id])
        else:
            windows.append((since, until, [query_id]))
    ordered = sorted(windows, key=lambda window: -len(window[2]))
    return [(since, None if until >= now else until, ids) for since, until, ids in ordered]


def listed_snapshot(query: dict[str, Any]) -> StatusSnapshot | None:
    """A getQueries entry as its wait's snapshot (the same mapping as getQuery's), or ``None``
    when the entry cannot end the wait with everything its final snapshot needs: an unknown
    status, DONE without ``dataDocumentId`` (no data, or a list leaving it out: getQuery tells),
    FATAL without ``errorDocumentId``."""
    status = query.get("processingStatus")
    if status not in PROCESSING_STATUS_TO_QUERY_STATE or not query.get("queryId"):
        return None
    if status == "DONE" and not query.get("dataDocumentId"):
        return None
    if status == "FATAL" and not query.get("errorDocumentId"):
        return None
    return query_snapshot(query)


def parse_document(response: ApiResponse) -> str:
    url = response.json_object().get("documentUrl")
    if not isinstance(url, str) or not url:
        raise ApiError(f"getDocument answered without a documentUrl: {response.text_excerpt()}")
    return url


def next_token(query: dict[str, Any]) -> str | None:
    """The ``pagination.nextToken`` of a DONE query (more results to fetch), or ``None``."""
    token = (query.get("pagination") or {}).get("nextToken")
    return token if isinstance(token, str) and token else None


def page_record(snapshot: StatusSnapshot) -> dict[str, Any]:
    """What XCom shows of one finished query (one result page)."""
    raw = snapshot.raw
    return {
        "query_id": snapshot.query_id,
        "status": snapshot.remote_status,
        "data_document_id": raw.get("dataDocumentId"),
        "error_document_id": raw.get("errorDocumentId"),
        "next_token": next_token(raw),
        "fetch": None,
    }


def query_snapshot(query: dict[str, Any]) -> StatusSnapshot:
    """Normalise a Query object; an unknown status fails (with the raw object)."""
    status = query.get("processingStatus")
    state = PROCESSING_STATUS_TO_QUERY_STATE.get(str(status), QueryState.FAILED)
    message = None
    if status not in PROCESSING_STATUS_TO_QUERY_STATE:
        message = f"unknown processingStatus {status!r}"
    elif state is QueryState.FAILED:
        message = f"error document {query.get('errorDocumentId') or '(none)'}"
    return StatusSnapshot(str(query.get("queryId")), state, status, raw=query, message=message)


def error_document_message(body: bytes) -> str:
    """The ``errorMessage`` of an error document, or its raw text (the shape is not modelled)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body[:2000].decode("utf-8", "replace")
    if isinstance(parsed, dict) and isinstance(parsed.get("errorMessage"), str):
        return str(parsed["errorMessage"])
    return first_error_text(parsed) or body[:2000].decode("utf-8", "replace")


# -- query validation -------------------------------------------------------------------------
def compact_query(query: str) -> str:
    """The query with every character GraphQL ignores removed where the language allows it
    (whitespace, commas, comments; one space kept only between two words or numbers): the
    shortest text Amazon's "after unnecessary whitespace is removed" can count. Text that does not
    lex as GraphQL loses all its whitespace instead (shorter still)."""
    from graphql import GraphQLError
    from graphql.utilities import strip_ignored_characters

    try:
        return str(strip_ignored_characters(query))
    except GraphQLError:
        return re.sub(r"\s+", "", query)


def minimal_query_length(query: str) -> int:
    """A lower bound of the length Data Kiosk's 8,000-character limit counts (see
    :func:`compact_query`): a query longer than the limit by this count is surely refused; one
    within it is sent (Amazon then decides)."""
    return len(compact_query(query))


@functools.cache
def shipped_schemas() -> dict[str, Any]:
    """Dataset root field (``analytics_salesAndTraffic_2024_04_24``) -> its GraphQL schema."""
    from graphql import build_schema

    schemas: dict[str, Any] = {}
    folder = resources.files("airflow_provider_querytasks") / "schemas" / "data_kiosk"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".graphql"):
            schema = build_schema(item.read_text(encoding="utf-8"))
            query_type = schema.query_type
            assert query_type is not None
            for name in query_type.fields:
                schemas[name] = schema
    return schemas


def validate_query(query: Any, *, validate_schema: bool = True) -> str:
    """Check a Data Kiosk query before it is submitted; returns it unchanged.

    Non-empty, at most 8,000 characters in its minimal form (:func:`minimal_query_length`: only
    a query surely too long is refused), and (unless
    ``validate_schema`` is False, for datasets newer than the shipped schemas) valid against
    the shipped schema of the dataset it selects.

    :raises InvalidInputError: naming ``query`` with the GraphQL error and its location.
    """
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError("query", "must be a non-empty GraphQL query")
    length = minimal_query_length(query)
    if length > MAX_QUERY_LENGTH:
        raise InvalidInputError(
            "query",
            f"is {length} characters even with every whitespace, comma and comment GraphQL does not "
            f"need removed; Data Kiosk takes at most {MAX_QUERY_LENGTH}",
        )
    if not validate_schema:
        return query
    from graphql import GraphQLError, OperationDefinitionNode, parse, validate

    try:
        document = parse(query)
    except GraphQLError as exc:
        raise InvalidInputError("query", f"is not valid GraphQL: {exc.message} at {_where(exc)}") from None
    roots = {
        selection.name.value
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
        for selection in definition.selection_set.selections
        if hasattr(selection, "name")
    }
    schemas = shipped_schemas()
    known = [root for root in roots if root in schemas]
    if not known:
        raise InvalidInputError(
            "query",
            f"selects {', '.join(sorted(roots)) or 'nothing'}; the shipped schemas know "
            f"{', '.join(sorted(schemas))} (pass validate_schema=False for a newer dataset)",
        )
    errors = validate(schemas[known[0]], document)
    if errors:
        details = "; ".join(f"{error.message} at {_where(error)}" for error in errors[:5])
        raise InvalidInputError("query", f"does not match the {known[0]} schema: {details}")
    return query


# -- the task instance's marker ------------------------------------------------------------------
#: A marked query's operation name ends with this and 32 hex digits (see :func:`query_marker`).
MARKER_PREFIX = "airflow_"
_MARKER_AT_END = re.compile(r"(?:^|_)(" + MARKER_PREFIX + r"[0-9a-f]{32})$")


def query_marker(task_instance_name: str) -> str:
    """The GraphQL name that marks the queries one task instance submits: ``airflow_`` and 32 hex
    digits of the SHA-256 of its ``task_instance_name`` (dag, task, run, map index).

    createQuery takes only ``query`` and ``paginationToken``, and getQueries echoes only
    ``query``: the operation's *name* is the one place of the text that survives either reading
    of what Amazon echoes (the text as sent, or with "unnecessary whitespace" and comments
    removed, as the notification schema's example suggests); a comment would not.
    """
    return MARKER_PREFIX + hashlib.sha256(task_instance_name.encode()).hexdigest()[:32]


def _single_operation(query: str) -> Any:
    """The query's one operation definition, or ``None`` (not GraphQL, or several operations)."""
    from graphql import GraphQLError, OperationDefinitionNode, parse

    try:
        document = parse(query)
    except GraphQLError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return operations[0] if len(operations) == 1 else None


def mark_query(query: str, marker: str) -> str | None:
    """``query`` with its operation named ``marker`` (an anonymous operation) or
    ``<name>_<marker>`` (a named one), the rest of the text unchanged; ``None`` when it cannot be
    marked (not parseable, or more than one operation): its task then never re-attaches by
    look-up. Marking a marked query returns it unchanged."""
    operation = _single_operation(query)
    if operation is None or operation.loc is None:
        return None
    if operation.name is not None:
        name = operation.name.value
        if _MARKER_AT_END.search(name) and name.endswith(marker):
            return query
        start, end = operation.name.loc.start, operation.name.loc.end
        return f"{query[:start]}{name}_{marker}{query[end:]}"
    first = operation.loc.start_token
    if first.value == "query":  # "query {", "query ($x: T) {"
        return f"{query[: first.end]} {marker}{query[first.end :]}"
    return f"{query[: first.start]}query {marker} {query[first.start :]}"  # "{ ... }" shorthand


def marker_of(query: str) -> str | None:
    """The marker a query's operation name carries (see :func:`mark_query`), or ``None``."""
    operation = _single_operation(query)
    if operation is None or operation.name is None:
        return None
    found = _MARKER_AT_END.search(operation.name.value)
    return found.group(1) if found else None


def parse_time(text: Any) -> float | None:
    """An ISO 8601 date-time of a Query (``createdTime``) as ``time.time()`` seconds, or ``None``."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _where(error: Any) -> str:
    locations = getattr(error, "locations", None) or []
    return ", ".join(f"line {loc.line} column {loc.column}" for loc in locations) or "unknown position"


# -- notifications ----------------------------------------------------------------------------
@dataclass(frozen=True)
class QueryFinishedNotification:
    """A ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` notification (payload version 2023-11-15).

    :param account_id: the selling partner account (``queryId`` is unique only with it).
    :param query_id: the finished query.
    :param query: its text.
    :param processing_status: DONE, FATAL or CANCELLED.
    :param data_document_id: the data document, when the query produced data.
    :param error_document_id: the error document of a FATAL query.
    :param next_token: ``pagination.nextToken`` when more pages exist.
    :param event_time: the envelope's ``eventTime``.
    :param notification_id: ``notificationMetadata.notificationId``.
    """

    account_id: str
    query_id: str
    query: str
    processing_status: str
    data_document_id: str | None = None
    error_document_id: str | None = None
    next_token: str | None = None
    event_time: str | None = None
    notification_id: str | None = None

    @classmethod
    def parse(cls, envelope: Any) -> QueryFinishedNotification:
        """Validate an envelope: a dict, its JSON text, or an SQS message whose ``Body`` holds it.

        :raises InvalidInputError: naming ``notification`` and the missing or wrong field.
        """
        if isinstance(envelope, str | bytes):
            try:
                envelope = json.loads(envelope)
            except ValueError:
                raise InvalidInputError("notification", "is not JSON") from None
        if isinstance(envelope, dict) and "Body" in envelope and "notificationType" not in envelope:
            return cls.parse(envelope["Body"])  # an SQS message: the envelope is its body
        if not isinstance(envelope, dict):
            raise InvalidInputError("notification", "must be a JSON object")
        kind = envelope.get("notificationType")
        if kind != NOTIFICATION_TYPE:
            raise InvalidInputError("notification", f"notificationType is {kind!r}, not {NOTIFICATION_TYPE}")
        payload = envelope.get("payload")
        if not isinstance(payload, dict):
            raise InvalidInputError("notification", "has no payload object")
        for name in ("accountId", "queryId", "query", "processingStatus"):
            if not isinstance(payload.get(name), str) or not payload.get(name):
                raise InvalidInputError("notification", f"payload.{name} is missing")
        status = payload["processingStatus"]
        if status not in ("DONE", "FATAL", "CANCELLED"):
            raise InvalidInputError(
                "notification", f"payload.processingStatus {status!r} is not DONE, FATAL or CANCELLED"
            )
        metadata = envelope.get("notificationMetadata") or {}
        return cls(
            account_id=payload["accountId"],
            query_id=payload["queryId"],
            query=payload["query"],
            processing_status=status,
            data_document_id=payload.get("dataDocumentId"),
            error_document_id=payload.get("errorDocumentId"),
            next_token=(payload.get("pagination") or {}).get("nextToken"),
            event_time=envelope.get("eventTime"),
            notification_id=metadata.get("notificationId") if isinstance(metadata, dict) else None,
        )

    @classmethod
    def parse_all(cls, delivered: Any) -> list[QueryFinishedNotification]:
        """Every envelope in what a delivery carries: one envelope (see :meth:`parse`), a list, or
        the payload of the amazon provider's SQS trigger (``{"message_batch": [message, ...]}``,
        what an ``AssetWatcher`` on the queue puts in the asset event).

        :raises InvalidInputError: naming ``notification``, for an empty delivery or a bad envelope.
        """
        if isinstance(delivered, dict) and "message_batch" in delivered:
            delivered = delivered["message_batch"]
        items = delivered if isinstance(delivered, list) else [delivered]
        if not items:
            raise InvalidInputError("notification", "the delivery holds no message")
        return [cls.parse(item) for item in items]

    def to_query(self) -> dict[str, Any]:
        """The notification as a Query object (what a getQuery poll would have returned)."""
        query: dict[str, Any] = {
            "queryId": self.query_id,
            "query": self.query,
            "processingStatus": self.processing_status,
        }
        if self.data_document_id:
            query["dataDocumentId"] = self.data_document_id
        if self.error_document_id:
            query["errorDocumentId"] = self.error_document_id
        if self.next_token:
            query["pagination"] = {"nextToken": self.next_token}
        return query

    def snapshot(self) -> StatusSnapshot:
        return query_snapshot(self.to_query())


def read_notification(body: str) -> Notification | None:
    """An SQS message body as a completion notification, or ``None`` when it is not a valid
    ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` envelope (left on the queue for its consumer)."""
    try:
        notification = QueryFinishedNotification.parse(body)
    except InvalidInputError:
        return None
    return Notification(
        notification.query_id,
        account_key(notification.account_id),
        notification.snapshot(),
        account_as_sent=notification.account_id,
    )


class LwaTokenSource(TokenSource):
    """Login with Amazon refresh-token grant (form-encoded); tokens live an hour."""

    service = "LWA token endpoint"
    platform = "amazon_data_kiosk"
    operation = "lwaToken"
    hints = {
        **TokenSource.hints,
        "invalid_client": "check the LWA client id (login) and client secret (password) of {conn}",
        "invalid_grant": "the refresh token is wrong or its authorisation was revoked: have the "
        "selling partner authorise the app again and set the new refresh_token extra of {conn}",
    }

    def __init__(self, settings: DataKioskSettings) -> None:
        super().__init__(
            (settings.token_url, settings.client_id, settings.client_secret, settings.refresh_token),
            margin=300.0,
        )
        self.settings = settings

    def token_request(self) -> ApiRequest:
        data = {
            "grant_type": "refresh_token",
            "refresh_token": self.settings.refresh_token,
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
        }
        return self.form_request(self.settings.token_url, data)
