"""An emulator of Adobe Experience Platform Query Service, Catalog, Data Access and IMS.

Two sites on 127.0.0.1: ``ims`` (``POST /ims/token/v3``) and ``api`` (Query Service under
``/data/foundation/query``, Catalog under ``/data/foundation/catalog``, Data Access under
``/data/foundation/export``). Every ``api`` call passes the gateway checks first (token, API key,
org, sandbox) with the gateway's ``{"error_code", "message"}`` bodies.

A query's outcome is driven by its SQL: ``-- emulator: FAILED`` (or ``KILLED``, ``TIMEOUT``,
``SUCCESS_WITH_ERRORS``) anywhere in it; otherwise :attr:`AdobeQueryServiceEmulator.outcome`.
``-- emulator-duration: 600`` sets how many emulator seconds it runs.

Where the specs (``query-service.yaml``, ``catalog.yaml``, ``data-access.yaml``) and Adobe's docs
leave a reading open, the emulator takes the least convenient one they allow, so the client's
defensive paths run in every test:

- a ``/queries`` next link carries only ``orderby`` and ``start``, as the documented example
  (seed 003) does: the filter and the page size are gone unless the client sends them again
  (``next_link="documented"``; ``"full"`` keeps them);
- the ``start`` cursor of a next link is written with a ``+00:00`` offset (``cursor_zone``),
  which a client that form-decodes the link turns into a space (refused with a 400);
- ``created`` has millisecond resolution (``created_resolution``) and queries created in the same
  instant tie; the spec says nothing of how ties are ordered, so they come in random order, and
  the ``start`` cursor includes its own value (``_page.next`` is "the start value for the next
  page"): tied items at a page boundary come again on the next page;
- the query object has no top-level ``name`` or ``description`` (the spec's ``query`` schema has
  neither): what was submitted is echoed in ``request`` only;
- ``triggerScheduleRun`` answers 202 without a run id, and the run shows in the list only
  ``run_delay`` seconds later; a run's ``state`` is one of the spec's three (a cancelled run
  reads ``FAILED``) and ``externalTrigger`` a boolean;
- an IMS token stops working ``token_early`` seconds before the ``expires_in`` it announced;
- a Data Access file download gives its bytes to an ``Accept`` that allows
  ``application/octet-stream`` only (else 406), and with ``cut_after`` set, each response
  ends after that many bytes (the 60 s response limit), resumable with ``Range``.

With a :class:`~.postgres.LocalPostgres` attached (:meth:`AdobeQueryServiceEmulator.attach_postgres`),
``GET /connection_parameters`` points at the PostgreSQL interface: a real server behind a
:class:`~.pgwire.PostgresWireProxy`, which holds it to Query Service's limits (TLS, ``53400`` for
a ``LIMIT`` over 100,000 and for the statement timeout, rows silently cut at 50,000 without
``LIMIT``, ``LIMIT 0`` for no cap).
"""

from __future__ import annotations

import itertools
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_querytasks.testing.server import (
    EmulatorClock,
    EmulatorServer,
    RateBucket,
    connection_env,
    json_response,
)

if TYPE_CHECKING:
    from airflow_provider_querytasks.testing.pgwire import PostgresWireProxy
    from airflow_provider_querytasks.testing.postgres import LocalPostgres

# The platform's facts, from its OpenAPI descriptions (their ``servers``), not from the client: a
# wrong value on either side then shows (tests/test_emulator_facts.py compares them).
#: Query Service (query-service.yaml).
QUERY = "/data/foundation/query"
#: Catalog Service (catalog.yaml).
CATALOG = "/data/foundation/catalog"
#: Data Access (data-access.yaml).
EXPORT = "/data/foundation/export"

OUTCOMES = ("SUCCESS", "FAILED", "KILLED", "TIMEOUT", "SUCCESS_WITH_ERRORS")
TERMINAL = ("SUCCESS", "FAILED", "KILLED", "TIMEOUT")
MARKER = re.compile(r"--\s*emulator:\s*(\w+)")
DURATION_MARKER = re.compile(r"--\s*emulator-duration:\s*([0-9.]+)")


def _iso(at: float, zone: str = "Z") -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + zone


def _parse_iso(value: str) -> datetime | None:
    """An ISO 8601 timestamp (``Z`` or an offset; none means UTC), or ``None`` when malformed."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class EmulatedQuery:
    """A query the emulator holds: its request, timing, outcome and what it created."""

    id: str
    request: dict[str, Any]
    created: float
    created_wall: float
    duration: float
    outcome: str
    killed_at: float | None = None
    soft_deleted: bool = False
    dataset_id: str | None = None
    schedule_id: str | None = None
    run_id: str | None = None
    #: Wall-clock times at which a status read answered this query: its own ``GET /queries/{id}``
    #: or a ``GET /queries`` page that listed it (a coalesced poller reads statuses from lists).
    polled_at: list[float] = field(default_factory=list)


@dataclass
class EmulatedBatch:
    """A Catalog batch of a dataset, with its files (served by Data Access)."""

    id: str
    dataset_id: str
    created_wall: float
    created: float
    files: list[str] = field(default_factory=list)


class AdobeQueryServiceEmulator(EmulatorServer):
    """Query Service, Catalog, Data Access and IMS on 127.0.0.1.

    :param client_id: the client id (and ``x-api-key``) accepted.
    :param client_secret: the client secret accepted.
    :param org_id: the IMS organisation.
    :param sandboxes: sandbox names that exist.
    :param token_ttl: ``expires_in`` of IMS tokens, seconds.
    :param duration: emulator seconds from SUBMITTED to the final state (IN_PROGRESS after a third).
    :param outcome: the final state of queries without an ``-- emulator:`` marker.
    :param row_count: ``rowCount`` of successful queries.
    :param files_per_batch: files in a CTAS/INSERT batch (over 100 gives a second listing page).
    :param file_size: bytes per file.
    :param directory_every: every n-th file of a batch is listed behind a directory entry (0: none).
    :param batch_delay: emulator seconds a new batch stays ``processing`` after the query's SUCCESS.
    :param rate_limit: (requests per second, burst) per client id, or ``None`` (real limits are
        unknown); over it: 429 ``429050`` with ``Retry-After: 1``.
    :param cursor_zone: how the ``start`` cursor of a ``/queries`` next link writes its zone:
        ``Z`` (as the docs' examples) or an offset such as ``+00:00``, written as a literal ``+``
        (a client that form-decodes the link turns it into a space, refused with a 400).
    :param next_link: what a ``/queries`` next link carries: ``full`` (every parameter of the
        request but ``start``) or ``documented`` (the default: only ``orderby`` and ``start``, as
        the docs' example link; whether the real server then still applies ``property`` is
        unknown, so the emulator does not).
    :param created_resolution: ``created`` times are multiples of this many seconds (ties), or
        ``None``: each query is created a millisecond after the one before (no ties; for
        benchmarks, which measure polling, not the handling of ties).
    :param run_delay: wall-clock seconds before a triggered run shows in the list.
    :param token_early: seconds before its announced expiry that a token stops working (at most
        a tenth of its lifetime).
    :param cut_after: bytes after which a file download's response ends (``None``: whole).
    :param sql_row_cap: rows the PostgreSQL interface returns for a statement without ``LIMIT``
        (Query Service: 50,000; ``None``: no cap).
    :param sql_statement_timeout: seconds a PostgreSQL-interface statement may run before
        ``53400`` (Query Service: 600); ``None``: the attached server's ``statement_timeout``.
    :param sql_tls: whether the PostgreSQL interface speaks TLS (``sslmode=require``); by default
        where asyncio can (Python 3.11+).
    :param sql_copy: whether the PostgreSQL interface takes ``COPY ... TO STDOUT``, which Adobe
        does not document; by default it refuses it with ``0A000``.
    :param clock: emulator clock.
    """

    name = "adobe"

    def __init__(
        self,
        *,
        client_id: str = "adobe-emulator-client",
        client_secret: str = "adobe-emulator-secret",
        org_id: str = "EMULATOR0123456789@AdobeOrg",
        sandboxes: tuple[str, ...] = ("prod", "dev"),
        token_ttl: float = 86399.0,
        duration: float = 1.5,
        outcome: str = "SUCCESS",
        row_count: int = 42,
        files_per_batch: int = 2,
        file_size: int = 4096,
        directory_every: int = 2,
        batch_delay: float = 0.0,
        rate_limit: tuple[float, float] | None = None,
        cursor_zone: str = "+00:00",
        next_link: str = "documented",
        created_resolution: float | None = 0.001,
        run_delay: float = 0.2,
        token_early: float = 900.0,
        cut_after: int | None = None,
        sql_row_cap: int | None = 50_000,
        sql_statement_timeout: float | None = None,
        sql_tls: bool | None = None,
        sql_copy: bool = False,
        clock: EmulatorClock | None = None,
    ) -> None:
        from airflow_provider_querytasks.testing.pgwire import TLS_AVAILABLE

        super().__init__(clock=clock)
        self.client_id = client_id
        self.client_secret = client_secret
        self.org_id = org_id
        self.sandboxes = sandboxes
        self.token_ttl = token_ttl
        self.duration = duration
        self.outcome = outcome
        self.row_count = row_count
        self.files_per_batch = files_per_batch
        self.file_size = file_size
        self.directory_every = directory_every
        self.batch_delay = batch_delay
        self.rate_limit = rate_limit
        self.cursor_zone = cursor_zone
        if next_link not in ("full", "documented"):
            raise ValueError(f"next_link must be 'full' or 'documented', got {next_link!r}")
        self.next_link = next_link
        self.created_resolution = created_resolution
        self.run_delay = run_delay
        self.token_early = token_early
        self.cut_after = cut_after
        self.sql_row_cap = sql_row_cap
        self.sql_statement_timeout = sql_statement_timeout
        self.sql_tls = TLS_AVAILABLE if sql_tls is None else sql_tls
        self.sql_copy = sql_copy
        self.tokens: dict[str, float] = {}
        self.queries: dict[str, EmulatedQuery] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.schedules: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, EmulatedBatch] = {}
        #: dataSetFileId -> list of (name, bytes) or nested file ids (directories).
        self.files: dict[str, list[tuple[str, bytes] | str]] = {}
        self._bucket: RateBucket | None = None
        #: The PostgreSQL interface (``attach_postgres``) and the token that is its password.
        self.postgres: LocalPostgres | None = None
        #: The proxy in front of it that clients reach (Query Service's limits).
        self.wire: PostgresWireProxy | None = None
        self._sql_token: str | None = None
        self._serial = itertools.count(1)
        self._last_created_wall = 0.0

    # -- framework ----------------------------------------------------------------------------
    def build_sites(self) -> dict[str, web.Application]:
        ims = web.Application()
        ims.router.add_post("/ims/token/v3", self._token)
        api = web.Application(middlewares=[self._gateway])
        q = QUERY
        api.router.add_post(f"{q}/queries", self._create)
        api.router.add_get(f"{q}/queries", self._list)
        api.router.add_get(f"{q}/queries/{{id}}", self._get)
        api.router.add_get(f"{q}/connection_parameters", self._connection_parameters)
        api.router.add_patch(f"{q}/queries/{{id}}", self._patch)
        api.router.add_post(f"{q}/query-templates", self._create_template)
        api.router.add_get(f"{q}/query-templates", self._list_templates)
        api.router.add_get(f"{q}/query-templates/{{id}}", self._get_template)
        api.router.add_post(f"{q}/schedules", self._create_schedule)
        api.router.add_get(f"{q}/schedules", self._list_schedules)
        api.router.add_get(f"{q}/schedules/{{id}}", self._get_schedule)
        api.router.add_patch(f"{q}/schedules/{{id}}", self._patch_schedule)
        api.router.add_get(f"{q}/schedules/{{id}}/runs", self._list_runs)
        api.router.add_post(f"{q}/schedules/{{id}}/runs", self._trigger_run)
        api.router.add_get(f"{q}/schedules/{{id}}/runs/{{run}}", self._get_run)
        api.router.add_patch(f"{q}/schedules/{{id}}/runs/{{run}}", self._cancel_run)
        api.router.add_get(f"{CATALOG}/dataSets", self._find_datasets)
        api.router.add_get(f"{CATALOG}/dataSets/{{id}}", self._get_dataset)
        api.router.add_get(f"{CATALOG}/batches", self._list_batches)
        api.router.add_get(f"{EXPORT}/batches/{{id}}/files", self._batch_files)
        api.router.add_get(f"{EXPORT}/files/{{id}}", self._file)
        return {"ims": ims, "api": api}

    def expire_tokens(self) -> None:
        self.tokens.clear()
        if self.postgres is not None:
            # The least convenient reading: an expired token logs in nowhere, and the sessions
            # it opened end (a client must reconnect with a fresh token).
            self._sql_token = None
            self.postgres.set_password(self.org_id, None)
            self.postgres.end_sessions(self.org_id)

    # -- the PostgreSQL interface -------------------------------------------------------------
    def attach_postgres(self, postgres: LocalPostgres) -> None:
        """Serve ``postgres`` (started) as the PostgreSQL interface: a login role named as the
        organisation, whose password is the current IMS token, and a ``<sandbox>:all`` database
        per sandbox with the seed tables. While it is attached, IMS hands out one current token
        (a new one once it expired), so that one password serves every client.

        Clients reach it through a :class:`~.pgwire.PostgresWireProxy` (started here, stopped
        with the emulator) that enforces Query Service's limits: ``GET /connection_parameters``
        answers the proxy's host and port."""
        from airflow_provider_querytasks.testing.pgwire import PostgresWireProxy

        postgres.add_login_role(self.org_id, None)
        for sandbox in self.sandboxes:
            postgres.add_database(f"{sandbox}:all", self.org_id)
        self.postgres = postgres
        self.wire = PostgresWireProxy(
            postgres.host,
            postgres.port,
            row_cap=self.sql_row_cap,
            statement_timeout=self.sql_statement_timeout or postgres.statement_timeout,
            tls=self.sql_tls,
            copy=self.sql_copy,
        ).start()

    def stop(self) -> None:
        """Stop the emulator and its PostgreSQL proxy (the PostgreSQL server is the caller's)."""
        if self.wire is not None:
            self.wire.stop()
            self.wire = None
        super().stop()

    def sql_connection(self, conn_id: str | None = None) -> dict[str, Any]:
        """An ``adobe_query_service_sql`` connection pointing at this emulator (same credentials).

        ``sslmode`` is the hook's default ``require`` when the proxy speaks TLS; otherwise
        ``prefer`` (allowed for loopback hosts only).
        """
        conn = self.connection(conn_id or "adobe_query_service_sql_default")
        conn["conn_type"] = "adobe_query_service_sql"
        conn["extra"]["sslmode"] = "require" if self.sql_tls else "prefer"
        return conn

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.postgres is not None:
            env.update([connection_env(self.sql_connection())])
        return env

    async def _connection_parameters(self, request: web.Request) -> web.Response:
        if self.wire is None:
            return json_response(
                {"message": "this emulator has no PostgreSQL interface (attach_postgres)", "statusCode": 500},
                500,
            )
        token = request.headers["Authorization"].removeprefix("Bearer ")
        sandbox = request.headers["x-sandbox-name"]
        return json_response(
            {
                "username": self.org_id,
                "dbName": f"{sandbox}:all",
                "host": self.wire.host,
                "port": self.wire.port,
                "version": 1,
                "token": token,  # the caller's token, as the real answer echoes it
                "compressedToken": token[::-1],
                "websocketHost": "query-service-interactive-ws.emulator.invalid",
            }
        )

    def connection(self, conn_id: str | None = None) -> dict[str, Any]:
        """An ``adobe_experience_platform`` connection pointing at this emulator."""
        return {
            "conn_id": conn_id or "adobe_experience_platform_default",
            "conn_type": "adobe_experience_platform",
            "login": self.client_id,
            "password": self.client_secret,
            "extra": {
                "org_id": self.org_id,
                "sandbox": self.sandboxes[0],
                "endpoint": self.urls["api"],
                "ims_endpoint": f"{self.urls['ims']}/ims/token/v3",
            },
        }

    # -- gateway ------------------------------------------------------------------------------
    @staticmethod
    def _gateway_error(code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return json_response({"error_code": code, "message": message}, int(code[:3]), headers)

    @web.middleware
    async def _gateway(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self._gateway_error("403010", "Oauth token is missing.")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or self.tokens.get(token, 0.0) <= time.time():
            return self._gateway_error("401013", "Oauth token is not valid")
        if not request.headers.get("x-api-key"):
            return self._gateway_error("403000", "Api Key is required")
        if request.headers.get("x-api-key") != self.client_id:
            return self._gateway_error("403003", "Api Key is invalid")
        if request.headers.get("x-gw-ims-org-id") != self.org_id:
            return self._gateway_error("400003", "Missing or invalid header x-gw-ims-org-id")
        if request.headers.get("x-sandbox-name") not in self.sandboxes:
            return json_response(
                {"message": "Missing or invalid x-sandbox-name header", "statusCode": 400}, 400
            )
        if self.rate_limit is not None:
            self._bucket = self._bucket or RateBucket(self.rate_limit[1], self.rate_limit[0])
            if not self._bucket.take():
                return self._gateway_error("429050", "Too many requests", {"Retry-After": "1"})
        response: web.StreamResponse = await handler(request)
        response.headers.setdefault("x-request-id", request.headers.get("x-request-id") or str(uuid.uuid4()))
        return response

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        if request.query.get("client_secret"):
            return json_response(
                {"error": "invalid_request", "error_description": "secret in query string"}, 400
            )
        if form.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return json_response(
                {"error": "invalid_client", "error_description": "invalid client_id parameter"}, 400
            )
        if not form.get("scope"):
            return json_response({"error": "invalid_scope"}, 400)
        early = min(self.token_early, 0.1 * self.token_ttl)  # it dies before it says it will
        expires_in = int(self.token_ttl)
        if (
            self.postgres is not None
            and self._sql_token
            and self.tokens.get(self._sql_token, 0) > time.time()
        ):
            access = self._sql_token
            expires_in = max(1, int(self.tokens[access] + early - time.time()))
        else:
            access = f"eyJemulator.{uuid.uuid4().hex}"
            self.tokens[access] = time.time() + self.token_ttl - early
            if self.postgres is not None:  # the PostgreSQL password is the current token
                self._sql_token = access
                self.postgres.set_password(self.org_id, access)
        return json_response(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": expires_in,
            }
        )

    # -- queries ------------------------------------------------------------------------------
    def polls_of(self, query_id: str, after: float = 0.0) -> int:
        """How many status reads answered ``query_id`` after ``after`` (wall clock), by its own
        GET or in a list page."""
        return sum(1 for at in self.queries[query_id].polled_at if at > after)

    def state_of(self, query: EmulatedQuery) -> str:
        now = self.clock.now()
        if query.killed_at is not None:
            return "KILLED"
        age = now - query.created
        if age < query.duration / 3:
            return "SUBMITTED"
        if age < query.duration:
            return "IN_PROGRESS"
        return "SUCCESS" if query.outcome == "SUCCESS_WITH_ERRORS" else query.outcome

    def updated_wall(self, query: EmulatedQuery) -> float:
        """When the query last changed state (``updated``), on the wall clock."""
        age = self.clock.now() - query.created
        if query.killed_at is not None:
            changed = query.killed_at - query.created
        elif age >= query.duration:
            changed = query.duration
        elif age >= query.duration / 3:
            changed = query.duration / 3
        else:
            changed = 0.0
        return query.created_wall + changed

    def add_query(self, request: dict[str, Any], **links: Any) -> EmulatedQuery:
        """Create a query server-side, as ``POST /queries`` does."""
        sql = str(request.get("sql") or self.templates.get(str(request.get("templateId")), {}).get("sql", ""))
        marker = MARKER.search(sql)
        outcome = marker.group(1).upper() if marker and marker.group(1).upper() in OUTCOMES else self.outcome
        duration = DURATION_MARKER.search(sql)
        if self.created_resolution is None:  # one millisecond per query: no ties
            created_wall = max(time.time(), self._last_created_wall + 0.001)
        else:  # at the API's resolution: queries created in the same instant tie
            created_wall = time.time() // self.created_resolution * self.created_resolution
        self._last_created_wall = created_wall
        query = EmulatedQuery(
            id=str(uuid.uuid4()),
            request=request,
            created=self.clock.now(),
            created_wall=created_wall,
            duration=float(duration.group(1)) if duration else self.duration,
            outcome=outcome,
            **links,
        )
        self.queries[query.id] = query
        return query

    def _output(self, query: EmulatedQuery) -> str | None:
        """On SUCCESS of a CTAS/INSERT: the dataset, with a new batch of files (created once)."""
        target = query.request.get("ctasParameters") or query.request.get("insertIntoParameters")
        if not target:
            return None
        if query.dataset_id is None:
            name = str(target.get("datasetName"))
            existing = [d for d, v in self.datasets.items() if v["name"] == name]
            dataset_id = existing[0] if existing else uuid.uuid4().hex[:24]
            self.datasets.setdefault(
                dataset_id,
                {"name": name, "created": int(time.time() * 1000), "tags": {"adobe/pqs/table": [name]}},
            )
            self._new_batch(dataset_id)
            query.dataset_id = dataset_id
        return query.dataset_id

    def _new_batch(self, dataset_id: str) -> EmulatedBatch:
        batch = EmulatedBatch(uuid.uuid4().hex[:26].upper(), dataset_id, time.time(), self.clock.now())
        for index in range(self.files_per_batch):
            name = f"part-{index:05d}-{batch.id[:8].lower()}.snappy.parquet"
            # Not a readable Parquet file: Parquet's magic bytes around deterministic filler.
            filler = (f"{batch.id}:{index}:".encode() * (self.file_size // 16 + 1))[
                : max(0, self.file_size - 8)
            ]
            file_id = f"{batch.id}-{index}"
            self.files[file_id] = [(name, b"PAR1" + filler + b"PAR1")]
            if self.directory_every and index % self.directory_every == 1:
                directory = f"{batch.id}-dir{index}"
                self.files[directory] = [file_id]  # a directory level above the file
                batch.files.append(directory)
            else:
                batch.files.append(file_id)
        self.batches[batch.id] = batch
        return batch

    def query_body(self, query: EmulatedQuery) -> dict[str, Any]:
        state = self.state_of(query)
        base = f"{self.urls['api']}{QUERY}/queries/{query.id}"
        body: dict[str, Any] = {
            "id": query.id,
            "request": query.request,
            "state": state,
            "client": "API",
            "isCTAS": bool(query.request.get("ctasParameters")),
            "isInsertInto": bool(query.request.get("insertIntoParameters")),
            "created": _iso(query.created_wall),
            "updated": _iso(self.updated_wall(query)),
            "elapsedTime": 0,
            "rowCount": 0,
            "errors": [],
            "version": 1,
            "_links": {
                "self": {"href": base},
                "cancel": {"href": base, "method": "PATCH", "body": '{"op": "cancel"}'},
                "soft_delete": {"href": base, "method": "PATCH", "body": '{"op": "soft_delete"}'},
            },
        }
        if state in TERMINAL or state == "IN_PROGRESS":
            body["elapsedTime"] = int(min(self.clock.now() - query.created, query.duration) * 1000)
        if state == "SUCCESS":
            body["rowCount"] = self.row_count
            dataset_id = self._output(query)
            if dataset_id:
                body["_links"]["created_dataset"] = {
                    "id": dataset_id,
                    "href": f"{self.urls['api']}{CATALOG}/dataSets/{dataset_id}",
                }
            if query.outcome == "SUCCESS_WITH_ERRORS":
                body["errors"] = [
                    {
                        "code": "58000",
                        "message": "Partial result: one file skipped",
                        "errorType": "SYSTEM_ERROR",
                    }
                ]
        elif state == "FAILED":
            body["errors"] = [
                {
                    "code": "58000",
                    "message": "Batch query execution gets : [failed reason ErrorCode: 58000 "
                    "Function [varchar] not defined.]",
                    "errorType": "USER_ERROR",
                }
            ]
        elif state == "TIMEOUT":
            body["errors"] = [
                {"code": "53400", "message": "Query exceeded the 24 h limit", "errorType": "SYSTEM_ERROR"}
            ]
        if query.schedule_id:
            body["_links"]["schedule"] = {"href": f"{self.urls['api']}{QUERY}/schedules/{query.schedule_id}"}
        return body

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or bool(body.get("sql")) == bool(body.get("templateId")):
            return json_response(
                {"message": "Exactly one of sql or templateId is required", "statusCode": 400}, 400
            )
        if body.get("templateId") and body["templateId"] not in self.templates:
            return json_response({"message": "Template not found", "statusCode": 404}, 404)
        sandbox = request.headers["x-sandbox-name"]
        if not str(body.get("dbName", "")).startswith(f"{sandbox}:"):
            return json_response({"message": f"dbName must be in sandbox {sandbox}", "statusCode": 400}, 400)
        if "syntax error" in str(body.get("sql", "")).lower():
            return json_response({"message": "ErrorCode: 42601 ... syntax error", "statusCode": 400}, 400)
        query = self.add_query(body)
        return json_response(self.query_body(query), 202)

    async def _get(self, request: web.Request) -> web.Response:
        query = self.queries.get(request.match_info["id"])
        if query is None:
            return json_response({"message": "Query not found", "statusCode": 404}, 404)
        query.polled_at.append(time.time())
        return json_response(self.query_body(query))

    async def _patch(self, request: web.Request) -> web.Response:
        query = self.queries.get(request.match_info["id"])
        if query is None:
            return json_response({"message": "Query not found", "statusCode": 404}, 404)
        op = (await request.json()).get("op")
        if op == "soft_delete":
            query.soft_deleted = True
            return json_response({"message": "Query soft delete request received", "statusCode": 202}, 202)
        if op != "cancel":
            return json_response({"message": "op must be cancel or soft_delete", "statusCode": 400}, 400)
        if self.state_of(query) in TERMINAL:
            return json_response(
                {
                    "message": "termination request failed because the job might already have terminated",
                    "statusCode": 409,
                },
                409,
            )
        query.killed_at = self.clock.now()
        return json_response({"message": "Query cancel request received", "statusCode": 202}, 202)

    @staticmethod
    def _matches(body: dict[str, Any], clause: str) -> bool:
        found = re.match(r"^(\w+)(==|!=|>=|<=|~|>|<)(.*)$", clause)
        if not found:
            return True
        name, op, value = found.groups()
        if name in ("created", "updated") and op in (">", "<", ">=", "<="):
            # Compared as instants, not as text (``...:00Z`` and ``...:00.123Z`` differ as text).
            at, bound = _parse_iso(str(body.get(name))), _parse_iso(value)
            if at is None or bound is None:
                return False
            return {">": at > bound, "<": at < bound, ">=": at >= bound, "<=": at <= bound}[op]
        raw = body.get(name) if name != "sql" else body["request"].get("sql", "")
        actual = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if op == "==":
            return actual == value
        if op == "!=":
            return actual != value
        if op == "~":
            return value in actual
        return {">": actual > value, "<": actual < value, ">=": actual >= value, "<=": actual <= value}[op]

    async def _list(self, request: web.Request) -> web.Response:
        raw_query = request.rel_url.raw_query_string
        orderby = request.query.get("orderby", "-created")
        if orderby.startswith(" "):  # an unescaped '+' arrives as a space
            return json_response({"message": "orderby: '+' must be sent as %2B", "statusCode": 400}, 400)
        limit = int(request.query.get("limit", "20"))
        start = request.query.get("start")
        cursor = _parse_iso(start) if start else None
        if start and cursor is None:
            return json_response(
                {"message": f"start: not an ISO timestamp: {start!r}", "statusCode": 400}, 400
            )
        clauses = [c for c in request.query.get("property", "").split(",") if c]
        for clause in clauses:
            timed = re.match(r"^(created|updated)(>=|<=|>|<)(.*)$", clause)
            if timed and _parse_iso(timed.group(3)) is None:
                return json_response(
                    {"message": f"property: not an ISO timestamp in {clause!r}", "statusCode": 400}, 400
                )
        newest_first = orderby.startswith("-")
        bodies = [
            self.query_body(q)
            for q in self.queries.values()
            if not (q.soft_deleted and request.query.get("excludeSoftDeleted", "true") == "true")
        ]
        bodies = [b for b in bodies if all(self._matches(b, c) for c in clauses)]
        field_name = "updated" if orderby.lstrip("+- ") == "updated" else "created"
        random.shuffle(bodies)  # ties: in no particular order (the spec names none)
        bodies.sort(key=lambda b: b[field_name], reverse=newest_first)
        if cursor is not None:  # the cursor is the first value of the page: included
            bodies = [
                b
                for b in bodies
                if ((at := _parse_iso(b[field_name])) is not None)
                and (at <= cursor if newest_first else at >= cursor)
            ]
        page = bodies[:limit]
        now = time.time()
        for body in page:
            self.queries[body["id"]].polled_at.append(now)
        result: dict[str, Any] = {
            "queries": page,
            "_page": {"orderby": orderby, "count": len(page)},
            "_links": {},
            "version": 1,
        }
        first = page[0][field_name] if page else start
        if first:
            result["_page"]["start"] = first
        if len(bodies) > limit:
            nxt = bodies[limit][field_name]  # "the start value for the next page"
            if self.cursor_zone != "Z":
                zone = datetime.strptime(self.cursor_zone, "%z").tzinfo
                at = datetime.fromisoformat(nxt.replace("Z", "+00:00"))
                nxt = at.astimezone(zone).isoformat(timespec="milliseconds")
            result["_page"]["next"] = nxt
            kept = "&".join(
                p
                for p in raw_query.split("&")
                if p and not p.startswith("start=") and (self.next_link == "full" or p.startswith("orderby="))
            )
            result["_links"]["next"] = {"href": f"{self.urls['api']}{QUERY}/queries?{kept}&start={nxt}"}
        return json_response(result)

    # -- templates ----------------------------------------------------------------------------
    async def _create_template(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("sql") or not body.get("name"):
            return json_response({"message": "sql and name are required", "statusCode": 400}, 400)
        template = {"id": str(uuid.uuid4()), "created": _iso(time.time()), **body}
        self.templates[template["id"]] = template
        return json_response(template, 202)

    async def _list_templates(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        return json_response({"templates": list(self.templates.values())[:limit], "_links": {}, "version": 1})

    async def _get_template(self, request: web.Request) -> web.Response:
        template = self.templates.get(request.match_info["id"])
        if template is None:
            return json_response({"message": "Template not found", "statusCode": 404}, 404)
        return json_response(template)

    # -- schedules ----------------------------------------------------------------------------
    async def _create_schedule(self, request: web.Request) -> web.Response:
        body = await request.json()
        cron = (body.get("schedule") or {}).get("schedule")
        if not body.get("query") or not cron:
            return json_response(
                {"message": "query and schedule.schedule are required", "statusCode": 400}, 400
            )
        schedule = {
            "id": str(uuid.uuid4()),
            "state": "ENABLED",
            "query": body["query"],
            "schedule": body["schedule"],
            "version": 2,
        }
        self.schedules[schedule["id"]] = schedule
        return json_response({**schedule, "state": "REGISTERING"}, 202)

    async def _list_schedules(self, request: web.Request) -> web.Response:
        return json_response({"schedules": list(self.schedules.values()), "_links": {}, "version": 2})

    async def _get_schedule(self, request: web.Request) -> web.Response:
        schedule = self.schedules.get(request.match_info["id"])
        if schedule is None:
            return json_response({"message": "Schedule not found", "statusCode": 404}, 404)
        return json_response(schedule)

    async def _patch_schedule(self, request: web.Request) -> web.Response:
        schedule = self.schedules.get(request.match_info["id"])
        if schedule is None:
            return json_response({"message": "Schedule not found", "statusCode": 404}, 404)
        for change in (await request.json()).get("body") or []:
            if change.get("path") == "/state" and change.get("value") in ("enable", "disable"):
                schedule["state"] = "ENABLED" if change["value"] == "enable" else "DISABLED"
            else:
                return json_response({"message": f"unsupported change {change}", "statusCode": 400}, 400)
        return json_response({"message": "Request to update schedule received", "statusCode": 202}, 202)

    def run_body(self, run: dict[str, Any]) -> dict[str, Any]:
        query = self.queries[run["queryId"]]
        state = self.state_of(query)
        # The spec's run states are SUCCESS, IN_PROGRESS and FAILED: a cancelled run reads FAILED.
        run_state = {"SUBMITTED": "IN_PROGRESS", "KILLED": "FAILED", "TIMEOUT": "FAILED"}.get(state, state)
        body = {key: value for key, value in run.items() if key != "visible_at"}
        body["state"] = run_state
        if run_state == "FAILED":
            body["errors"] = self.query_body(query)["errors"]
        return body

    async def _list_runs(self, request: web.Request) -> web.Response:
        schedule_id = request.match_info["id"]
        clauses = [c for c in request.query.get("property", "").split(",") if c]
        now = time.time()
        runs = [
            self.run_body(r)
            for r in self.runs.values()
            if r["scheduleId"] == schedule_id and r["visible_at"] <= now
        ]
        runs = [r for r in runs if all(self._matches(r, c) for c in clauses)]
        runs.sort(key=lambda r: r["created"], reverse=True)
        return json_response({"runsSchedules": runs, "_links": {}, "version": 2})

    def add_run(self, schedule_id: str) -> dict[str, Any]:
        """Start a manual run of a schedule server-side, as ``triggerScheduleRun`` does."""
        schedule = self.schedules[schedule_id]
        run_id = f"c2NoZWR1bGVkX18{next(self._serial):06d}"
        query = self.add_query(dict(schedule["query"]), schedule_id=schedule["id"], run_id=run_id)
        run = {
            "id": run_id,
            "scheduleId": schedule["id"],
            "queryId": query.id,
            "externalTrigger": True,
            "created": _iso(time.time()),
            "visible_at": time.time() + self.run_delay,
        }
        self.runs[run_id] = run
        return run

    async def _trigger_run(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.schedules:
            return json_response({"message": "Schedule not found", "statusCode": 404}, 404)
        self.add_run(request.match_info["id"])
        # The spec's answer names no run.
        return json_response({"message": "received request to trigger run", "statusCode": 202}, 202)

    async def _get_run(self, request: web.Request) -> web.Response:
        run = self.runs.get(request.match_info["run"])
        if run is None or run["scheduleId"] != request.match_info["id"]:
            return json_response({"message": "Run not found", "statusCode": 404}, 404)
        return json_response(self.run_body(run))

    async def _cancel_run(self, request: web.Request) -> web.Response:
        run = self.runs.get(request.match_info["run"])
        if run is None:
            return json_response({"message": "Run not found", "statusCode": 404}, 404)
        query = self.queries[run["queryId"]]
        if self.state_of(query) in TERMINAL:
            return json_response({"message": "run already finished", "statusCode": 409}, 409)
        query.killed_at = self.clock.now()
        return json_response({"message": "cancel request received", "statusCode": 202}, 202)

    # -- Catalog ------------------------------------------------------------------------------
    async def _find_datasets(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        return json_response({k: v for k, v in self.datasets.items() if name is None or v["name"] == name})

    async def _get_dataset(self, request: web.Request) -> web.Response:
        dataset = self.datasets.get(request.match_info["id"])
        if dataset is None:
            return json_response({"message": "Dataset not found", "statusCode": 404}, 404)
        return json_response({request.match_info["id"]: dataset})

    def batch_status(self, batch: EmulatedBatch) -> str:
        return "success" if self.clock.now() - batch.created >= self.batch_delay else "processing"

    async def _list_batches(self, request: web.Request) -> web.Response:
        dataset_id = request.query.get("dataSet")
        after = int(request.query.get("createdAfter", "0") or 0)
        limit = min(100, int(request.query.get("limit", "20")))
        start = int(request.query.get("start", "0"))
        chosen = [
            b for b in self.batches.values() if b.dataset_id == dataset_id and b.created_wall * 1000 > after
        ]
        chosen.sort(key=lambda b: b.created_wall, reverse=request.query.get("orderBy", "").startswith("desc"))
        return json_response(
            {
                b.id: {
                    "status": self.batch_status(b),
                    "created": int(b.created_wall * 1000),
                    "recordCount": self.row_count,
                    "relatedObjects": [{"type": "dataSet", "id": b.dataset_id}],
                }
                for b in chosen[start : start + limit]
            }
        )

    # -- Data Access --------------------------------------------------------------------------
    def _page(self, request: web.Request, items: list[dict[str, Any]], path: str) -> web.Response:
        limit = min(100, int(request.query.get("limit", "100")))
        start = int(request.query.get("start", "0"))
        links: dict[str, Any] = {}
        if start + limit < len(items):
            links["next"] = {"href": f"{self.urls['api']}{path}?start={start + limit}&limit={limit}"}
        page = items[start : start + limit]
        return json_response({"data": page, "_page": {"limit": limit, "count": len(page)}, "_links": links})

    async def _batch_files(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return json_response({"message": "Batch not found", "statusCode": 404}, 404)
        items = [
            {
                "dataSetFileId": file_id,
                "dataSetViewId": batch.dataset_id,
                "version": "1.0.0",
                "isValid": True,
                "_links": {"self": {"href": f"{self.urls['api']}{EXPORT}/files/{file_id}"}},
            }
            for file_id in batch.files
        ]
        return self._page(request, items, request.path)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["id"]
        entries = self.files.get(file_id)
        if entries is None:
            return json_response({"message": "File not found", "statusCode": 404}, 404)
        path = request.query.get("path")
        if path is None:
            items: list[dict[str, Any]] = []
            for entry in entries:
                if isinstance(entry, str):  # a directory: another file id
                    href = f"{self.urls['api']}{EXPORT}/files/{entry}"
                    items.append({"dataSetFileId": entry, "name": entry, "_links": {"self": {"href": href}}})
                else:
                    href = f"{self.urls['api']}{EXPORT}/files/{file_id}?path={entry[0]}"
                    items.append(
                        {"name": entry[0], "length": str(len(entry[1])), "_links": {"self": {"href": href}}}
                    )
            return self._page(request, items, request.path)
        data = next((d for e in entries if not isinstance(e, str) for n, d in [e] if n == path), None)
        if data is None:
            return json_response({"message": "File not found", "statusCode": 404}, 404)
        accept = request.headers.get("Accept", "*/*")
        if not any(
            kind.split(";")[0].strip() in ("*/*", "application/*", "application/octet-stream")
            for kind in accept.split(",")
        ):
            return json_response({"message": f"Not acceptable: {accept}", "statusCode": 406}, 406)
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        ranged = re.match(r"^bytes=(\d+)-(\d*)$", request.headers.get("Range", ""))
        first, last, status = 0, len(data) - 1, 200
        if ranged:
            first = int(ranged.group(1))
            last = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            status = 206
        body = data[first : last + 1]
        if self.cut_after is None or len(body) <= self.cut_after:
            return web.Response(body=body, status=status, headers=headers)
        # The response limit: the length announced, the body cut, the connection closed.
        cut = web.StreamResponse(status=status, headers=headers)
        cut.content_length = len(body)
        await cut.prepare(request)
        await cut.write(body[: self.cut_after])
        if request.transport is not None:
            request.transport.abort()
        return cut
