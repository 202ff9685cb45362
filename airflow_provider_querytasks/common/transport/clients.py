"""Transport: execute :class:`~.api.calls.ApiRequest` descriptions, sync or async.

Both clients share one decision procedure (:class:`_CallPolicy`): which host may get the
credentials, which answers and exceptions are retried, when a token is refreshed, and when a
submission must not be re-sent. Only sending and sleeping differ: ``requests`` in hooks,
``aiohttp`` in triggers (one ``ClientSession`` per event loop, shared by every trigger).

Retries use tenacity: 429, 5xx and connection errors, exponential backoff with jitter,
``Retry-After`` honoured, a cap on attempts and on each wait. A request that is not idempotent
(it creates something remotely) is retried only when the platform provably did not act on it
(429, or a connection that was never established); otherwise the error is an
:class:`~.errors.AmbiguousSubmissionError`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.wait import wait_exponential_jitter

from airflow_provider_querytasks import __version__
from airflow_provider_querytasks.common.api.calls import ApiRequest, ApiResponse, PlatformApi
from airflow_provider_querytasks.common.api.errors import (
    AmbiguousSubmissionError,
    ApiError,
    QueryTaskError,
    ServerError,
)
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.common.transport.ratelimit import RateBudget, rate_limiters
from airflow_provider_querytasks.common.transport.tokens import AccessToken, TokenCache, TokenSource

if TYPE_CHECKING:
    import aiohttp
    import requests

from airflow_provider_querytasks.compat import mask_secret

log = logging.getLogger(__name__)

#: The process-wide token cache: one token per credential, each registered with the secrets masker.
token_cache = TokenCache(process_state, mask=mask_secret)

#: The largest API answer read (status objects and listings are kilobytes; results are streamed).
MAX_API_BODY = 16 * 2**20
CHUNK = 64 * 1024


def _capped(chunks: Iterator[bytes]) -> bytes:
    """The chunks joined, stopping once past :data:`MAX_API_BODY` (the caller refuses that)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_API_BODY:
            break
    return b"".join(parts)


#: Shaped as the SP-API asks (``AppName/version (Language=Python/3.x)``); fine for the others.
USER_AGENT = (
    f"airflow-provider-querytasks/{__version__} "
    f"(Language=Python/{sys.version_info.major}.{sys.version_info.minor})"
)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    :param attempts: total attempts per call (first try included).
    :param initial: first backoff in seconds.
    :param maximum: cap of one backoff (and of an honoured ``Retry-After``).
    :param jitter: random seconds added to each backoff.
    """

    attempts: int = 6
    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 1.0

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return float(min(retry_after, self.maximum))
        backoff = wait_exponential_jitter(initial=self.initial, max=self.maximum, jitter=self.jitter)
        return float(backoff(state))

    def tenacity_kwargs(self, platform: str) -> dict[str, Any]:
        """Keyword arguments shared by ``Retrying`` and ``AsyncRetrying``."""

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: %s; retry %d/%d in %.1f s",
                platform,
                error,
                state.attempt_number,
                self.attempts - 1,
                state.next_action.sleep if state.next_action else 0.0,
            )

        return {
            "stop": stop_after_attempt(self.attempts),
            "wait": self._wait,
            "retry": retry_if_exception(is_retryable),
            "before_sleep": before_sleep,
            "reraise": True,
        }


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is worth another attempt (:attr:`QueryTaskError.retryable`)."""
    return isinstance(error, QueryTaskError) and error.retryable


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


class _CallPolicy:
    """The decisions both clients share (see the module docstring)."""

    def __init__(
        self,
        api: PlatformApi,
        token_source: TokenSource | None,
        static_token: str | None,
        retry: RetryPolicy,
    ) -> None:
        self.api = api
        self.token_source = token_source
        self.static_token = static_token
        self.retry = retry
        # Computed once per client, not per call (a busy triggerer makes thousands of calls).
        self.retry_kwargs = retry.tenacity_kwargs(api.platform)
        self.api_origin = _origin(api.base_url)
        # A URL under this prefix has the API's origin without parsing it (the usual case).
        base = urlsplit(api.base_url)
        self.api_prefix = f"{base.scheme}://{base.netloc}/"

    def url_and_headers(self, request: ApiRequest, token: AccessToken | None) -> tuple[str, dict[str, str]]:
        url = self.api.url(request)
        headers = {"User-Agent": USER_AGENT, **request.headers}
        if request.authenticated:
            if not url.startswith(self.api_prefix) and _origin(url) != self.api_origin:
                # Credentials go to the API's own host only (never to a result or redirect host).
                raise QueryTaskError(
                    f"Refusing to send {self.api.platform} credentials to {_origin(url)[1]!r}: "
                    "it is not the configured endpoint",
                    platform=self.api.platform,
                    operation=request.operation,
                )
            secret = token.value if token is not None else self.static_token
            headers.update(self.api.headers(secret))
        return url, headers

    def bucket(self, request: ApiRequest) -> RateBudget | None:
        return rate_limiters.budget(self.api, request.operation, request.authenticated)

    def record_answer(self, bucket: RateBudget, granted_at: float, response: ApiResponse) -> None:
        """Tell the bucket what the platform answered: a 429 slows it down (see ``ratelimit``)."""
        limit = None
        if self.api.rate_limit_header is not None:
            value = response.header(self.api.rate_limit_header)
            try:
                limit = float(value) if value else None
            except ValueError:
                limit = None
        bucket.record_answer(granted_at, response.status == 429, limit)

    def response(
        self, request: ApiRequest, status: int, headers: dict[str, str], body: bytes, url: str
    ) -> ApiResponse:
        """An answer read whole, refused when larger than any API answer should be."""
        if len(body) > MAX_API_BODY:
            raise ApiError(
                f"{request.operation} answered with more than {MAX_API_BODY // 2**20} MiB; refusing to "
                "read it (API answers are small; results are downloaded by the fetch)",
                platform=self.api.platform,
                operation=request.operation,
                status=status,
            )
        return ApiResponse(status, headers, body, url)

    def wants_token(self, request: ApiRequest) -> bool:
        return request.authenticated and self.token_source is not None

    def answer(self, request: ApiRequest, response: ApiResponse) -> ApiResponse:
        """Return a usable answer or raise the error it means."""
        self._log_answer(request, response)
        if response.status < 400 or response.status in request.ok_statuses:
            return response
        error = self.api.error_for(request, response)
        if isinstance(error, ServerError) and not request.idempotent:
            # A 5xx to a submission: it may have run. (A 429 is a refusal, retried as any call.)
            return self._raise(self.ambiguous(request, error))
        return self._raise(error)

    @staticmethod
    def _raise(error: QueryTaskError) -> ApiResponse:
        raise error

    def _log_answer(self, request: ApiRequest, response: ApiResponse) -> None:
        level = logging.INFO if response.status == 429 else logging.DEBUG
        if not log.isEnabledFor(level):  # the usual case for a poll: skip building the line
            return
        request_id = response.header(self.api.request_id_header)
        extra = "".join(
            f" {name}={value}" for name in self.api.logged_headers if (value := response.header(name))
        )
        log.log(
            level,
            "%s %s -> %s request_id=%s%s",
            self.api.platform,
            request.operation,
            response.status,
            request_id,
            extra,
        )

    def ambiguous(self, request: ApiRequest, cause: BaseException) -> AmbiguousSubmissionError:
        return AmbiguousSubmissionError(
            f"{request.operation} was sent but its outcome is unknown ({cause}); it is not retried "
            "because it creates a remote query: one may exist now. Check the platform before "
            "running it again (a task retry re-attaches where the platform allows it).",
            platform=self.api.platform,
            operation=request.operation,
            status=getattr(cause, "status", None),
            detail=getattr(cause, "detail", None),
        )

    def connection_error(self, request: ApiRequest, exc: BaseException, never_sent: bool) -> QueryTaskError:
        if never_sent or request.idempotent:
            return ServerError(
                f"{request.operation}: connection failed: {type(exc).__name__}: {exc}",
                platform=self.api.platform,
                operation=request.operation,
            )
        return self.ambiguous(request, exc)


def _requests_never_sent(exc: requests.RequestException) -> bool:
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return type(reason).__name__ in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError")
    return False


class SyncApiClient:
    """Executes API requests with ``requests`` (hooks, operators, sensors in poke mode).

    :param api: the platform's protocol object.
    :param token_source: where OAuth access tokens come from, if the platform uses them.
    :param static_token: a fixed credential (e.g. a private-app token) when there is no token service.
    :param retry: retry policy.
    :param timeout: (connect, read) seconds.
    :param session: a ``requests.Session`` to reuse (one is created otherwise).
    """

    def __init__(
        self,
        api: PlatformApi,
        *,
        token_source: TokenSource | None = None,
        static_token: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        session: requests.Session | None = None,
    ) -> None:
        self.policy = _CallPolicy(api, token_source, static_token, retry or RetryPolicy())
        self.timeout = timeout
        import requests  # imported on first use: DAG parsing never needs it

        self.session = session or requests.Session()

    @property
    def api(self) -> PlatformApi:
        return self.policy.api

    def call(self, request: ApiRequest) -> ApiResponse:
        """Send ``request`` with rate limiting, auth, token refresh and retries."""
        try:
            return self._attempt(request)
        except Exception as error:
            if not is_retryable(error):
                raise
            first_failure = error
        # Only retries go through tenacity (why: AsyncApiClient.call).
        for attempt in Retrying(**self.policy.retry_kwargs):
            with attempt:
                if attempt.retry_state.attempt_number == 1:
                    raise first_failure
                return self._attempt(request)
        raise AssertionError("unreachable")  # pragma: no cover

    def _token(self, request: ApiRequest) -> AccessToken | None:
        if not self.policy.wants_token(request):
            return None
        assert self.policy.token_source is not None
        return token_cache.get(self.policy.token_source, self._send_token_request)

    def _send_token_request(self, request: ApiRequest) -> ApiResponse:
        return self.policy.answer(request, self._send(request, None))

    def credential_headers(self, url: str, operation: str) -> dict[str, str]:
        """Headers of an authenticated GET of ``url`` (a file the fetch streams itself).

        Refuses any URL outside the configured endpoint, like every authenticated call.
        """
        request = ApiRequest("GET", url, operation)
        return self.policy.url_and_headers(request, self._token(request))[1]

    def _attempt(self, request: ApiRequest) -> ApiResponse:
        bucket = self.policy.bucket(request)
        granted_at = bucket.acquire() if bucket is not None else 0.0
        token = self._token(request)
        response = self._send(request, token)
        if token is not None and self.api.is_token_expired(response):
            assert self.policy.token_source is not None
            token_cache.invalidate(self.policy.token_source, token)
            response = self._send(request, self._token(request))
        if bucket is not None:
            self.policy.record_answer(bucket, granted_at, response)
        return self.policy.answer(request, response)

    def _send(self, request: ApiRequest, token: AccessToken | None) -> ApiResponse:
        import requests

        url, headers = self.policy.url_and_headers(request, token)
        try:
            raw = self.session.request(
                request.method,
                url,
                params=request.query_items() or None,
                json=request.json,
                data=request.data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
            with raw:
                body = _capped(raw.iter_content(CHUNK))
        except requests.RequestException as exc:
            raise self.policy.connection_error(request, exc, _requests_never_sent(exc)) from None
        return self.policy.response(request, raw.status_code, dict(raw.headers), body, raw.url)

    def close(self) -> None:
        """Close the client's ``requests`` session."""
        self.session.close()


def shared_client_session() -> aiohttp.ClientSession:
    """The ``aiohttp.ClientSession`` of the running event loop, created on first use.

    Every trigger in a triggerer shares it (and its connection pool), rather than opening a
    session per poll.
    """
    import aiohttp  # imported on first use: DAG parsing never needs it

    loop = asyncio.get_running_loop()
    session = process_state.client_sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=200, ttl_dns_cache=300, enable_cleanup_closed=True)
        # No cookie jar: API calls need none, and one session serves every account's triggers.
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False
        )
        process_state.client_sessions[loop] = session
    return session


async def close_shared_client_session() -> None:
    """Close the running loop's shared session (tests, benchmarks, shutdown)."""
    session = process_state.client_sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


class _SessionLease:
    """What :func:`shared_session_lease` returns: one small object per waiting trigger (a
    generator-based context manager kept five objects alive for the whole wait)."""

    __slots__ = ("_loop",)

    async def __aenter__(self) -> None:
        self._loop = asyncio.get_running_loop()
        leases = process_state.session_leases
        leases[self._loop] = leases.get(self._loop, 0) + 1

    async def __aexit__(self, *exc_info: object) -> None:
        leases = process_state.session_leases
        leases[self._loop] = leases.get(self._loop, 1) - 1  # gone: reset() ran meanwhile
        if leases[self._loop] <= 0:
            await close_shared_client_session()


def shared_session_lease() -> _SessionLease:
    """Keep the loop's shared session open while the body runs; the last lease closes it.

    Triggers hold a lease while they wait, so a busy triggerer keeps one warm connection pool,
    and a loop whose triggers are all done (``dag.test()``, tests) does not leak an open session.
    """
    return _SessionLease()


class AsyncApiClient:
    """Executes API requests with ``aiohttp`` on the shared per-loop session (triggers).

    Same parameters as :class:`SyncApiClient` (``timeout`` is the total per request).
    """

    def __init__(
        self,
        api: PlatformApi,
        *,
        token_source: TokenSource | None = None,
        static_token: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        import aiohttp

        self.policy = _CallPolicy(api, token_source, static_token, retry or RetryPolicy())
        self.timeout = aiohttp.ClientTimeout(connect=timeout[0], sock_read=timeout[1])

    @property
    def api(self) -> PlatformApi:
        return self.policy.api

    async def call(self, request: ApiRequest) -> ApiResponse:
        """Send ``request`` with rate limiting, auth, token refresh and retries."""
        # The first attempt goes without tenacity, whose set-up per call was a fifth of a
        # triggerer's CPU per status poll; a retryable failure is replayed to tenacity as its
        # attempt 1, so that stops, backoff (Retry-After) and logs count it as before.
        try:
            return await self._attempt(request)
        except Exception as error:
            if not is_retryable(error):
                raise
            first_failure = error
        async for attempt in AsyncRetrying(**self.policy.retry_kwargs):
            with attempt:
                if attempt.retry_state.attempt_number == 1:
                    raise first_failure
                return await self._attempt(request)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self, request: ApiRequest) -> AccessToken | None:
        if not self.policy.wants_token(request):
            return None
        assert self.policy.token_source is not None
        return await token_cache.get_async(self.policy.token_source, self._send_token_request)

    async def _send_token_request(self, request: ApiRequest) -> ApiResponse:
        return self.policy.answer(request, await self._send(request, None))

    async def _attempt(self, request: ApiRequest) -> ApiResponse:
        bucket = self.policy.bucket(request)
        granted_at = await bucket.acquire_async() if bucket is not None else 0.0
        token = await self._token(request)
        response = await self._send(request, token)
        if token is not None and self.api.is_token_expired(response):
            assert self.policy.token_source is not None
            token_cache.invalidate(self.policy.token_source, token)
            response = await self._send(request, await self._token(request))
        if bucket is not None:
            self.policy.record_answer(bucket, granted_at, response)
        return self.policy.answer(request, response)

    async def _send(self, request: ApiRequest, token: AccessToken | None) -> ApiResponse:
        import aiohttp

        url, headers = self.policy.url_and_headers(request, token)
        session = shared_client_session()
        try:
            async with session.request(
                request.method,
                url,
                params=request.query_items() or None,
                json=request.json,
                data=request.data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            ) as raw:
                length = raw.content_length
                if length is not None and length <= MAX_API_BODY and "Content-Encoding" not in raw.headers:
                    body = await raw.read()  # the usual answer: small, of a declared length
                else:
                    parts, size = [], 0
                    async for chunk in raw.content.iter_chunked(CHUNK):
                        parts.append(chunk)
                        size += len(chunk)
                        if size > MAX_API_BODY:
                            break
                    body = b"".join(parts)
                return self.policy.response(request, raw.status, dict(raw.headers), body, str(raw.url))
        except aiohttp.ClientConnectorError as exc:
            raise self.policy.connection_error(request, exc, never_sent=True) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self.policy.connection_error(request, exc, never_sent=False) from None


__all__ = [
    "USER_AGENT",
    "AsyncApiClient",
    "RetryPolicy",
    "SyncApiClient",
    "close_shared_client_session",
    "shared_client_session",
    "shared_session_lease",
]
