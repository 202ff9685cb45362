"""How an API call is described and its answer read, whatever the platform and the client.

A platform's module in :mod:`airflow_provider_querytasks.protocols` describes each call once, as
an :class:`ApiRequest`, and reads each answer from an :class:`ApiResponse`. The sync client
(``requests``, in hooks) and the async client (``aiohttp``, in triggers) in
:mod:`~airflow_provider_querytasks.common.transport.clients` execute the same descriptions, so URLs,
payloads, retry safety and error mapping are written once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow_provider_querytasks.common.api.errors import (
    ApiError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
)

Params = Mapping[str, Any] | Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class ApiRequest:
    """One API call, described independently of how it is sent.

    :param method: HTTP method.
    :param path: path under the platform's base URL (``/queries/abc``), or an absolute URL.
    :param operation: the API's operation name (``getQuery``); keys the rate limiter and logs.
    :param params: query-string parameters; ``None`` values are dropped.
    :param json: JSON body.
    :param data: form-encoded body.
    :param headers: extra headers for this call.
    :param idempotent: whether re-sending after an ambiguous failure (sent, no answer) is safe.
        Creating calls are not: they are retried only when the platform provably rejected
        them (429, or a connection that was never established).
    :param authenticated: whether the platform's credentials are attached.
    :param ok_statuses: statuses that are answers rather than errors (e.g. 409 for a cancel
        of a finished query).
    """

    method: str
    path: str
    operation: str
    params: Params | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True
    authenticated: bool = True
    ok_statuses: tuple[int, ...] = ()

    def query_items(self) -> list[tuple[str, str]]:
        """Query parameters as (name, value) pairs; lists repeat the name, booleans are lowercase."""
        if not self.params:  # most calls (status polls) have none
            return []
        items = self.params.items() if isinstance(self.params, Mapping) else self.params
        pairs: list[tuple[str, str]] = []
        for name, value in items:
            for item in value if isinstance(value, list | tuple) else [value]:
                if item is None:
                    continue
                pairs.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
        return pairs


@dataclass(frozen=True)
class ApiResponse:
    """An HTTP answer, read whole (API bodies are small; results are streamed by the fetch)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def header(self, name: str) -> str | None:
        """A header value, case-insensitively."""
        return self._lowercase_headers.get(name.lower())

    @cached_property
    def _lowercase_headers(self) -> dict[str, str]:
        return {key.lower(): value for key, value in self.headers.items()}

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` for an empty body.

        :raises ApiError: when the body is not JSON (an HTML error page, a truncated body).
        """
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise ApiError(f"Expected a JSON body, got {self.body[:200]!r}", status=self.status) from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; anything else is a clear error."""
        value = self.json()
        if not isinstance(value, dict):
            raise ApiError(f"Expected a JSON object, got {str(value)[:200]!r}", status=self.status)
        return value

    def text_excerpt(self, limit: int = 500) -> str:
        """The start of the body as text (for error messages and logs)."""
        return self.body[:limit].decode("utf-8", "replace")


def retry_after_seconds(response: ApiResponse) -> float | None:
    """``Retry-After`` in seconds, when the header holds a number of seconds."""
    value = response.header("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class PlatformApi:
    """What a platform's protocol module supplies to the shared clients.

    Subclasses set :attr:`platform`, :attr:`request_id_header` and :attr:`rate_limits`, and
    implement :meth:`error_message` (the platform's error body shape); they may refine
    :meth:`error_class` and :meth:`is_token_expired`.

    :param base_url: the API's base URL (already validated).
    :param account: what scopes rate limits and token caches (shop, selling partner, org).
    """

    platform: str = "platform"
    request_id_header: str = "x-request-id"
    #: operation -> (requests per second, burst), as published by the platform.
    rate_limits: Mapping[str, tuple[float, float]] = {}
    #: (requests per second, burst) shared by every authenticated operation without a plan of
    #: its own, for platforms whose limit is per app and account rather than per operation.
    shared_rate_limit: tuple[float, float] | None = None
    #: response headers worth a log line (rate-limit state, request ids); never credentials.
    logged_headers: tuple[str, ...] = ()
    #: the response header giving the rate (requests per second) the platform applies, if any.
    rate_limit_header: str | None = None

    def __init__(self, base_url: str, account: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.account = account

    def url(self, request: ApiRequest) -> str:
        """The absolute URL of ``request``: its path on the base URL, unless it is already absolute."""
        if request.path.startswith(("http://", "https://")):
            return request.path
        return f"{self.base_url}{request.path}"

    def headers(self, token: str | None) -> dict[str, str]:
        """Credential and context headers of an authenticated call (``token`` may be ``None``)."""
        raise NotImplementedError

    def error_message(self, response: ApiResponse) -> str:
        """The platform's error text out of an error body (any shape; never raises).

        Reads the common JSON shapes (:func:`first_error_text`), else an excerpt of the body.
        """
        try:
            text = first_error_text(response.json())
        except ApiError:
            text = None
        return text or response.text_excerpt()

    def is_token_expired(self, response: ApiResponse) -> bool:
        """Whether the answer means "refresh the access token and try once more"."""
        return response.status == 401

    def error_class(self, response: ApiResponse) -> type[ApiError]:
        """The :class:`ApiError` subclass an error answer is raised as (by its HTTP status)."""
        status = response.status
        if status == 401:
            return AuthenticationError
        if status == 403:
            return PermissionDeniedError
        if status == 404:
            return NotFoundError
        if status == 429:
            return RateLimitedError
        if status >= 500:
            return ServerError
        return ApiError

    def error_for(self, request: ApiRequest, response: ApiResponse) -> ApiError:
        """The exception for a failed answer, with the platform's detail and request id."""
        cls = self.error_class(response)
        message = f"{request.operation} failed with HTTP {response.status}: {self.error_message(response)}"
        kwargs: dict[str, Any] = {
            "platform": self.platform,
            "operation": request.operation,
            "status": response.status,
            "request_id": response.header(self.request_id_header),
            "detail": _safe_json(response),
        }
        if cls is RateLimitedError:
            return RateLimitedError(message, retry_after=retry_after_seconds(response), **kwargs)
        return cls(message, **kwargs)


def _safe_json(response: ApiResponse) -> Any:
    try:
        return response.json()
    except ApiError:
        return response.text_excerpt()


def first_error_text(body: Any) -> str | None:
    """The first human text in common error body shapes, or ``None``.

    Knows ``{"errors": [...]}`` (strings or objects with ``message``/``details``),
    ``{"error": "..."}``, ``{"message": ...}``, ``{"error_code", "message"}`` and problem details
    (``title``/``detail``). Platforms call it from :meth:`PlatformApi.error_message`.
    """
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for item in errors:
            if isinstance(item, dict):
                text = " - ".join(
                    str(item[k]) for k in ("code", "message", "details") if item.get(k) not in (None, "")
                )
                parts.append(text or json.dumps(item))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    for key in ("error", "message", "detail", "title", "error_description"):
        value = body.get(key)
        if isinstance(value, str) and value:
            code = body.get("error_code") or body.get("code")
            return f"{code}: {value}" if code and key == "message" else value
    return None
