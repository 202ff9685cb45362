"""The base hook: connection reading (sync and async), secrets masking, API clients."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar, cast

from airflow_provider_querytasks.common.api.calls import ApiRequest, ApiResponse, PlatformApi
from airflow_provider_querytasks.common.api.errors import (
    AuthenticationError,
    InvalidInputError,
    QueryCancelledError,
    QueryTaskError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.api.notifications import Decoder
from airflow_provider_querytasks.common.api.operations import Steps, arun_steps, run_steps
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.transport.clients import (
    AsyncApiClient,
    RetryPolicy,
    SyncApiClient,
)
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.common.transport.tokens import TokenSource
from airflow_provider_querytasks.compat import (
    BaseHook,
    Connection,
    get_async_connection,
    get_async_extra_dejson,
    mask_secret,
)
from airflow_provider_querytasks.connection_forms import ConnectionForm

SettingsT = TypeVar("SettingsT")
ApiT = TypeVar("ApiT", bound=PlatformApi)
T = TypeVar("T")
P = ParamSpec("P")


#: Seconds a connection read by a trigger serves the other triggers of the process.
SHARED_SETTINGS_TTL = 60.0
# The connection reads and async clients shared by the hooks of the process live in
# ``process_state.shared_settings`` (key: hook class, conn id; value: settings, the
# ``AIRFLOW_CONN_*`` value, read time) and ``process_state.shared_async_clients`` (key: hook
# class, conn id, retry, timeout): a triggerer holding 5,000 waits builds a few, not 5,000.


class QueryTaskHook(BaseHook, Generic[SettingsT, ApiT]):
    """Base of the platform hooks, typed by the platform's settings and protocol object.

    A platform hook sets the class attributes and implements :meth:`build_settings` (validate the
    connection into the platform's settings object), :meth:`build_api`, and, where the platform has
    a token service, :meth:`build_token_source` (else :meth:`static_token`). Its operations are
    written once (:mod:`~.operations`: request builders plus parsers, usually methods of the
    protocol object) and exposed as sync methods (through :meth:`run`) and async ``a``-prefixed
    methods (through :meth:`arun`).

    :param conn_id: the Airflow connection id (the class's default when omitted).
    :param retry: retry policy for API calls.
    :param timeout: (connect, read) timeout of one HTTP call, seconds.
    """

    conn_name_attr = "conn_id"
    default_conn_name: ClassVar[str]
    conn_type: ClassVar[str]
    hook_name: ClassVar[str]
    form: ClassVar[ConnectionForm]

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        super().__init__()
        self.conn_id = conn_id or self.default_conn_name
        self.retry = retry
        self.timeout = timeout
        self._settings: SettingsT | None = None
        self._client: SyncApiClient | None = None
        self._aclient: AsyncApiClient | None = None

    # -- connection forms (Airflow 2.11, 3.0, 3.1; 3.2+ reads the provider metadata) ----------
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form."""
        return cls.form.connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder standard fields of the connection form."""
        return cls.form.ui_field_behaviour()

    # -- to implement -------------------------------------------------------------------------
    def build_settings(self, conn: Connection, extra: dict[str, Any]) -> SettingsT:
        """Validate the connection into the platform's settings (raise :class:`InvalidInputError`)."""
        raise NotImplementedError

    def build_api(self, settings: SettingsT) -> ApiT:
        raise NotImplementedError

    def build_token_source(self, settings: SettingsT) -> TokenSource | None:
        return None

    def static_token(self, settings: SettingsT) -> str | None:
        return None

    def check_connection(self) -> str:
        """Make one cheap authenticated call; return what it showed (for ``test_connection``)."""
        raise NotImplementedError

    # -- the query-task interface the shared operator, sensor and trigger use -----------------
    def get_status(self, query_id: str) -> StatusSnapshot:
        """One poll of a remote query, normalised."""
        raise NotImplementedError

    async def aget_status(self, query_id: str) -> StatusSnapshot:
        """One poll of a remote query, normalised, on the event loop."""
        raise NotImplementedError

    async def alist_statuses(self, wanted: Mapping[str, float]) -> dict[str, StatusSnapshot] | None:
        """Snapshots of many of this account's queries from the platform's list endpoint.

        Coalesced polling (:mod:`~.coalesce`) calls it for the deferred waits on one account.

        :param wanted: query id -> wall-clock time (``time.time()``) the wait on it started; the
            query was created at or before then (it bounds a created-time filter: the query may
            be much older, e.g. a sensor on someone else's query: then it is simply not found).
        :return: a snapshot (the same :class:`StatusSnapshot` :meth:`aget_status` would give,
            same normalisation, same raw object shape as far as the list carries it) for each
            wanted query the list showed; queries it did not show are absent (they are then
            polled one by one); ``None`` when the platform cannot list now (no list endpoint, or
            its rate budget has no call to spare) so that every query is polled on its own.
            A list object lacking a field a terminal snapshot needs (a result URL...) gives no
            snapshot for that query. Default: ``None`` (the platform has no list path).
        """
        return None

    async def alist_ready_in(self) -> float:
        """Seconds until :meth:`alist_statuses` has a call to spare (0: now). A platform whose
        list has a tight budget of its own says when it can answer again, so that the waits of a
        busy account follow its list calls instead of each polling its own query meanwhile.
        Default: 0 (the list shares the account's budget, or there is none)."""
        return 0.0

    def poller_key(self) -> Hashable:
        """What one shared poller serves: one account of one platform (default: the connection)."""
        return (type(self), self.conn_id)

    def cancel_query(self, query_id: str) -> None:
        """Cancel a remote query; a query that already finished is not an error."""
        raise NotImplementedError

    async def acancel_query(self, query_id: str) -> None:
        """Cancel a remote query on the event loop."""
        raise NotImplementedError

    @classmethod
    def notification_decoder(cls) -> Decoder | None:
        """How the platform's completion notifications read (``None``: it sends none)."""
        return None

    def notification_account(self) -> str | None:
        """The account whose completion notifications this connection's waits accept (``None``:
        any account)."""
        return None

    def describe_query(self, query_id: str) -> str:
        """How log lines name the query (``Data Kiosk query 123``)."""
        return f"{self.hook_name} query {query_id}"

    def failure_error(self, snapshot: StatusSnapshot) -> QueryTaskError:
        """The exception for a query that ended FAILED or CANCELLED, with the remote error text.

        Platforms whose error detail lives elsewhere (an error document) override this.
        """
        cls = QueryCancelledError if snapshot.state is QueryState.CANCELLED else RemoteQueryFailedError
        text = f": {snapshot.message}" if snapshot.message else ""
        return cls(
            f"{self.describe_query(snapshot.query_id)} ended {snapshot.remote_status}{text}",
            platform=self.conn_type,
            detail=snapshot.raw,
        )

    # -- connection reading -------------------------------------------------------------------
    def extra_value(self, extra: dict[str, Any], name: str, default: Any = None) -> Any:
        """An extra field, also under the ``extra__<conn_type>__<name>`` key older forms wrote."""
        for key in (name, f"extra__{self.conn_type}__{name}"):
            value = extra.get(key)
            if value not in (None, ""):
                return value
        return default

    def _read(self, conn: Connection, extra: dict[str, Any]) -> SettingsT:
        if conn.conn_type and conn.conn_type.replace("-", "_") != self.conn_type:
            raise InvalidInputError(
                "conn_id",
                f"connection {self.conn_id!r} has type {conn.conn_type!r}; "
                f"{type(self).__name__} needs a {self.conn_type!r} connection",
            )
        # Secrets go to the masker as soon as they are read.
        if conn.password:
            mask_secret(conn.password)
        for field in self.form.extras:
            value = self.extra_value(extra, field.name)
            if field.kind == "password" and isinstance(value, str):
                mask_secret(value)
        return self.build_settings(conn, extra)

    @property
    def settings(self) -> SettingsT:
        """The validated connection settings (read once per hook)."""
        if self._settings is None:
            conn = self.get_connection(self.conn_id)
            self._settings = self._read(conn, conn.extra_dejson)
        return self._settings

    async def aget_settings(self) -> SettingsT:
        """The validated connection settings, read without blocking the event loop.

        Shared by the hooks of one process for a minute (keyed by the hook class, the conn id and
        its ``AIRFLOW_CONN_*`` value when there is one): a triggerer restart brings back thousands
        of triggers on a few connections, and each lookup is a round trip to the supervisor (or
        the secrets backend) plus a secrets-masker update.
        """
        if self._settings is None:
            key = (type(self), self.conn_id)
            env_value = os.environ.get(f"AIRFLOW_CONN_{self.conn_id.upper()}")
            self._settings = self._shared_settings(key, env_value)
            if self._settings is None:
                # One read in flight per connection: the waits a triggerer takes up together
                # (thousands on a few connections) wait for it instead of each sending its own
                # round trip to the supervisor, which answers them one at a time (benchmark 7).
                lock_key = (*key, id(asyncio.get_running_loop()))
                lock = process_state.settings_locks.setdefault(lock_key, asyncio.Lock)
                async with lock:
                    self._settings = self._shared_settings(key, env_value)
                    if self._settings is None:
                        conn = await get_async_connection(self.conn_id)
                        self._settings = self._read(conn, await get_async_extra_dejson(conn))
                        process_state.shared_settings[key] = (self._settings, env_value, time.monotonic())
        return self._settings

    @staticmethod
    def _shared_settings(key: tuple[type, str], env_value: str | None) -> Any:
        """Settings another hook of this process read for ``key`` within the last minute."""
        shared = process_state.shared_settings.get(key)
        if shared and shared[1] == env_value and time.monotonic() - shared[2] < SHARED_SETTINGS_TTL:
            return shared[0]
        return None

    # -- clients ------------------------------------------------------------------------------
    def _client_kwargs(self, settings: SettingsT) -> dict[str, Any]:
        token_source = self.build_token_source(settings)
        if token_source is not None:
            token_source.bind(self.conn_id)
        return {
            "token_source": token_source,
            "static_token": self.static_token(settings),
            "retry": self.retry,
            "timeout": self.timeout,
        }

    @property
    def client(self) -> SyncApiClient:
        if self._client is None:
            settings = self.settings
            self._client = SyncApiClient(self.build_api(settings), **self._client_kwargs(settings))
        return self._client

    async def aclient(self) -> AsyncApiClient:
        if self._aclient is None:
            settings = await self.aget_settings()
            key = (type(self), self.conn_id, self.retry, self.timeout)
            shared = process_state.shared_async_clients.get(key)
            if shared is not None and shared[0] is settings:
                self._aclient = shared[1]
            else:
                self._aclient = AsyncApiClient(self.build_api(settings), **self._client_kwargs(settings))
                process_state.shared_async_clients[key] = (settings, self._aclient)
        return self._aclient

    @property
    def api(self) -> ApiT:
        """The platform's protocol object (request builders), as the sync client uses it."""
        return cast("ApiT", self.client.api)

    def run(
        self, operation: Callable[Concatenate[ApiT, P], Steps[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run an API operation with the sync client.

        :param operation: the operation, given the protocol object first (``DataKioskApi.get_query``).
        :param args: its other arguments (``query_id``).
        """
        return run_steps(operation(self.api, *args, **kwargs), self.call)

    async def arun(
        self, operation: Callable[Concatenate[ApiT, P], Steps[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run an API operation with the async client (as :meth:`run`)."""
        client = await self.aclient()
        return await arun_steps(operation(cast("ApiT", client.api), *args, **kwargs), self.acall)

    def call(self, request: ApiRequest) -> ApiResponse:
        """Execute one API request synchronously."""
        return self.client.call(request)

    async def acall(self, request: ApiRequest) -> ApiResponse:
        """Execute one API request on the event loop."""
        try:
            return await (await self.aclient()).call(request)
        except AuthenticationError:
            # The credentials may have been fixed since the shared read: the next hook reads again.
            self.forget_shared_settings()
            raise

    def forget_shared_settings(self) -> None:
        """Drop this connection's read shared by the process's triggers (read again on next use)."""
        process_state.shared_settings.pop((type(self), self.conn_id), None)
        clients = process_state.shared_async_clients
        for key in [key for key in clients if key[:2] == (type(self), self.conn_id)]:
            clients.pop(key, None)

    def get_conn(self) -> SyncApiClient:
        """The sync API client (Airflow's ``get_conn`` convention)."""
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's *Test* button and ``airflow connections test``.

        Reads the connection afresh (never a read shared by other hooks of the process): a fixed
        or revoked credential is tested as it is now. Tokens are cached by credential (secret
        included), so a wrong secret fails here even where the right one has a cached token.
        """
        if self._client is not None:
            self._client.close()
        self._settings, self._client, self._aclient = None, None, None
        self.forget_shared_settings()
        try:
            return True, self.check_connection()
        except QueryTaskError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
