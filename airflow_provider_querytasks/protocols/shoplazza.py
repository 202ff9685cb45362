"""Shoplazza OpenAPI 2022-01 data query tasks: URLs, parameters, answers and statuses.

Written once and executed by the sync and async clients of :mod:`~..common.transport`. Facts and
their sources are in ``docs/shoplazza.md``; what the public documentation leaves unknown (the
failure value of ``query_status``, the time zone of naive times, the lifetime of result URLs) is
handled defensively and said so there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

import pendulum

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
    NotFoundError,
)
from airflow_provider_querytasks.common.api.operations import Steps, one_call
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.api.validation import required_id, validate_base_url
from airflow_provider_querytasks.common.transport.tokens import RotatingTokenSource, TokenStore

#: Event types a data query task accepts (OpenAPI ``create-data``).
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
#: The longest window one task may cover.
MAX_WINDOW = timedelta(hours=24)
#: ``beginTime``/``endTime`` as the documentation shows them (no offset).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
DEFAULT_API_VERSION = "2022-01"
#: Largest page of the task list.
MAX_PAGE_SIZE = 250
#: Pages of the task list one coalesced poll round reads at most (1,000 tasks).
LIST_PAGE_CAP = 4

SHOP_HOST = re.compile(r"^[a-z0-9-]+\.myshoplaza\.com$")
API_VERSION = re.compile(r"^\d{4}-\d{2}$")

STATUS_PENDING = 0
STATUS_PROCESSING = 1  # not documented; read as "still working"
STATUS_COMPLETE = 2


def normalise_shop(shop: str | None) -> str:
    """``mystore`` or ``mystore.myshoplaza.com`` (or an https URL of it) -> the shop's host.

    Checked before any token is attached, so a mistyped shop cannot receive the token.

    :raises InvalidInputError: naming ``host`` (the connection field holding the shop).
    """
    value = (shop or "").strip().lower()
    value = re.sub(r"^https?://", "", value).rstrip("/")
    if value and "." not in value:
        value = f"{value}.myshoplaza.com"
    if not SHOP_HOST.match(value):
        raise InvalidInputError(
            "host",
            f"{shop!r} is not a Shoplazza shop; use the shop name (mystore) or its host "
            "(mystore.myshoplaza.com), matching ^[a-z0-9-]+\\.myshoplaza\\.com$",
        )
    return value


@dataclass(frozen=True)
class ShoplazzaSettings:
    """A validated ``shoplazza`` connection.

    :param shop: the shop's host (``mystore.myshoplaza.com``).
    :param base_url: where the API is served (``https://<shop>`` or the ``endpoint`` override).
    :param api_version: OpenAPI version in paths.
    :param access_token: private-app token (``None`` with OAuth refresh).
    :param client_id: public-app client id (OAuth refresh).
    :param client_secret: public-app client secret.
    :param refresh_token: refresh token obtained at install time.
    """

    shop: str
    base_url: str
    api_version: str
    access_token: str | None
    client_id: str | None = None
    client_secret: str | None = None
    refresh_token: str | None = None

    def __repr__(self) -> str:  # never show credentials
        return f"ShoplazzaSettings(shop={self.shop!r}, base_url={self.base_url!r})"

    @property
    def uses_oauth(self) -> bool:
        return bool(self.refresh_token)

    @classmethod
    def build(
        cls,
        *,
        shop: str | None,
        access_token: str | None,
        api_version: str | None = None,
        endpoint: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        refresh_token: str | None = None,
    ) -> ShoplazzaSettings:
        """Validate connection fields (raise :class:`InvalidInputError` naming the field)."""
        host = normalise_shop(shop)
        version = api_version or DEFAULT_API_VERSION
        if not API_VERSION.match(version):
            raise InvalidInputError("api_version", f"{version!r} is not a YYYY-MM version such as 2022-01")
        base = validate_base_url(endpoint, "endpoint") if endpoint else f"https://{host}"
        if refresh_token:
            if not client_id or not client_secret:
                raise InvalidInputError(
                    "refresh_token", "OAuth refresh also needs the client_id and client_secret extras"
                )
        elif not access_token:
            raise InvalidInputError(
                "password",
                "set the access token (private app) or the client_id, client_secret and "
                "refresh_token extras (public app)",
            )
        return cls(host, base, version, access_token or None, client_id, client_secret, refresh_token)


class ShoplazzaApi(PlatformApi):
    """The Shoplazza REST Admin API as the shared clients see it."""

    platform = "shoplazza"
    request_id_header = "Request-Id"
    # 40 requests per app and store, replenished at 2 per second, across all operations.
    shared_rate_limit = (2.0, 40.0)

    def __init__(self, settings: ShoplazzaSettings) -> None:
        super().__init__(settings.base_url, settings.shop)
        self.api_version = settings.api_version
        self.oauth = settings.uses_oauth

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Access-Token"] = token
        return headers

    def _version_hint(self, response: ApiResponse, text: str) -> str:
        if response.status == 404 and self.api_version != DEFAULT_API_VERSION:
            text += f" (data query tasks exist only in API version {DEFAULT_API_VERSION})"
        elif response.status == 404 and "page not found" in text:
            text += f" (API version {self.api_version} may be retired)"
        return text

    @staticmethod
    def _store_not_active(response: ApiResponse) -> bool:
        return response.status == 400 and "store is not active" in response.text_excerpt(200)

    def is_token_expired(self, response: ApiResponse) -> bool:
        # Shoplazza reports a missing, invalid or expired token as 401 or as 400 "store is not
        # active" (both documented): with OAuth, either is worth one refresh and one retry.
        return response.status == 401 or self._store_not_active(response)

    def error_message(self, response: ApiResponse) -> str:
        text = self._version_hint(response, super().error_message(response))
        if self._store_not_active(response) or response.status == 401:
            if self.oauth:
                text += (
                    " (Shoplazza refused a freshly refreshed access token: check that the app is "
                    "still installed on this shop and that the shop is active)"
                )
            else:
                text += (
                    " (Shoplazza refused the access token: check the private app's access token "
                    "in the connection's password and that the app is still installed)"
                )
        return text

    def error_class(self, response: ApiResponse) -> type[ApiError]:
        if self._store_not_active(response):
            return AuthenticationError
        if response.status in (400, 404) and "no result" in response.text_excerpt(200):
            return NotFoundError
        return super().error_class(response)

    # -- requests ----------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return f"/openapi/{self.api_version}/data/{name}"

    def create_task_request(self, event: str, begin_time: str, end_time: str) -> ApiRequest:
        # A GET with a side effect: every call creates a task, so it is never re-sent blindly.
        params = {"event": event, "beginTime": begin_time, "endTime": end_time}
        return ApiRequest("GET", self._path("query"), "createDataTask", params=params, idempotent=False)

    def get_task_request(self, query_id: str) -> ApiRequest:
        # Without an id the API answers with the store's latest task, maybe someone else's.
        task_id = required_id(query_id, "query_id", "task id")
        return ApiRequest("GET", self._path("task"), "getDataTask", params={"id": task_id})

    def list_tasks_request(self, page: int, limit: int) -> ApiRequest:
        if not isinstance(page, int) or page < 1:
            raise InvalidInputError("page", f"must be an integer >= 1, got {page!r}")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInputError("limit", f"must be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}")
        return ApiRequest("GET", self._path("tasks"), "listDataTasks", params={"page": page, "limit": limit})

    def count_tasks_request(self) -> ApiRequest:
        return ApiRequest("GET", self._path("count"), "countDataTasks")

    def get_shop_request(self) -> ApiRequest:
        # The shop object carries "timezone": "The shop's timezone offset from UTC" ("+0800").
        return ApiRequest("GET", f"/openapi/{self.api_version}/shop", "getShop")

    # -- operations (a request and its parser, run by either client) --------------------------
    def create_task(self, event: str, begin_time: str, end_time: str) -> Steps[str]:
        """createDataTask: the new task's ``query_id``."""
        return one_call(self.create_task_request(event, begin_time, end_time), parse_created)

    def get_task(self, query_id: str) -> Steps[dict[str, Any]]:
        """getDataTask: the task object."""
        return one_call(self.get_task_request(query_id), parse_task)

    def list_tasks(self, page: int, limit: int) -> Steps[list[dict[str, Any]]]:
        """listDataTasks: one page of tasks."""
        return one_call(self.list_tasks_request(page, limit), parse_task_page)

    def get_shop_timezone(self) -> Steps[str | None]:
        """getShop: the shop's ``timezone`` as it reports it (``"+0800"``), or ``None``."""
        return one_call(self.get_shop_request(), parse_shop_timezone)

    def count_tasks(self) -> Steps[int]:
        """countDataTasks: the number of tasks."""
        return one_call(self.count_tasks_request(), parse_count)

    def find_tasks(
        self, wanted: Collection[str], max_pages: int = LIST_PAGE_CAP
    ) -> Steps[dict[str, dict[str, Any]]]:
        """listDataTasks, full pages (250) until every wanted task is found: the wanted task objects found.

        The list has no filter, cursor or documented order. Read from page 1 (the newest tasks
        when, as the detail endpoint's "latest task" suggests, the list is newest first) until
        every wanted task is found, a short page (the last) or ``max_pages``. When page 1 is
        full and holds none of them, the list may be oldest first: the task count gives the
        last page, and the pages are read from there backwards. Tasks not found are absent.
        """
        remaining = set(wanted)
        found: dict[str, dict[str, Any]] = {}

        def take(tasks: list[dict[str, Any]]) -> None:
            for task in tasks:
                query_id = task.get("query_id")
                if isinstance(query_id, str) and query_id in remaining:
                    found[query_id] = task
                    remaining.discard(query_id)

        first = yield from self.list_tasks(1, MAX_PAGE_SIZE)
        take(first)
        if not remaining or len(first) < MAX_PAGE_SIZE or max_pages < 2:
            return found
        if found:
            pages: range = range(2, max_pages + 1)
        else:
            last = max(2, math.ceil((yield from self.count_tasks()) / MAX_PAGE_SIZE))
            pages = range(last, max(1, last - max_pages + 1), -1)
        for page in pages:
            tasks = yield from self.list_tasks(page, MAX_PAGE_SIZE)
            take(tasks)
            if not remaining or (pages.step > 0 and len(tasks) < MAX_PAGE_SIZE):
                break
        return found


# -- answers ----------------------------------------------------------------------------------
def parse_created(response: ApiResponse) -> str:
    body = response.json_object()
    query_id = body.get("query_id")
    if not isinstance(query_id, str) or not query_id:
        raise ApiError(f"createDataTask answered without a query_id: {body!r}", platform="shoplazza")
    return query_id


def parse_task(response: ApiResponse) -> dict[str, Any]:
    return response.json_object()


def parse_task_page(response: ApiResponse) -> list[dict[str, Any]]:
    """A page of tasks; the array is ``querys`` in the OpenAPI spec and ``tasks`` in the reference."""
    body = response.json_object()
    for key in ("querys", "tasks"):
        if isinstance(body.get(key), list):
            return [item for item in body[key] if isinstance(item, dict)]
    if not body or all(value is None for value in body.values()):
        return []
    raise ApiError(f"listDataTasks answered without a querys/tasks array: {str(body)[:200]}")


def parse_shop_timezone(response: ApiResponse) -> str | None:
    """The ``timezone`` of a shop object (bare, or under ``shop``), or ``None`` when absent."""
    body = response.json_object()
    shop: dict[str, Any] = body["shop"] if isinstance(body.get("shop"), dict) else body
    value = shop.get("timezone")
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_count(response: ApiResponse) -> int:
    count = response.json_object().get("count")
    if not isinstance(count, int):
        raise ApiError(f"countDataTasks answered without an integer count: {response.text_excerpt(200)}")
    return count


def result_url(task: dict[str, Any]) -> str | None:
    query = task.get("query")
    url = query.get("url") if isinstance(query, dict) else None
    return url if isinstance(url, str) and url.strip() else None


def task_snapshot(
    query_id: str, task: dict[str, Any], *, url_missing_for: float | None = None
) -> StatusSnapshot:
    """Normalise a task object.

    ``query_status`` 0 is pending and 2 complete (documented); 1 is read as processing. Any other
    value fails with the raw task (no failure code is published, and other Shoplazza task APIs use
    small numbers for failures, so an unknown value must not look like "still running").
    ``url_missing_for`` is how long the task has been complete without a URL; the caller decides
    when that has lasted too long. A body with ``errors`` (or ``error``) and no ``query_status``
    fails with that text.
    """
    if "query_status" not in task and (error := first_error_text(task)):
        # An error body read as a task ({"errors": ["no result"]} is documented, its HTTP status
        # is not): no task state to wait for, so it fails now rather than at the timeout.
        return StatusSnapshot(query_id, QueryState.FAILED, "with errors", raw=task, message=error)
    status = task.get("query_status", STATUS_PENDING)
    if status == STATUS_COMPLETE:
        if result_url(task):
            return StatusSnapshot(query_id, QueryState.SUCCEEDED, status, raw=task)
        waited = f" for {url_missing_for:.0f} s" if url_missing_for else ""
        return StatusSnapshot(
            query_id, QueryState.RUNNING, status, raw=task, message=f"complete, no result URL yet{waited}"
        )
    if status == STATUS_PENDING:
        return StatusSnapshot(query_id, QueryState.PENDING, status, raw=task)
    if status == STATUS_PROCESSING:
        return StatusSnapshot(query_id, QueryState.RUNNING, status, raw=task)
    return StatusSnapshot(
        query_id,
        QueryState.FAILED,
        status,
        raw=task,
        message=f"undocumented query_status {status!r}; the task: {task}",
    )


def listed_task_snapshot(query_id: str, task: dict[str, Any]) -> StatusSnapshot | None:
    """A task object from the list as :func:`task_snapshot` reads it, or ``None`` (poll it on its
    own) for a complete task the list shows without its result URL: whether the URL comes late
    or never is the detail poll's to judge (``url_grace``), not the list's."""
    if task.get("query_status") == STATUS_COMPLETE and not result_url(task):
        return None
    return task_snapshot(query_id, task)


# -- time windows ---------------------------------------------------------------------------------
TimeInput = datetime | date | str


def parse_time(value: TimeInput, parameter: str, tz: tzinfo) -> pendulum.DateTime:
    """A datetime, date, pendulum or ISO 8601 string -> an aware datetime (naive ones in ``tz``)."""
    try:
        if isinstance(value, datetime):
            parsed = pendulum.instance(value, tz=tz)
        elif isinstance(value, date):
            parsed = pendulum.datetime(value.year, value.month, value.day, tz=tz)
        elif isinstance(value, str) and value.strip():
            result = pendulum.parse(value.strip(), tz=tz)
            if not isinstance(result, pendulum.DateTime):
                raise ValueError("not a date and time")
            parsed = result
        else:
            raise ValueError("empty")
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            parameter,
            f"{value!r} is not a date-time; give a datetime, a pendulum DateTime or an ISO 8601 "
            f"string such as 2026-11-20T00:00:00 ({exc})",
        ) from None
    return parsed


def shop_timezone(name: str) -> pendulum.Timezone | pendulum.FixedTimezone:
    """An IANA time zone name (the ``timezone`` parameter), validated."""
    try:
        return pendulum.timezone(name)
    except Exception:
        raise InvalidInputError(
            "timezone", f"{name!r} is not an IANA time zone name such as UTC or Asia/Shanghai"
        ) from None


_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2}):?(\d{2})?$", re.IGNORECASE)


def reported_timezone(value: str | None) -> pendulum.Timezone | pendulum.FixedTimezone | None:
    """The shop object's ``timezone`` as a time zone: an offset (``+0800``, ``+08:00``,
    ``UTC+8``: fixed, without daylight-saving rules) or an IANA name; ``None`` when unreadable."""
    if not value:
        return None
    found = _OFFSET.match(value.strip())
    if found:
        sign, hours, minutes = found.groups()
        seconds = (int(hours) * 3600 + int(minutes or 0) * 60) * (-1 if sign == "-" else 1)
        return pendulum.FixedTimezone(seconds) if abs(seconds) <= 14 * 3600 else None
    try:
        return pendulum.timezone(value.strip())
    except Exception:
        return None


def utc_offset(at: datetime) -> str:
    """``+08:00`` / ``-05:00``: the UTC offset of an aware datetime."""
    offset = at.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def zone_name(tz: tzinfo) -> str:
    """A zone's name for logs and XCom (``America/New_York``; ``+08:00`` for a fixed offset)."""
    if isinstance(tz, pendulum.FixedTimezone):
        return utc_offset(datetime(2000, 1, 1, tzinfo=tz))
    return str(getattr(tz, "name", None) or getattr(tz, "key", None) or tz)


def is_ambiguous(local: datetime, tz: tzinfo) -> bool:
    """Whether a local time without offset names two instants in ``tz`` (the hour a
    daylight-saving change repeats)."""
    naive = local.replace(tzinfo=None)
    return naive.replace(tzinfo=tz, fold=0).utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset()


@dataclass(frozen=True)
class TimeWindow:
    """A window of at most 24 h of real time, as sent to Shoplazza.

    :param begin: ``beginTime`` in the zone the times are sent in, without offset (as sent).
    :param end: ``endTime`` likewise.
    :param begin_at: the instant ``begin`` stands for, ISO 8601 with its UTC offset.
    :param end_at: likewise for ``end`` (the offsets differ across a daylight-saving change).
    :param timezone: the zone ``begin`` and ``end`` are written in.
    """

    begin: str
    end: str
    begin_at: str | None = None
    end_at: str | None = None
    timezone: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "begin": self.begin,
            "end": self.end,
            "begin_at": self.begin_at,
            "end_at": self.end_at,
            "timezone": self.timezone,
        }


def split_window(
    begin_time: TimeInput,
    end_time: TimeInput,
    *,
    timezone: str | tzinfo = "UTC",
    max_window: timedelta = MAX_WINDOW,
) -> list[TimeWindow]:
    """Split ``[begin_time, end_time)`` into consecutive windows of at most 24 h of real time.

    The windows are cut on the time line (UTC), not on the clock of ``timezone``: across a
    daylight-saving change a 24 h window reads 23 or 25 hours on that clock, never 24 clock
    hours that are 23 or 25 real ones. For dynamic task mapping use
    :func:`~airflow_provider_querytasks.operators.shoplazza.split_window_kwargs`.

    :param begin_time: start (datetime, pendulum, date or ISO 8601; naive in ``timezone``).
    :param end_time: end, after ``begin_time``.
    :param timezone: the zone Shoplazza reads times in (an IANA name, or a ``tzinfo``): naive
        inputs are read in it and the times sent are written in it (Shoplazza's carry no offset).
    :param max_window: the longest window (24 h, the API's limit).
    :raises InvalidInputError: naming the parameter; also for a boundary whose time without
        offset is ambiguous in ``timezone`` (the hour a daylight-saving change repeats), which
        Shoplazza could read as either instant.
    """
    tz = shop_timezone(timezone) if isinstance(timezone, str) else timezone
    begin = parse_time(begin_time, "begin_time", tz).in_timezone("UTC")
    end = parse_time(end_time, "end_time", tz).in_timezone("UTC")
    if begin.microsecond or end.microsecond:
        raise InvalidInputError("begin_time", "Shoplazza takes whole seconds; drop the fractional part")
    if not begin < end:
        raise InvalidInputError(
            "end_time", f"must be after begin_time ({end.isoformat()} is not after {begin.isoformat()})"
        )
    if max_window <= timedelta(0) or max_window > MAX_WINDOW:
        raise InvalidInputError("max_window", "must be positive and at most 24 hours")
    name = zone_name(tz)

    def local(at: pendulum.DateTime, parameter: str) -> datetime:
        there = datetime.fromtimestamp(at.timestamp(), tz)
        if is_ambiguous(there, tz):
            raise InvalidInputError(
                parameter,
                f"a window boundary, {there.isoformat()}, falls in the hour {name} repeats when "
                "daylight saving time ends: sent without offset, Shoplazza could read it as "
                "either instant; start the window on a whole day or hour outside that hour",
            )
        return there

    windows = []
    start = begin
    while start < end:
        stop = min(start.add(seconds=int(max_window.total_seconds())), end)
        first, last = local(start, "begin_time"), local(stop, "end_time")
        windows.append(
            TimeWindow(
                first.strftime(TIME_FORMAT),
                last.strftime(TIME_FORMAT),
                first.isoformat(),
                last.isoformat(),
                name,
            )
        )
        start = stop
    return windows


def validate_event(event: str) -> str:
    if event not in EVENTS:
        raise InvalidInputError(
            "event", f"{event!r} is not a Shoplazza event; choose one of {', '.join(EVENTS)}"
        )
    return event


# -- OAuth refresh (public apps) ------------------------------------------------------------------
class ShoplazzaTokenSource(RotatingTokenSource):
    """Refresh-token grant at ``<shop>/admin/oauth/token``.

    Shoplazza replaces the refresh token on every refresh and the old one stops working, so the
    newest pair lives in the connection's shared ``store`` (the hook passes an Airflow Variable, see
    :class:`~airflow_provider_querytasks.common.transport.tokens.SharedTokenStore` and
    ``docs/design/shoplazza.md``), which every process reads before refreshing and writes after.
    """

    service = "Shoplazza token endpoint"
    platform = "shoplazza"
    operation = "oauthToken"
    store_name = "shoplazza"
    hints = {
        **RotatingTokenSource.hints,
        "invalid_grant": "the refresh token is wrong, revoked or already used (Shoplazza replaces "
        "it on every refresh): install or authorise the app again and set its new refresh token "
        "as the refresh_token extra of {conn}",
        "invalid_client": "check the client_id and client_secret extras of {conn}",
    }

    def __init__(self, settings: ShoplazzaSettings, store: TokenStore | None = None) -> None:
        if not (settings.refresh_token and settings.client_id and settings.client_secret):
            raise ValueError("ShoplazzaTokenSource needs refresh_token, client_id and client_secret")
        url = f"{settings.base_url}/admin/oauth/token"
        super().__init__(
            (url, settings.client_id, settings.client_secret, settings.refresh_token),
            token_url=url,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            refresh_token=settings.refresh_token,
            store=store,
        )
        self.url = url
        self.settings = settings

    def refresh_request(self, refresh_token: str) -> ApiRequest:
        return self.form_request(
            self.url,
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.settings.client_id or "",
                "client_secret": self.settings.client_secret or "",
            },
        )

    def expires_at(self, body: dict[str, Any]) -> float | None:
        value = body.get("expires_at")  # unix seconds, not a duration
        return float(value) if isinstance(value, int | float) else super().expires_at(body)
