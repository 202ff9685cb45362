"""Emulator of Shoplazza OpenAPI 2022-01 data query tasks (see ``docs/shoplazza.md``).

Sites: ``api`` (the shop host: ``/openapi/<version>/data/{query,task,tasks,count}`` and
``/admin/oauth/token``) and ``storage`` (an Aliyun OSS stand-in serving the CSV results, which
refuses any request carrying ``Access-Token``). What the public docs leave unknown is a knob:
the failure value of ``query_status``, how long a complete task lacks its URL, the 401/400
answer to a bad token, the list's array key, the result URL lifetime.

The time zone of ``beginTime``/``endTime`` (which carry no offset) takes the least convenient
reading the docs allow: they are read in the *shop's* time zone (``shop_timezone``, by default
``America/New_York``: not UTC, and with daylight saving time), and the 24 h limit is checked on
the real duration in that zone. ``GET /openapi/<version>/shop`` reports the zone as the docs show
it: ``"timezone": "-0500"``, the offset from UTC at the time of the request (no daylight-saving
rules). Each task keeps the instants it covers (``begin_at``, ``end_at``) for tests.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from airflow_provider_querytasks.testing.server import (
    EmulatorClock,
    EmulatorServer,
    RateBucket,
    json_response,
)
from airflow_provider_querytasks.testing.storage import ObjectStorageSite

# The platform's facts, from its documentation (docs/shoplazza.md), not from the client: a wrong
# value on either side then shows (tests/test_emulator_facts.py compares them).
#: ``event`` values of ``create-data`` (OpenAPI 2022-01).
EVENTS: tuple[str, ...] = (
    "impressions",
    "add_payment_info",
    "add_to_cart",
    "begin_checkout",
    "pageview",
    "place_order",
    "product_search",
    "product_view",
    "purchase_product",
    "refund_order",
)
#: ``beginTime``/``endTime`` as the documentation's example shows them: ``2020-12-30T15:04:05``.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: The rate limit per app and store: a bucket of 40 requests, refilled at 2 per second.
RATE_CAPACITY = 40.0
RATE_PER_SECOND = 2.0

CSV_COLUMNS = ("event", "session_id", "store_id", "_os", "_ip", "city", "province", "country", "created_at")


@dataclass
class EmulatedTask:
    """A data query task as the emulator keeps it."""

    query_id: str
    event: str | None
    begin: datetime
    end: datetime
    created: float
    duration: float
    final_status: int
    url_delay: float
    rows: int
    gzip: bool
    object_key: str | None = None
    #: The instants ``begin`` and ``end`` stand for, read in the shop's time zone.
    begin_at: datetime | None = None
    end_at: datetime | None = None


def parse_shop_time(value: str) -> datetime | None:
    """A ``beginTime``/``endTime`` value as a naive datetime, or None when it is not one."""
    try:
        return datetime.strptime(value, TIME_FORMAT)
    except (TypeError, ValueError):
        return None


class ShoplazzaEmulator(EmulatorServer):
    """Shoplazza data query tasks on 127.0.0.1.

    :param shop: the shop host the connection names.
    :param access_token: the private-app token accepted in ``Access-Token``.
    :param client_id: OAuth client id (public app).
    :param client_secret: OAuth client secret.
    :param refresh_token: the refresh token issued at install; every refresh replaces it with a
        new one and the old one is refused (``invalid_grant``) from then on.
    :param token_ttl: OAuth access-token lifetime, seconds.
    :param duration: emulator seconds from creation to ``query_status`` 2 (0 before the first
        third of it, 1 after).
    :param final_status: the status a task ends with (2 = complete; anything else is a failure
        code the docs do not publish).
    :param url_delay: emulator seconds a complete task shows no ``query.url``.
    :param rows: CSV data rows per task result.
    :param gzip: serve results gzip-encoded.
    :param url_ttl: lifetime of result URLs (seconds).
    :param list_key: ``querys`` (the OpenAPI spec) or ``tasks`` (the reference page).
    :param list_order: ``newest`` first (inferred: the detail endpoint without an id answers
        with the latest task) or ``oldest`` first; the order of the list is not documented.
    :param auth_failure_status: 401 or 400 for a missing or wrong token (both are documented).
    :param rate_capacity: requests per bucket (per token and shop).
    :param rate_per_second: bucket replenishment.
    :param max_tasks: store task cap answered with ``file number error`` (``None``: no cap).
    :param scopes: scopes the token has (``read_data`` is needed; ``read_shop`` for ``/shop``).
    :param shop_timezone: the shop's IANA time zone, in which ``beginTime``/``endTime`` are read.
    :param clock: emulator clock.
    """

    name = "shoplazza"
    storage: ObjectStorageSite

    def __init__(
        self,
        *,
        shop: str = "querytasks-demo.myshoplaza.com",
        access_token: str = "shoplazza-emulator-private-app-token",
        client_id: str = "shoplazza-emulator-client",
        client_secret: str = "shoplazza-emulator-client-secret",
        refresh_token: str = "shoplazza-emulator-refresh-0",
        token_ttl: float = 3600.0,
        duration: float = 1.5,
        final_status: int = 2,
        url_delay: float = 0.0,
        rows: int = 100,
        gzip: bool = False,
        url_ttl: float = 600.0,
        list_key: str = "querys",
        list_order: str = "newest",
        auth_failure_status: int = 401,
        rate_capacity: float = RATE_CAPACITY,
        rate_per_second: float = RATE_PER_SECOND,
        max_tasks: int | None = None,
        scopes: tuple[str, ...] = ("read_data", "read_shop"),
        shop_timezone: str = "America/New_York",
        clock: EmulatorClock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.shop = shop
        self.access_token = access_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_tokens = {refresh_token}
        self.initial_refresh_token = refresh_token
        self.token_ttl = token_ttl
        self.duration = duration
        self.final_status = final_status
        self.url_delay = url_delay
        self.rows = rows
        self.gzip = gzip
        self.url_ttl = url_ttl
        self.list_key = list_key
        if list_order not in ("newest", "oldest"):
            raise ValueError(f"list_order must be 'newest' or 'oldest', got {list_order!r}")
        self.list_order = list_order
        self.auth_failure_status = auth_failure_status
        self.rate_capacity = rate_capacity
        self.rate_per_second = rate_per_second
        self.max_tasks = max_tasks
        self.scopes = scopes
        self.shop_timezone = shop_timezone
        self.tasks: dict[str, EmulatedTask] = {}
        #: OAuth access token -> expiry (time.time()).
        self.oauth_tokens: dict[str, float] = {}
        self.storage = ObjectStorageSite(
            forbidden_headers=("Access-Token",), style="oss", default_ttl=url_ttl
        )
        self._buckets: dict[tuple[str, str], RateBucket] = {}
        self._serial = itertools.count(1)

    # -- framework ----------------------------------------------------------------------------
    def build_sites(self) -> dict[str, web.Application]:
        api = web.Application()
        api.router.add_get("/openapi/{version}/data/query", self._create)
        api.router.add_get("/openapi/{version}/data/task", self._detail)
        api.router.add_get("/openapi/{version}/data/tasks", self._list)
        api.router.add_get("/openapi/{version}/data/count", self._count)
        api.router.add_get("/openapi/{version}/shop", self._shop)
        api.router.add_post("/admin/oauth/token", self._token)
        return {"api": api, "storage": self.storage.app()}

    def expire_tokens(self) -> None:
        self.oauth_tokens.clear()

    def connection(self, conn_id: str | None = None, *, oauth: bool = False) -> dict[str, Any]:
        """A ``shoplazza`` connection: private-app token, or OAuth refresh with ``oauth=True``."""
        extra: dict[str, Any] = {"endpoint": self.urls["api"]}
        conn: dict[str, Any] = {
            "conn_id": conn_id or "shoplazza_default",
            "conn_type": "shoplazza",
            "host": self.shop,
        }
        if oauth:
            extra.update(
                client_id=self.client_id,
                client_secret=self.client_secret,
                refresh_token=self.initial_refresh_token,
            )
        else:
            conn["password"] = self.access_token
        conn["extra"] = extra
        return conn

    # -- helpers ------------------------------------------------------------------------------
    def _reply(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return json_response(body, status=status, headers={"Request-Id": uuid.uuid4().hex, **(headers or {})})

    def _authorise(self, request: web.Request) -> web.Response | None:
        """The error answer for a request the API would refuse, else ``None``."""
        if request.match_info.get("version") != "2022-01":
            return self._reply({"error": "page not found"}, 404)
        token = request.headers.get("Access-Token", "")
        valid = token == self.access_token or self.oauth_tokens.get(token, 0.0) > time.time()
        if not valid:
            return self._reply({"error": "store is not active"}, self.auth_failure_status)
        bucket = self._buckets.setdefault(
            (token, self.shop), RateBucket(self.rate_capacity, self.rate_per_second)
        )
        if not bucket.take():
            return self._reply({"errors": ["Too Many Requests"]}, 429)
        if "read_data" not in self.scopes:
            return self._reply(
                {"errors": ["[API] This action requires merchant approval for read_data scope."]}, 403
            )
        return None

    def status_of(self, task: EmulatedTask) -> int:
        age = self.clock.now() - task.created
        if age >= task.duration:
            return task.final_status
        return 1 if age >= task.duration / 3 else 0

    def _csv_line(self, task: EmulatedTask, index: int) -> bytes:
        event = task.event or EVENTS[1 + index % (len(EVENTS) - 1)]
        at = task.begin + (task.end - task.begin) * (index / max(1, task.rows))
        return (
            f"{event},s{index:09d},1001,iOS,10.{index // 65536 % 256:03d}.{index // 256 % 256:03d}."
            f"{index % 256:03d},Shenzhen,Guangdong,CN,{at.strftime(TIME_FORMAT)}\n"
        ).encode()

    def _store_result(self, task: EmulatedTask) -> str:
        key = f"{uuid.uuid4()}.csv"
        header = (",".join(CSV_COLUMNS) + "\n").encode()
        if task.gzip or task.event is None:
            data = header + b"".join(self._csv_line(task, i) for i in range(task.rows))
            self.storage.put(key, data, content_type="text/csv", gzip=task.gzip)
        else:
            # Fixed-width lines: the size is known without building the file (large benchmarks).
            line_size = len(self._csv_line(task, 0))

            def chunks() -> Any:
                yield header
                for start in range(0, task.rows, 4096):
                    yield b"".join(
                        self._csv_line(task, i) for i in range(start, min(task.rows, start + 4096))
                    )

            self.storage.put_generated(
                key, len(header) + line_size * task.rows, chunks, content_type="text/csv"
            )
        return key

    def task_body(self, task: EmulatedTask) -> dict[str, Any]:
        status = self.status_of(task)
        url = ""
        if status == 2 and self.clock.now() - task.created >= task.duration + task.url_delay:
            if task.object_key is None:
                task.object_key = self._store_result(task)
            url = self.storage.presign(task.object_key, self.url_ttl)
        return {"query_id": task.query_id, "query_status": status, "query": {"url": url}}

    def shop_instant(self, local: datetime) -> datetime:
        """A time without offset as the emulated Shoplazza reads it: in the shop's zone (UTC)."""
        zone = ZoneInfo(self.shop_timezone)
        return local.replace(tzinfo=zone).astimezone(timezone.utc)

    def reported_offset(self) -> str:
        """The shop object's ``timezone``: the zone's offset now, as ``-0500``."""
        offset = datetime.now(ZoneInfo(self.shop_timezone)).utcoffset() or timedelta(0)
        minutes = abs(int(offset.total_seconds())) // 60
        return f"{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}{minutes % 60:02d}"

    def add_task(self, event: str | None, begin: datetime, end: datetime) -> EmulatedTask:
        """Create a task server-side, as ``GET /data/query`` does (seeds tests and benchmarks)."""
        task = EmulatedTask(
            query_id=str(uuid.uuid4()),
            event=event,
            begin=begin,
            end=end,
            created=self.clock.now(),
            duration=self.duration,
            final_status=self.final_status,
            url_delay=self.url_delay,
            rows=self.rows,
            gzip=self.gzip,
            begin_at=self.shop_instant(begin),
            end_at=self.shop_instant(end),
        )
        self.tasks[task.query_id] = task
        return task

    # -- routes -------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        refused = self._authorise(request)
        if refused is not None:
            return refused
        event = request.query.get("event") or None
        if event is not None and event not in EVENTS:
            return self._reply({"errors": [f"invalid event: {event}"]}, 422)
        begin = parse_shop_time(request.query.get("beginTime", ""))
        end = parse_shop_time(request.query.get("endTime", ""))
        if begin is None or end is None:
            return self._reply({"errors": ["invalid time formats"]}, 422)
        duration = self.shop_instant(end) - self.shop_instant(begin)
        if duration <= timedelta(0) or duration > timedelta(hours=24):
            return self._reply({"errors": ["the time range must be positive and at most 24 hours"]}, 422)
        if self.max_tasks is not None and len(self.tasks) >= self.max_tasks:
            return self._reply({"errors": ["file number error"]}, 400)
        return self._reply({"query_id": self.add_task(event, begin, end).query_id})

    async def _shop(self, request: web.Request) -> web.Response:
        """The shop object (flat, under ``shop``); ``read_shop`` is needed."""
        refused = self._authorise(request)
        if refused is not None:
            return refused
        if "read_shop" not in self.scopes:
            return self._reply({"errors": ["Forbidden"]}, 403)
        name = self.shop.split(".")[0]
        return self._reply(
            {
                "shop": {
                    "id": 633130,
                    "name": name,
                    "system_domain": self.shop,
                    "timezone": self.reported_offset(),
                }
            }
        )

    async def _detail(self, request: web.Request) -> web.Response:
        refused = self._authorise(request)
        if refused is not None:
            return refused
        query_id = request.query.get("id")
        if not query_id:
            # Documented: without an id the API answers with the store's latest task.
            if not self.tasks:
                return self._reply({"errors": ["no result"]}, 404)
            return self._reply(self.task_body(list(self.tasks.values())[-1]))
        task = self.tasks.get(query_id)
        if task is None:
            return self._reply({"errors": ["no result"]}, 404)
        return self._reply(self.task_body(task))

    async def _list(self, request: web.Request) -> web.Response:
        refused = self._authorise(request)
        if refused is not None:
            return refused
        try:
            page = max(1, int(request.query.get("page", "1")))
            limit = min(250, max(1, int(request.query.get("limit", "20"))))
        except ValueError:
            return self._reply({"errors": ["page and limit must be integers"]}, 422)
        ordered = list(self.tasks.values())
        if self.list_order == "newest":
            ordered.reverse()
        chosen = ordered[(page - 1) * limit : page * limit]
        return self._reply({self.list_key: [self.task_body(task) for task in chosen]})

    async def _count(self, request: web.Request) -> web.Response:
        refused = self._authorise(request)
        return refused or self._reply({"count": len(self.tasks)})

    async def _token(self, request: web.Request) -> web.Response:
        # Both encodings are seen in Shoplazza's own SDKs (form in Go, JSON in the CLI).
        if request.content_type == "application/json":
            form: dict[str, Any] = json.loads(await request.read() or b"{}")
        else:
            form = dict(await request.post())
        # RFC 6749 section 5.2 errors; the text of the descriptions is ours (Shoplazza's is unknown).
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return self._reply(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, 401
            )
        if form.get("grant_type") != "refresh_token":
            return self._reply(
                {"error": "unsupported_grant_type", "error_description": "Use grant_type=refresh_token"},
                400,
            )
        if form.get("refresh_token") not in self.refresh_tokens:
            return self._reply(
                {
                    "error": "invalid_grant",
                    "error_description": "The refresh token is invalid, expired, revoked or was already used",
                },
                400,
            )
        # Rotation: the old refresh token stops working the moment a new one is issued.
        self.refresh_tokens.discard(str(form["refresh_token"]))
        new_refresh = f"shoplazza-emulator-refresh-{next(self._serial)}"
        self.refresh_tokens.add(new_refresh)
        access = f"shoplazza-emulator-oauth-{uuid.uuid4().hex}"
        expires_at = int(time.time() + self.token_ttl)
        self.oauth_tokens[access] = float(expires_at)
        return self._reply(
            {
                "token_type": "Bearer",
                "expires_at": expires_at,
                "access_token": access,
                "refresh_token": new_refresh,
                "store_id": "1001",
                "store_name": self.shop.split(".")[0],
            }
        )
