"""An emulator of the SP-API Data Kiosk 2023-11-15, its LWA token service, S3 documents and SQS.

Four sites on 127.0.0.1: ``api`` (the Data Kiosk operations), ``lwa`` (``POST /auth/o2/token``),
``storage`` (presigned documents that refuse ``x-amz-access-token``) and ``sqs`` (the queue the
``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` notifications go to, one per finished query). Usage
plans are enforced per operation and account with the published rates; statuses advance with
the clock.

Where the model and the docs are silent, the emulator takes the least convenient reading a
client could meet (``shared/api/open-readings.md``; each a knob):

- a notification's ``payload.accountId`` is prefixed (``amzn1.merchant.o.<merchant token>``, the
  schema's example) while the connection holds the bare merchant token (``account_prefix``);
- an access token dies before its ``expires_in`` (``early_expiry``, a fraction of it), answered
  with the documented 403 "expired";
- a revoked authorisation (:meth:`DataKioskEmulator.revoke`) and a missing Brand Analytics role
  (``missing_role``) both answer 403 ``Unauthorized`` / "Access to requested resource is denied."
  with no details, as public reports say the real service does: a 403 alone does not say which;
- getQueries lists in an order of its own (neither newest nor oldest first; stable across the
  pages of one listing);
- the ``query`` a Query object and a notification echo is the text with everything GraphQL
  ignores removed (as the schema's example notification shows it), and a next page's
  createQuery must repeat that echoed text, as the model says;
- the 8,000-character limit counts whitespace runs as one space and keeps comments (a client
  counting less sends a query this refuses with 400).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from airflow_provider_querytasks.testing.server import (
    EmulatorClock,
    EmulatorServer,
    RateBucket,
    connection_env,
    json_response,
)
from airflow_provider_querytasks.testing.sqs import SqsSite
from airflow_provider_querytasks.testing.storage import ObjectStorageSite

# The platform's facts, taken from its published model (dataKiosk_2023-11-15.json and
# DataKioskQueryProcessingFinishedNotification.json), not from the client: a wrong value on
# either side then shows (tests/test_emulator_facts.py compares them).
#: The paths' common prefix.
API_PATH = "/dataKiosk/2023-11-15"
#: Each operation's usage plan, "Rate (requests per second) | Burst", from its description.
USAGE_PLANS: dict[str, tuple[float, int]] = {
    "createQuery": (0.0167, 15),
    "getQueries": (0.0222, 10),
    "getQuery": (2.0, 15),
    "cancelQuery": (0.0222, 10),
    "getDocument": (0.0167, 15),
}
#: ``CreateQuerySpecification.query``: "at most 8000 characters after unnecessary whitespace is
#: removed".
MAX_QUERY_CHARACTERS = 8000
#: The notification's ``notificationType``.
NOTIFICATION_TYPE = "DATA_KIOSK_QUERY_PROCESSING_FINISHED"
#: ``Query.processingStatus`` and getQueries' ``processingStatuses`` items: the model's enum.
PROCESSING_STATUSES = ("CANCELLED", "DONE", "FATAL", "IN_PROGRESS", "IN_QUEUE")
#: getQueries' ``pageSize``: minimum, maximum, default.
PAGE_SIZE_BOUNDS = (1, 100)
DEFAULT_PAGE_SIZE = 10
#: getQueries' ``createdSince`` default: "90 days ago" (``createdUntil``: "the time of the
#: getQueries request").
DEFAULT_CREATED_SINCE_AGE = 90 * 86400.0

OUTCOMES = ("DONE", "NO_DATA", "FATAL")


def echoed_query(query: str) -> str:
    """The ``query`` a Query object echoes: the submitted text with every character GraphQL
    ignores removed (the notification schema's example is so), or as sent when it does not lex."""
    from graphql import GraphQLError
    from graphql.utilities import strip_ignored_characters

    try:
        return str(strip_ignored_characters(query))
    except GraphQLError:
        return query


def _list_order(seed: str, query_id: str) -> str:
    """getQueries' order: neither by creation time nor by id (the model does not say)."""
    return hashlib.sha256(f"{seed}:{query_id}".encode()).hexdigest()


def counted_query_length(query: str) -> int:
    """The length the 8,000-character limit counts: runs of whitespace count as one space."""
    return len(" ".join(query.split()))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class EmulatedQuery:
    """A Data Kiosk query as the emulator keeps it."""

    query_id: str
    query: str
    page: int
    created: float
    created_wall: float
    duration: float
    outcome: str
    pages: int
    rows: int
    cancelled: bool = False
    documents: dict[str, str] = field(default_factory=dict)


def _parse_iso(text: str) -> float:
    """An ISO 8601 date-time (``Z`` or an offset; UTC without one) as ``time.time()`` seconds."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


@dataclass(frozen=True)
class ListCursor:
    """What a getQueries ``nextToken`` stands for: the request's other parameters as sent (a
    later page must repeat them), the window they resolved to, and the last query returned."""

    parameters: tuple[tuple[str, ...], str | None, str | None]
    since: float
    until: float
    after: str


def _error(code: str, message: str, details: str = "") -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "details": details}]}


class DataKioskEmulator(EmulatorServer):
    """Data Kiosk on 127.0.0.1.

    :param client_id: the LWA client id accepted.
    :param client_secret: the LWA client secret accepted.
    :param refresh_token: the LWA refresh token accepted.
    :param account_id: the selling partner's account id (in notifications).
    :param token_ttl: access-token lifetime (``expires_in``), seconds.
    :param duration: emulator seconds from createQuery to the final status (IN_QUEUE for the
        first third, IN_PROGRESS after).
    :param outcome: how new queries end: ``DONE`` (with a data document), ``NO_DATA`` (DONE without
        one) or ``FATAL`` (with an error document).
    :param pages: result pages of a query (each DONE page but the last has a ``nextToken``).
    :param rows: JSONL records per data document.
    :param gzip: serve documents gzip-encoded.
    :param url_ttl: lifetime of document URLs (5 minutes on the real service).
    :param enforce_rate_limits: answer 429 above the published usage plans.
    :param error_message: the ``errorMessage`` of FATAL queries' error documents.
    :param aws_secret_access_key: the secret of the ``aws`` connection :meth:`aws_connection`
        returns (the SQS site checks the access key id only, not the SigV4 signature).
    :param notify: put a notification on the SQS queue :attr:`NOTIFICATION_QUEUE` when a query
        finishes (as a subscription to ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` does).
    :param account_prefix: what notifications put before ``account_id`` (``amzn1.merchant.o.``,
        the schema's example; ``amzn1.vg.`` for a vendor group; ``""``: the bare id).
    :param early_expiry: the fraction of ``expires_in`` an access token dies early (403 expired).
    :param missing_role: the application lacks the Brand Analytics role: every Data Kiosk call
        answers 403 ``Unauthorized``, as a revoked authorisation does.
    :param clock: emulator clock.
    """

    #: The SQS queue (on site ``sqs``) notifications are delivered to.
    NOTIFICATION_QUEUE = "data-kiosk-notifications"
    #: The AWS access key id the SQS site accepts (see :meth:`aws_connection`).
    AWS_ACCESS_KEY_ID = "AKIAEMULATORSQS00000"

    name = "data_kiosk"
    storage: ObjectStorageSite

    def __init__(
        self,
        *,
        client_id: str = "amzn1.application-oa2-client.emulator",
        client_secret: str = "data-kiosk-emulator-secret",
        refresh_token: str = "Atzr|data-kiosk-emulator-refresh",
        account_id: str = "A3EMULATORSP",
        token_ttl: float = 3600.0,
        duration: float = 1.5,
        outcome: str = "DONE",
        pages: int = 1,
        rows: int = 10,
        gzip: bool = False,
        url_ttl: float = 300.0,
        enforce_rate_limits: bool = True,
        error_message: str = "Dates in the query are invalid: startDate is after endDate.",
        aws_secret_access_key: str = "emulator-aws-secret-access-key",
        notify: bool = True,
        account_prefix: str = "amzn1.merchant.o.",
        early_expiry: float = 0.1,
        missing_role: bool = False,
        clock: EmulatorClock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.account_id = account_id
        self.token_ttl = token_ttl
        self.duration = duration
        self.outcome = outcome
        self.pages = pages
        self.rows = rows
        self.gzip = gzip
        self.url_ttl = url_ttl
        self.enforce_rate_limits = enforce_rate_limits
        self.error_message = error_message
        self.aws_secret_access_key = aws_secret_access_key
        self.notify = notify
        self.account_prefix = account_prefix
        self.early_expiry = early_expiry
        self.missing_role = missing_role
        #: The selling partner revoked the app's authorisation (:meth:`revoke`).
        self.revoked = False
        self.list_seed = uuid.uuid4().hex
        self.queries: dict[str, EmulatedQuery] = {}
        #: access token -> expiry (time.time()).
        self.tokens: dict[str, float] = {}
        self.storage = ObjectStorageSite(
            forbidden_headers=("x-amz-access-token",), style="s3", default_ttl=url_ttl
        )
        self.sqs = SqsSite(access_key_id=self.AWS_ACCESS_KEY_ID, before_receive=self.publish_notifications)
        self.sqs.create_queue(self.NOTIFICATION_QUEUE)
        self._notified: set[str] = set()
        self._documents: dict[str, str] = {}
        self._buckets: dict[str, RateBucket] = {}
        self._serial = itertools.count(1)
        self._cursors: dict[str, ListCursor] = {}

    # -- framework ----------------------------------------------------------------------------
    def build_sites(self) -> dict[str, web.Application]:
        api = web.Application()
        api.router.add_post(f"{API_PATH}/queries", self._create)
        api.router.add_get(f"{API_PATH}/queries", self._list)
        api.router.add_get(f"{API_PATH}/queries/{{query_id}}", self._get)
        api.router.add_delete(f"{API_PATH}/queries/{{query_id}}", self._cancel)
        api.router.add_get(f"{API_PATH}/documents/{{document_id}}", self._document)
        lwa = web.Application()
        lwa.router.add_post("/auth/o2/token", self._token)
        return {"api": api, "lwa": lwa, "storage": self.storage.app(), "sqs": self.sqs.app()}

    async def start_async(self) -> DataKioskEmulator:
        await super().start_async()
        self.sqs.base_url = self.urls["sqs"]
        return self

    @property
    def notification_queue_url(self) -> str:
        """The URL of the SQS queue notifications are delivered to."""
        return self.sqs.queue_url(self.NOTIFICATION_QUEUE)

    def environment(self) -> dict[str, str]:
        """Also the ``aws_default`` connection and ``DATA_KIOSK_NOTIFICATION_QUEUE`` (the queue the
        notification-driven example DAG watches)."""
        return {
            **super().environment(),
            **dict([connection_env(self.aws_connection())]),
            "DATA_KIOSK_NOTIFICATION_QUEUE": self.notification_queue_url,
        }

    def aws_connection(self, conn_id: str = "aws_default") -> dict[str, Any]:
        """An ``aws`` connection (amazon provider) pointing at the SQS site."""
        return {
            "conn_id": conn_id,
            "conn_type": "aws",
            "login": self.AWS_ACCESS_KEY_ID,
            "password": self.aws_secret_access_key,
            "extra": {"region_name": "us-east-1", "endpoint_url": self.urls["sqs"]},
        }

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def revoke(self) -> None:
        """The selling partner revokes the app's authorisation: the refresh token is refused
        (``invalid_grant``) and every access token answers 403 ``Unauthorized``."""
        self.revoked = True

    @property
    def notification_account_id(self) -> str:
        """``payload.accountId`` of the notifications (``account_prefix`` + ``account_id``)."""
        return f"{self.account_prefix}{self.account_id}"

    def connection(self, conn_id: str | None = None) -> dict[str, Any]:
        """An ``amazon_sp_api`` connection pointing at this emulator."""
        return {
            "conn_id": conn_id or "amazon_sp_api_default",
            "conn_type": "amazon_sp_api",
            "login": self.client_id,
            "password": self.client_secret,
            "extra": {
                "refresh_token": self.refresh_token,
                "region": "na",
                "endpoint": self.urls["api"],
                "lwa_endpoint": f"{self.urls['lwa']}/auth/o2/token",
                "selling_partner_id": self.account_id,
            },
        }

    # -- state --------------------------------------------------------------------------------
    def status_of(self, query: EmulatedQuery) -> str:
        age = self.clock.now() - query.created
        if query.cancelled:
            return "CANCELLED"
        if age < query.duration / 3:
            return "IN_QUEUE"
        if age < query.duration:
            return "IN_PROGRESS"
        return "FATAL" if query.outcome == "FATAL" else "DONE"

    def _new_document(self, query: EmulatedQuery, kind: str) -> str:
        if kind in query.documents:
            return query.documents[kind]
        document_id = f"amzn1.tortuga.4.na.{uuid.uuid4()}"
        key = f"{document_id}.{'jsonl' if kind == 'data' else 'json'}"
        if kind == "data":
            lines = [
                json.dumps(
                    {
                        "startDate": f"2026-11-{(query.page + i) % 28 + 1:02d}",
                        "endDate": f"2026-11-{(query.page + i) % 28 + 1:02d}",
                        "page": query.page,
                        "record": i,
                        "sales": {"orderedProductSales": {"amount": 10.5 * (i + 1), "currencyCode": "USD"}},
                        "traffic": {"pageViews": 100 + i, "sessions": 40 + i},
                    }
                )
                for i in range(query.rows)
            ]
            data = ("\n".join(lines) + "\n").encode() if lines else b""
            self.storage.put(key, data, content_type="application/x-ndjson", gzip=self.gzip)
        else:
            self.storage.put(key, json.dumps({"errorMessage": self.error_message}).encode(), gzip=self.gzip)
        query.documents[kind] = document_id
        self._documents[document_id] = key
        return document_id

    def query_body(self, query: EmulatedQuery) -> dict[str, Any]:
        status = self.status_of(query)
        body: dict[str, Any] = {
            "queryId": query.query_id,
            "query": echoed_query(query.query),
            "createdTime": _iso(query.created_wall),
            "processingStatus": status,
        }
        if status in ("IN_PROGRESS", "DONE", "FATAL"):
            body["processingStartTime"] = _iso(query.created_wall + query.duration / 3)
        if status in ("DONE", "FATAL"):
            body["processingEndTime"] = _iso(query.created_wall + query.duration)
        if status == "DONE" and query.outcome == "DONE":
            body["dataDocumentId"] = self._new_document(query, "data")
        if status == "FATAL":
            body["errorDocumentId"] = self._new_document(query, "error")
        if status == "DONE" and query.page < query.pages:
            body["pagination"] = {"nextToken": f"page-{query.page + 1}-{query.query_id}"}
        return body

    def notification_for(self, query_id: str) -> dict[str, Any]:
        """The ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` envelope for a finished query."""
        body = self.query_body(self.queries[query_id])
        if body["processingStatus"] not in ("DONE", "FATAL", "CANCELLED"):
            raise ValueError(f"query {query_id} has not finished")
        payload = {
            "accountId": self.notification_account_id,
            "queryId": query_id,
            "query": body["query"],
            "processingStatus": body["processingStatus"],
        }
        for name in ("dataDocumentId", "errorDocumentId", "pagination"):
            if name in body:
                payload[name] = body[name]
        return {
            "notificationVersion": "2023-11-15",
            "notificationType": NOTIFICATION_TYPE,
            "payloadVersion": "2023-11-15",
            "eventTime": _iso(time.time()),
            "payload": payload,
            "notificationMetadata": {
                "applicationId": "amzn1.sellerapps.app.emulator",
                "subscriptionId": "emulator-subscription",
                "publishTime": _iso(time.time()),
                "notificationId": str(uuid.uuid4()),
            },
        }

    def publish_notifications(self) -> None:
        """Queue the notification of every query that has finished since the last call.

        Called before each SQS receive, so a notification is there as soon as a consumer could
        see it, whether or not anybody polled the query.
        """
        if not self.notify:
            return
        for query in list(self.queries.values()):
            if query.query_id not in self._notified and self.status_of(query) in (
                "DONE",
                "FATAL",
                "CANCELLED",
            ):
                self._notified.add(query.query_id)
                self.sqs.send(self.NOTIFICATION_QUEUE, self.notification_for(query.query_id))

    def add_query(self, text: str, page: int = 1) -> EmulatedQuery:
        """Create a query server-side, as createQuery does (seeds tests without the usage plan)."""
        query = EmulatedQuery(
            query_id=str(next(self._serial) * 1000 + 17),
            query=text,
            page=page,
            created=self.clock.now(),
            created_wall=time.time(),
            duration=self.duration,
            outcome=self.outcome,
            pages=self.pages,
            rows=self.rows,
        )
        self.queries[query.query_id] = query
        return query

    # -- helpers ------------------------------------------------------------------------------
    def _reply(self, body: Any, status: int = 200, operation: str | None = None) -> web.Response:
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if operation and (status < 300 or status in (400, 404)):
            headers["x-amzn-RateLimit-Limit"] = str(USAGE_PLANS[operation][0])
        return json_response(body, status=status, headers=headers)

    def _authorise(self, request: web.Request, operation: str) -> web.Response | None:
        token = request.headers.get("x-amz-access-token", "")
        expiry = self.tokens.get(token)
        if expiry is not None and (self.revoked or self.missing_role):
            return self._reply(_error("Unauthorized", "Access to requested resource is denied."), 403)
        if expiry is None or expiry <= time.time():
            details = "The access token you provided has expired." if token else ""
            return self._reply(
                _error("Unauthorized", "Access to requested resource is denied.", details), 403
            )
        if self.enforce_rate_limits:
            rate, burst = USAGE_PLANS[operation]
            bucket = self._buckets.setdefault(operation, RateBucket(burst, rate))
            if not bucket.take():
                return self._reply(
                    _error("QuotaExceeded", "You exceeded your quota for the requested resource."), 429
                )
        return None

    # -- routes -------------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, 401
            )
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("refresh_token") != self.refresh_token
            or self.revoked
        ):
            return json_response(
                {"error": "invalid_grant", "error_description": "The request has an invalid grant parameter"},
                400,
            )
        access = f"Atza|emulator-{uuid.uuid4().hex}"
        self.tokens[access] = time.time() + self.token_ttl * (1.0 - self.early_expiry)
        return json_response(
            {
                "access_token": access,
                "refresh_token": self.refresh_token,
                "token_type": "bearer",
                "expires_in": int(self.token_ttl),
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        refused = self._authorise(request, "createQuery")
        if refused is not None:
            return refused
        try:
            spec = json.loads(await request.read())
        except ValueError:
            return self._reply(_error("InvalidInput", "Request body is not valid JSON."), 400, "createQuery")
        text = spec.get("query") if isinstance(spec, dict) else None
        if not isinstance(text, str) or not text.strip():
            return self._reply(_error("InvalidInput", "query is required."), 400, "createQuery")
        if counted_query_length(text) > MAX_QUERY_CHARACTERS:
            return self._reply(_error("InvalidInput", "query exceeds 8000 characters."), 400, "createQuery")
        page = 1
        token = spec.get("paginationToken")
        if token:
            parent = self.queries.get(str(token).split("-", 2)[-1])
            if not str(token).startswith("page-") or parent is None or echoed_query(parent.query) != text:
                return self._reply(_error("InvalidInput", "Invalid paginationToken."), 400, "createQuery")
            page = int(str(token).split("-")[1])
        query = self.add_query(text, page)
        return self._reply({"queryId": query.query_id}, 202, "createQuery")

    async def _list(self, request: web.Request) -> web.Response:
        """getQueries: filters, created-time window, an order of its own, ``nextToken`` paging."""
        refused = self._authorise(request, "getQueries")
        if refused is not None:
            return refused

        def invalid(message: str) -> web.Response:
            return self._reply(_error("InvalidInput", message), 400, "getQueries")

        # An array parameter: comma-separated (Swagger's default collectionFormat), or repeated.
        given = request.query.getall("processingStatuses", [])
        statuses = tuple(item for value in given for item in value.split(",") if item)
        if given and not statuses:
            return invalid("processingStatuses must have at least 1 item.")
        wrong = [status for status in statuses if status not in PROCESSING_STATUSES]
        if wrong:
            return invalid(
                f"1 validation error detected: Value '[{', '.join(wrong)}]' at 'processingStatuses' "
                "failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy "
                "enum value set: [DONE, FATAL, IN_PROGRESS, CANCELLED, IN_QUEUE]]"
            )
        try:
            size = int(request.query.get("pageSize", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            return invalid("pageSize must be an integer.")
        low, high = PAGE_SIZE_BOUNDS
        if not low <= size <= high:
            return invalid(f"pageSize must be between {low} and {high}.")
        since_text, until_text = request.query.get("createdSince"), request.query.get("createdUntil")
        parameters = (statuses, since_text, until_text)
        token = request.query.get("paginationToken")
        if token is not None:
            cursor = self._cursors.get(token)
            if cursor is None:
                return invalid("Invalid paginationToken.")
            if cursor.parameters != parameters:
                return invalid(
                    "paginationToken was issued for other parameters: repeat every parameter "
                    "but pageSize with the values of the request that returned it."
                )
            since, until, after = cursor.since, cursor.until, cursor.after
        else:
            now = time.time()
            try:
                since = _parse_iso(since_text) if since_text else now - DEFAULT_CREATED_SINCE_AGE
                until = _parse_iso(until_text) if until_text else now
            except ValueError:
                return invalid("createdSince and createdUntil must be ISO 8601 date-times.")
            after = ""
        matching = sorted(
            (
                (_list_order(self.list_seed, query.query_id), query)
                for query in self.queries.values()
                if since <= query.created_wall <= until
                and (not statuses or self.status_of(query) in statuses)
            ),
            key=lambda item: item[0],
        )
        rest = [(key, query) for key, query in matching if key > after]
        page = rest[:size]
        result: dict[str, Any] = {"queries": [self.query_body(query) for _, query in page]}
        if len(rest) > size:
            next_token = uuid.uuid4().hex
            self._cursors[next_token] = ListCursor(parameters, since, until, page[-1][0])
            result["pagination"] = {"nextToken": next_token}
        return self._reply(result, 200, "getQueries")

    async def _get(self, request: web.Request) -> web.Response:
        refused = self._authorise(request, "getQuery")
        if refused is not None:
            return refused
        query = self.queries.get(request.match_info["query_id"])
        if query is None:
            return self._reply(_error("NotFound", "Query not found."), 404, "getQuery")
        return self._reply(self.query_body(query), 200, "getQuery")

    async def _cancel(self, request: web.Request) -> web.Response:
        refused = self._authorise(request, "cancelQuery")
        if refused is not None:
            return refused
        query = self.queries.get(request.match_info["query_id"])
        if query is None:
            return self._reply(_error("NotFound", "Query not found."), 404, "cancelQuery")
        status = self.status_of(query)
        if status in ("DONE", "FATAL"):
            return self._reply(
                _error("InvalidInput", f"Query {query.query_id} has already finished ({status})."),
                400,
                "cancelQuery",
            )
        query.cancelled = True
        return self._reply(None, 204, "cancelQuery")

    async def _document(self, request: web.Request) -> web.Response:
        refused = self._authorise(request, "getDocument")
        if refused is not None:
            return refused
        document_id = request.match_info["document_id"]
        key = self._documents.get(document_id)
        if key is None:
            return self._reply(_error("NotFound", "Document not found."), 404, "getDocument")
        return self._reply(
            {"documentId": document_id, "documentUrl": self.storage.presign(key, self.url_ttl)},
            200,
            "getDocument",
        )
