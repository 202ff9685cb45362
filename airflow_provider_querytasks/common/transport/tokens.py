"""OAuth access tokens: cached per credential, refreshed early, one refresh in flight at a time.

A platform supplies a :class:`TokenSource` (how to ask its token service, as an
:class:`~airflow_provider_querytasks.common.api.calls.ApiRequest`, and how to read the answer).
:class:`TokenCache` keeps tokens process-wide, keyed by everything that identifies the credential
(token URL, client id, hashes of the secret and refresh token, scopes), so every hook and trigger
of one credential shares one token, a changed secret is a different credential, and many
concurrent waiters on an expired token cause one request to the token service.

A platform that rotates its refresh token on every refresh (Shoplazza) uses a
:class:`RotatingTokenSource`: the newest refresh token and access token live in a
:class:`SharedTokenStore`, an Airflow Variable per connection that every process of the
deployment reads before it refreshes and writes after (see ``docs/design/shoplazza.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_querytasks.common.api.calls import ApiRequest, ApiResponse
from airflow_provider_querytasks.common.api.errors import AuthenticationError
from airflow_provider_querytasks.common.transport.process_state import ProcessState, process_state

log = logging.getLogger(__name__)


class TokenStoreError(RuntimeError):
    """The shared token store could not be read or written."""


class TokenStore(Protocol):
    """Where a :class:`SharedTokenStore` keeps its records, and how the tokens in them are
    masked in logs (Airflow Variables and the secrets masker:
    :class:`~airflow_provider_querytasks.common.transport.token_store.AirflowVariableTokenStore`).
    Reads and writes raise :class:`TokenStoreError` when the store cannot be reached."""

    def read(self, key: str) -> str | None: ...

    async def aread(self, key: str) -> str | None: ...

    def write(self, key: str, value: str, description: str) -> None: ...

    async def awrite(self, key: str, value: str, description: str) -> None: ...

    def mask(self, secret: str) -> None: ...


#: Registers a secret with the secrets masker (Airflow's, passed in by the transport).
SecretMasker = Callable[[str], None]


#: A token is refreshed this share of its lifetime before it expires, at most ``margin`` seconds
#: before: an hour-long token 300 s early, a 60 s token 12 s early (not before every call).
REFRESH_FRACTION = 0.2
#: Statuses a token service uses to refuse credentials (RFC 6749 section 5.2); read as answers.
TOKEN_REFUSAL_STATUSES = (400, 401, 403)
#: How long a process whose refresh lost a race waits for the winner to publish the new tokens.
RACE_REREAD_DELAYS = (0.2, 0.4, 0.8, 1.6, 3.2)


def digest(*parts: str) -> str:
    """A stable hash of credential parts (secrets never serve as keys or reach the store in clear)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops working (``time.time()`` seconds).

    :param value: the token (the :class:`TokenCache` registers it with the secrets masker).
    :param expires_at: wall-clock expiry; ``None`` when the platform does not say.
    :param refresh_token: a rotated refresh token returned with it, if any.
    :param issued_at: when it was issued (its lifetime scales the refresh margin).
    """

    value: str
    expires_at: float | None = None
    refresh_token: str | None = None
    issued_at: float | None = None

    def __repr__(self) -> str:  # never show the token
        return f"AccessToken(expires_at={self.expires_at})"

    def margin(self, margin: float) -> float:
        """Seconds before expiry at which the token counts as stale: ``margin``, or less for a
        short-lived token (:data:`REFRESH_FRACTION` of its lifetime)."""
        if self.expires_at is None or self.issued_at is None:
            return margin
        return min(margin, REFRESH_FRACTION * max(0.0, self.expires_at - self.issued_at))

    def fresh(self, margin: float) -> bool:
        """Whether the token is still good for at least the refresh margin."""
        return self.expires_at is None or time.time() < self.expires_at - self.margin(margin)


Fetch = Callable[[ApiRequest], ApiResponse]
AsyncFetch = Callable[[ApiRequest], Awaitable[ApiResponse]]


class TokenSource:
    """How one credential obtains access tokens from its platform's token service.

    :param cache_key: identifies the credential: token URL, client id, client secret, refresh
        token, scopes (hashed here: no secret is kept as a key).
    :param margin: refresh at most this many seconds before expiry (less for short-lived tokens:
        see :meth:`AccessToken.margin`).
    """

    #: How error messages name the token service.
    service = "token endpoint"
    #: The platform (``shoplazza``...) errors report.
    platform: str | None = None
    #: The operation name of the token call (rate limits, logs, errors).
    operation = "token"
    #: What to fix, by OAuth ``error`` code; ``{conn}`` names the connection.
    hints: dict[str, str] = {
        "invalid_client": "check the client id and client secret in {conn}",
        "unauthorized_client": "check that the app may use this grant, and its client id in {conn}",
        "invalid_grant": "the refresh token is wrong or revoked: authorise the app again and set "
        "the new refresh token in {conn}",
        "invalid_scope": "check the scopes in {conn}",
    }

    def __init__(self, cache_key: tuple[str, ...], margin: float = 300.0) -> None:
        self.cache_key = digest(*cache_key)
        self.margin = margin
        #: The Airflow connection the credential comes from (error messages, shared store).
        self.conn_id: str | None = None

    def bind(self, conn_id: str) -> None:
        """Name the connection this credential was read from."""
        self.conn_id = conn_id

    def token_request(self) -> ApiRequest:
        """The call to the token service."""
        raise NotImplementedError

    def form_request(self, url: str, data: dict[str, str]) -> ApiRequest:
        """A form-encoded POST to the token service whose refusals :meth:`parse_token` explains."""
        return ApiRequest(
            "POST",
            url,
            self.operation,
            data=data,
            authenticated=False,
            ok_statuses=TOKEN_REFUSAL_STATUSES,
        )

    def parse_token(self, response: ApiResponse) -> AccessToken:
        """Read an OAuth token answer: ``access_token``, its expiry, and a rotated ``refresh_token``.

        :raises AuthenticationError: when the service refused the credentials (with its ``error``,
            ``error_description`` and what to fix) or answered without a token.
        """
        if response.status >= 400:
            raise self.refusal(response)
        body = response.json_object()
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"The {self.service} answered without an access_token")
        refresh = body.get("refresh_token")
        return AccessToken(
            value,
            self.expires_at(body),
            refresh if isinstance(refresh, str) and refresh else None,
            issued_at=time.time(),
        )

    def refusal(self, response: ApiResponse) -> AuthenticationError:
        """The error for a refused token request: the OAuth ``error`` and ``error_description``
        and what to fix in which connection (never a secret: only those two fields are shown)."""
        try:
            body = response.json()
        except Exception:
            body = None
        body = body if isinstance(body, dict) else {}
        error = str(body.get("error") or body.get("error_code") or "")[:100]
        description = str(body.get("error_description") or body.get("message") or "")[:300]
        conn = f"connection {self.conn_id!r}" if self.conn_id else "the connection"
        hint = self.hints.get(error, "check the credentials in {conn}").format(conn=conn)
        said = ": ".join(part for part in (error, description) if part) or response.text_excerpt(200)
        return AuthenticationError(
            f"The {self.service} refused the credentials of {conn} with HTTP {response.status}: "
            f"{said}. To fix: {hint}",
            platform=self.platform,
            operation=self.operation,
            status=response.status,
            detail={"error": error, "error_description": description},
        )

    def expires_at(self, body: dict[str, Any]) -> float | None:
        """When the token stops working: ``expires_in`` seconds from now (``None`` if absent)."""
        expires_in = body.get("expires_in")
        return time.time() + float(expires_in) if isinstance(expires_in, int | float) else None

    def obtain(self, fetch: Fetch, rejected: Collection[str] = ()) -> AccessToken:
        """A new token (the cache calls this when it has none fresh).

        :param fetch: sends a token request, returns the answer.
        :param rejected: digests of tokens the API refused (never to be handed out again).
        """
        return self.parse_token(fetch(self.token_request()))

    async def aobtain(
        self, fetch: Callable[[ApiRequest], Awaitable[ApiResponse]], rejected: Collection[str] = ()
    ) -> AccessToken:
        """:meth:`obtain` on the event loop."""
        return self.parse_token(await fetch(self.token_request()))


def refused_grant(error: AuthenticationError) -> bool:
    """Whether the token service refused the refresh token itself (``invalid_grant``)."""
    return isinstance(error.detail, dict) and error.detail.get("error") == "invalid_grant"


@dataclass(frozen=True)
class StoredTokens:
    """What the shared store keeps for one connection (JSON in an Airflow Variable).

    :param lineage: hash of the connection's token URL, client id and refresh token: the record
        descends from that refresh token (a connection given a new one starts a new lineage).
    :param credential: hash of the lineage and the client secret: whose access token this is.
    :param refresh_token: the newest refresh token of the lineage.
    :param access_token: the newest access token, if any.
    :param expires_at: its expiry (``time.time()`` seconds).
    :param issued_at: when it was issued.
    :param updated_at: when the record was written.
    """

    lineage: str
    credential: str
    refresh_token: str
    access_token: str | None
    expires_at: float | None
    issued_at: float | None
    updated_at: float

    def __repr__(self) -> str:  # never show the tokens
        return f"StoredTokens(lineage={self.lineage[:12]}, updated_at={self.updated_at})"

    def to_json(self) -> str:
        """The record as stored (a versioned JSON object)."""
        return json.dumps({"version": 1, **self.__dict__}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StoredTokens | None:
        """The record in ``text``; ``None`` for none or one this version cannot read."""
        if not text:
            return None
        try:
            data = json.loads(text)
            record = cls(
                lineage=str(data["lineage"]),
                credential=str(data["credential"]),
                refresh_token=str(data["refresh_token"]),
                access_token=data.get("access_token") or None,
                expires_at=data.get("expires_at"),
                issued_at=data.get("issued_at"),
                updated_at=float(data.get("updated_at") or 0.0),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return record

    def secrets(self) -> tuple[str, ...]:
        """The tokens in the record (for the secrets masker)."""
        return (self.refresh_token, self.access_token) if self.access_token else (self.refresh_token,)

    def access(self) -> AccessToken | None:
        """The stored access token, or ``None`` when the record has none."""
        if not self.access_token:
            return None
        return AccessToken(self.access_token, self.expires_at, self.refresh_token, self.issued_at)


class SharedTokenStore:
    """One connection's rotating tokens, in record ``key`` of ``store`` (an Airflow Variable).

    With Airflow's store the record is reached the way each process reaches the metadata DB:
    through the supervisor in Airflow 3 task and trigger runners, directly in servers, the CLI,
    Airflow 2 and plain scripts. The Variable is Fernet-encrypted when Airflow has a
    ``fernet_key``; its name contains ``token``, so the UI and API show its value masked.

    :param key: the record's key.
    :param description: the record's description (what it is, how to reset it).
    :param store: where records are kept; ``None`` keeps the record in this process only.
    :param memory_key: names this process's copy (default: ``key``).
    """

    def __init__(
        self, key: str, description: str, store: TokenStore | None, *, memory_key: str | None = None
    ) -> None:
        self.key = key
        self.description = description
        self.store = store
        self.memory_key = memory_key or key

    def _shared(self, text: str | None) -> StoredTokens | None:
        record = StoredTokens.from_json(text)
        if record is not None and self.store is not None:
            for secret in record.secrets():
                self.store.mask(secret)
        return self._newest(record)

    def _newest(self, shared: StoredTokens | None) -> StoredTokens | None:
        unsaved = process_state.unsaved_tokens.get(self.memory_key)
        if unsaved is not None and (shared is None or shared.refresh_token == unsaved[1]):
            return unsaved[0]  # our refresh never reached the store: the store's token is dead
        return shared

    def _unreadable(self, error: TokenStoreError) -> StoredTokens | None:
        log.warning(
            "Could not read the shared OAuth tokens (%s); using this process's own copy. Other "
            "processes may hold a newer refresh token.",
            error,
        )
        return process_state.written_tokens.get(self.memory_key)

    def _unwritable(self, error: TokenStoreError) -> None:
        log.warning(
            "Could not save the rotated OAuth tokens (%s): this process keeps them, but other "
            "processes still hold the previous refresh token, which the platform no longer "
            "accepts. Check that this process can write Airflow Variables.",
            error,
        )

    def read(self) -> StoredTokens | None:
        """The shared record of this credential, or ``None``; without a store, this process's own copy."""
        if self.store is None:
            return process_state.written_tokens.get(self.memory_key)
        try:
            return self._shared(self.store.read(self.key))
        except TokenStoreError as error:
            return self._unreadable(error)

    async def aread(self) -> StoredTokens | None:
        """The shared record of this credential, read without blocking the event loop."""
        if self.store is None:
            return process_state.written_tokens.get(self.memory_key)
        try:
            return self._shared(await self.store.aread(self.key))
        except TokenStoreError as error:
            return self._unreadable(error)

    def _saved(self, record: StoredTokens, replaced: str, error: TokenStoreError | None) -> None:
        if error is None:
            process_state.unsaved_tokens.pop(self.memory_key, None)
            return
        process_state.unsaved_tokens[self.memory_key] = (record, replaced)
        self._unwritable(error)

    def write(self, record: StoredTokens, replaced: str) -> None:
        """Publish ``record``, which replaced the refresh token ``replaced``."""
        process_state.written_tokens[self.memory_key] = record
        if self.store is not None:
            try:
                self.store.write(self.key, record.to_json(), self.description)
            except TokenStoreError as error:
                self._saved(record, replaced, error)
            else:
                self._saved(record, replaced, None)

    async def awrite(self, record: StoredTokens, replaced: str) -> None:
        """:meth:`write` without blocking the event loop."""
        process_state.written_tokens[self.memory_key] = record
        if self.store is not None:
            try:
                await self.store.awrite(self.key, record.to_json(), self.description)
            except TokenStoreError as error:
                self._saved(record, replaced, error)
            else:
                self._saved(record, replaced, None)


class RotatingTokenSource(TokenSource):
    """A refresh-token grant whose service replaces the refresh token on every refresh.

    Before refreshing, it reads the connection's record in the :class:`SharedTokenStore`: a
    fresh access token there is used as is (a new process makes no token call), else the newest
    refresh token is. After refreshing, it writes the new pair. When two processes refresh at
    the same moment, the loser's refresh token was just replaced (``invalid_grant``): it re-reads
    the store until the winner's pair appears, then uses it (or refreshes once with it).

    :param cache_key: see :class:`TokenSource` (must include the secret and refresh token).
    :param token_url: the token service.
    :param client_id: the app's client id.
    :param client_secret: the app's secret.
    :param refresh_token: the refresh token the connection holds (the start of its lineage).
    :param store: where the connection's record is shared once :meth:`bind` names the connection
        (the hook passes Airflow's); ``None`` keeps the tokens in this process.
    :param margin: see :class:`TokenSource`.
    """

    #: The store's Variable is ``querytasks.<store_name>.oauth_token.<conn_id>``.
    store_name = "oauth"

    def __init__(
        self,
        cache_key: tuple[str, ...],
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        store: TokenStore | None = None,
        margin: float = 300.0,
    ) -> None:
        super().__init__(cache_key, margin)
        self.initial_refresh_token = refresh_token
        self.lineage = digest(token_url, client_id, refresh_token)
        self.credential = digest(self.lineage, client_secret)
        self.record_store = store
        # Until bound to a connection (hooks always bind), the tokens stay in this process.
        self.store = SharedTokenStore(f"process:{self.lineage}", "", None)

    @staticmethod
    def store_key(store_name: str, conn_id: str) -> str:
        """The Variable's key; a conn id too long for a key (250 characters) is shortened by hash."""
        key = f"querytasks.{store_name}.oauth_token.{conn_id}"
        return key if len(key) <= 250 else f"{key[:185]}.{digest(conn_id)}"

    def bind(self, conn_id: str) -> None:
        super().bind(conn_id)
        self.store = SharedTokenStore(
            self.store_key(self.store_name, conn_id),
            f"airflow-provider-querytasks: the newest OAuth tokens of connection {conn_id!r} "
            "(the platform replaces the refresh token on every refresh). Written by the provider; "
            "to re-authorise, set the new refresh_token in the connection (this record is then "
            "ignored and replaced).",
            self.record_store,
        )

    def refresh_request(self, refresh_token: str) -> ApiRequest:
        """The refresh call with ``refresh_token``."""
        raise NotImplementedError

    def token_request(self) -> ApiRequest:
        return self.refresh_request(self.initial_refresh_token)

    # -- decisions shared by the sync and async paths -----------------------------------------
    def _ours(self, record: StoredTokens | None) -> StoredTokens | None:
        return record if record is not None and record.lineage == self.lineage else None

    def _usable(self, record: StoredTokens | None, rejected: Collection[str]) -> AccessToken | None:
        """The record's access token, if it is this credential's, fresh and not refused."""
        if record is None or record.credential != self.credential:
            return None  # another secret: a wrong one must not pass on a good one's token
        token = record.access()
        if token is None or not token.fresh(self.margin) or digest(token.value) in rejected:
            return None
        return token

    def _refresh_token(self, record: StoredTokens | None) -> str:
        return record.refresh_token if record is not None else self.initial_refresh_token

    def _newer(self, record: StoredTokens | None, used: str) -> StoredTokens | None:
        record = self._ours(record)
        return record if record is not None and record.refresh_token != used else None

    def _record(self, token: AccessToken, used: str) -> StoredTokens:
        return StoredTokens(
            lineage=self.lineage,
            credential=self.credential,
            refresh_token=token.refresh_token or used,
            access_token=token.value,
            expires_at=token.expires_at,
            issued_at=token.issued_at,
            updated_at=time.time(),
        )

    # -- sync ---------------------------------------------------------------------------------
    def _refresh(self, fetch: Fetch, used: str) -> AccessToken:
        token = self.parse_token(fetch(self.refresh_request(used)))
        self.store.write(self._record(token, used), used)
        return token

    def obtain(self, fetch: Fetch, rejected: Collection[str] = ()) -> AccessToken:
        record = self._ours(self.store.read())
        token = self._usable(record, rejected)
        if token is not None:
            return token
        used = self._refresh_token(record)
        try:
            return self._refresh(fetch, used)
        except AuthenticationError as error:
            if not refused_grant(error):
                raise
            lost_to = error
        for delay in (0.0, *RACE_REREAD_DELAYS):
            time.sleep(delay)
            newer = self._newer(self.store.read(), used)
            if newer is not None:
                return self._usable(newer, rejected) or self._refresh(fetch, newer.refresh_token)
        raise lost_to

    # -- async --------------------------------------------------------------------------------
    async def _arefresh(self, fetch: AsyncFetch, used: str) -> AccessToken:
        token = self.parse_token(await fetch(self.refresh_request(used)))
        await self.store.awrite(self._record(token, used), used)
        return token

    async def aobtain(self, fetch: AsyncFetch, rejected: Collection[str] = ()) -> AccessToken:
        record = self._ours(await self.store.aread())
        token = self._usable(record, rejected)
        if token is not None:
            return token
        used = self._refresh_token(record)
        try:
            return await self._arefresh(fetch, used)
        except AuthenticationError as error:
            if not refused_grant(error):
                raise
            lost_to = error
        for delay in (0.0, *RACE_REREAD_DELAYS):
            await asyncio.sleep(delay)
            newer = self._newer(await self.store.aread(), used)
            if newer is not None:
                return self._usable(newer, rejected) or await self._arefresh(fetch, newer.refresh_token)
        raise lost_to


class TokenCache:
    """Process-wide token cache with single-flight refresh for threads and event loops.

    :param state: where the tokens, refusals and locks are kept (bounded; see :class:`ProcessState`);
        default: its own.
    :param mask: registers each new token with the secrets masker (default: none).
    """

    #: Refused tokens remembered per credential (a few: refusals are rare).
    MAX_REJECTED = 16

    def __init__(self, state: ProcessState | None = None, mask: SecretMasker | None = None) -> None:
        self._state = state = state or ProcessState()
        self._mask = mask
        self._tokens = state.tokens
        self._rejected = state.rejected_tokens
        self._thread_locks = state.token_locks
        self._async_locks = state.async_token_locks
        self._guard = threading.Lock()

    def _valid(self, source: TokenSource) -> AccessToken | None:
        token = self._tokens.get(source.cache_key)
        return token if token is not None and token.fresh(source.margin) else None

    def _keep(self, source: TokenSource, token: AccessToken) -> None:
        if self._mask is not None:
            self._mask(token.value)
            if token.refresh_token:
                self._mask(token.refresh_token)
        self._tokens[source.cache_key] = token

    def invalidate(self, source: TokenSource, token: AccessToken | None = None) -> None:
        """Drop the cached token (only if it is still ``token``, when given); a given ``token``
        the API refused is never handed out again, not even from the shared store."""
        with self._guard:
            if token is not None:
                rejected: list[str] = self._rejected.setdefault(source.cache_key, list)
                rejected.append(digest(token.value))
                del rejected[: -self.MAX_REJECTED]
            current = self._tokens.get(source.cache_key)
            if current is not None and (token is None or current.value == token.value):
                self._tokens.pop(source.cache_key)

    def get(self, source: TokenSource, fetch: Fetch) -> AccessToken:
        """A fresh token, fetching it (once for all waiting threads) when needed."""
        token = self._valid(source)
        if token is not None:
            return token
        with self._guard:
            lock = self._thread_locks.setdefault(source.cache_key, threading.Lock)
        with lock:
            token = self._valid(source)
            if token is None:
                token = source.obtain(fetch, tuple(self._rejected.get(source.cache_key) or ()))
                self._keep(source, token)
            return token

    async def get_async(self, source: TokenSource, fetch: AsyncFetch) -> AccessToken:
        """A fresh token, fetching it (once for all waiting coroutines of this loop) when needed."""
        token = self._valid(source)
        if token is not None:
            return token
        key = (source.cache_key, id(asyncio.get_running_loop()))
        with self._guard:
            lock = self._async_locks.setdefault(key, asyncio.Lock)
        async with lock:
            token = self._valid(source)
            if token is None:
                token = await source.aobtain(fetch, tuple(self._rejected.get(source.cache_key) or ()))
                self._keep(source, token)
            return token

    def clear(self) -> None:
        """Forget every token, including this process's copies of shared records (tests)."""
        with self._guard:
            self._tokens.clear()
            self._rejected.clear()
            self._state.written_tokens.clear()
            self._state.unsaved_tokens.clear()
