"""OAuth access tokens: cached per credential, refreshed early, one refresh in flight at a time.

A platform supplies a :class:`TokenSource` (how to ask its token service, as an
:class:`~airflow_provider_querytasks.common.protocol.ApiRequest`, and how to read the answer).
:class:`TokenCache` keeps tokens process-wide, keyed by (token URL, client id, scope...), so every
hook and trigger of one credential shares one token, and many concurrent waiters on an expired
token cause one request to the token service.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_querytasks.common.errors import AuthenticationError
from airflow_provider_querytasks.common.protocol import ApiRequest, ApiResponse
from airflow_provider_querytasks.compat import mask_secret


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops working (``time.time()`` seconds).

    :param value: the token (registered with the secrets masker on creation).
    :param expires_at: wall-clock expiry; ``None`` when the platform does not say.
    :param refresh_token: a rotated refresh token returned with it, if any.
    """

    value: str
    expires_at: float | None = None
    refresh_token: str | None = None

    def __post_init__(self) -> None:
        mask_secret(self.value)
        if self.refresh_token:
            mask_secret(self.refresh_token)

    def __repr__(self) -> str:  # never show the token
        return f"AccessToken(expires_at={self.expires_at})"

    def fresh(self, margin: float) -> bool:
        return self.expires_at is None or time.time() < self.expires_at - margin


class TokenSource:
    """How one credential obtains access tokens from its platform's token service.

    :param cache_key: identifies the credential (token URL, client id, scope); secrets in it
        are hashed before use as a key.
    :param margin: refresh this many seconds before expiry.
    """

    def __init__(self, cache_key: tuple[str, ...], margin: float = 300.0) -> None:
        self.cache_key = hashlib.sha256("\x00".join(cache_key).encode()).hexdigest()
        self.margin = margin

    def token_request(self) -> ApiRequest:
        """The call to the token service."""
        raise NotImplementedError

    #: How error messages name the token service.
    service = "token endpoint"

    def parse_token(self, response: ApiResponse) -> AccessToken:
        """Read an OAuth token answer: ``access_token``, its expiry, and a rotated ``refresh_token``."""
        body = response.json_object()
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"The {self.service} answered without an access_token")
        refresh = body.get("refresh_token")
        return AccessToken(
            value, self.expires_at(body), refresh if isinstance(refresh, str) and refresh else None
        )

    def expires_at(self, body: dict[str, Any]) -> float | None:
        """When the token stops working: ``expires_in`` seconds from now (``None`` if absent)."""
        expires_in = body.get("expires_in")
        return time.time() + float(expires_in) if isinstance(expires_in, int | float) else None


class TokenCache:
    """Process-wide token cache with single-flight refresh for threads and event loops."""

    def __init__(self) -> None:
        self._tokens: dict[str, AccessToken] = {}
        self._thread_locks: dict[str, threading.Lock] = {}
        self._async_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._guard = threading.Lock()
        #: Number of token-service calls made, per credential (for tests and benchmarks).
        self.fetches: dict[str, int] = {}

    def _valid(self, source: TokenSource) -> AccessToken | None:
        token = self._tokens.get(source.cache_key)
        return token if token is not None and token.fresh(source.margin) else None

    def _store(self, source: TokenSource, token: AccessToken) -> AccessToken:
        self._tokens[source.cache_key] = token
        self.fetches[source.cache_key] = self.fetches.get(source.cache_key, 0) + 1
        return token

    def invalidate(self, source: TokenSource, token: AccessToken | None = None) -> None:
        """Drop the cached token (only if it is still ``token``, when given)."""
        with self._guard:
            current = self._tokens.get(source.cache_key)
            if current is not None and (token is None or current.value == token.value):
                del self._tokens[source.cache_key]

    def get(self, source: TokenSource, fetch: Callable[[ApiRequest], ApiResponse]) -> AccessToken:
        """A fresh token, fetching it (once for all waiting threads) when needed."""
        token = self._valid(source)
        if token is not None:
            return token
        with self._guard:
            lock = self._thread_locks.setdefault(source.cache_key, threading.Lock())
        with lock:
            token = self._valid(source)
            if token is None:
                token = self._store(source, source.parse_token(fetch(source.token_request())))
            return token

    async def get_async(
        self, source: TokenSource, fetch: Callable[[ApiRequest], Awaitable[ApiResponse]]
    ) -> AccessToken:
        """A fresh token, fetching it (once for all waiting coroutines of this loop) when needed."""
        token = self._valid(source)
        if token is not None:
            return token
        key = (source.cache_key, id(asyncio.get_running_loop()))
        with self._guard:
            lock = self._async_locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._valid(source)
            if token is None:
                token = self._store(source, source.parse_token(await fetch(source.token_request())))
            return token

    def clear(self) -> None:
        """Forget every token (tests)."""
        with self._guard:
            self._tokens.clear()
            self.fetches.clear()


#: The process-wide token cache.
token_cache = TokenCache()
