"""Emulator framework: platform APIs served by aiohttp on 127.0.0.1, for tests and DAG authors.

A :class:`EmulatorServer` owns one or more *sites* (HTTP hosts: the API, a token service, an
object-storage host), serves them on loopback ports chosen by the OS, records every request,
and applies injected faults. It runs either in a background thread with its own event loop
(:meth:`EmulatorServer.start`, for sync tests, ``dag.test()`` and the CLI) or inside a running
loop (:meth:`EmulatorServer.start_async`, for async tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from airflow_provider_querytasks.testing.storage import ObjectStorageSite

_Server = TypeVar("_Server", bound="EmulatorServer")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Request key set by a ``truncate`` fault; streaming handlers send half their body, then abort.
TRUNCATE_MARK: Any = (
    web.RequestKey("querytasks_truncate", bool) if hasattr(web, "RequestKey") else "querytasks_truncate"
)


class EmulatorClock:
    """Time as the emulator sees it: the wall clock, optionally sped up or moved forward.

    Query durations are measured on this clock, so a test or benchmark can advance it to
    finish an hour-long query at once.
    """

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._speed = speed
        self._started = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        """Seconds since the clock started, in emulator time."""
        with self._lock:
            return (time.monotonic() - self._started) * self._speed + self._offset

    def advance(self, seconds: float) -> None:
        """Move emulator time forward."""
        with self._lock:
            self._offset += seconds


#: Request key set when an injected fault answered (or altered) the request: its answer is the
#: test's, not the emulator's.
FAULT_MARK: Any = (
    web.RequestKey("querytasks_fault", str) if hasattr(web, "RequestKey") else "querytasks_fault"
)

#: Response bodies longer than this are not kept in the request log (file downloads).
RECORDED_BODY_LIMIT = 256 * 1024


@dataclass
class RecordedRequest:
    """One request as an emulator site received it, and what the site answered.

    :param status: the answer's status (0 until answered, or when the connection was dropped).
    :param response_headers: the answer's headers.
    :param response_body: the answer's body, or ``None`` when not kept (streamed, or longer
        than :data:`RECORDED_BODY_LIMIT`).
    """

    site: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = field(default_factory=time.time)
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes | None = None
    #: The raw query string as sent (percent escapes kept).
    raw_query: str = ""
    #: The action of the injected fault that answered or altered the request, if any.
    fault: str | None = None

    def response_header(self, name: str) -> str | None:
        """A response header value, case-insensitively."""
        for key, value in self.response_headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def header(self, name: str) -> str | None:
        """A header value, case-insensitively."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Fault:
    """An injected fault: what to do to requests that match, and how many times.

    :param action: ``status`` (answer ``status`` with ``body``/``headers``), ``drop`` (close the
        connection without answering), ``delay`` (wait ``seconds``, then answer normally),
        ``expire_token`` (invalidate every issued token, then answer normally) or ``truncate``
        (send headers announcing the full body, half of it, then close the connection).
    :param site: site name to match, or ``None`` for every site.
    :param method: HTTP method to match, or ``None``.
    :param path: regular expression searched in the path, or ``None``.
    :param times: how many matching requests get the fault (``None``: every one).
    :param status: HTTP status for ``action="status"``.
    :param body: JSON-able body (or raw ``bytes``/``str``) for ``action="status"``.
    :param headers: extra response headers for ``action="status"`` (e.g. ``Retry-After``).
    :param seconds: delay for ``action="delay"``.
    """

    action: str
    site: str | None = None
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    hits: int = 0

    def matches(self, site: str, request: web.Request) -> bool:
        """Whether this fault applies to ``request`` on ``site`` (and has hits left)."""
        if self.times is not None and self.hits >= self.times:
            return False
        if self.site is not None and self.site != site:
            return False
        if self.method is not None and self.method.upper() != request.method:
            return False
        return self.path is None or re.search(self.path, request.path) is not None


@dataclass
class RateBucket:
    """A leaky bucket as the platforms describe their limits: ``capacity`` requests (the burst),
    drained at ``rate`` per second of wall-clock time."""

    capacity: float
    rate: float
    level: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        """Count one request; ``False`` when it is over the limit (answer 429)."""
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self.updated) * self.rate)
        self.updated = now
        if self.level + 1 > self.capacity:
            return False
        self.level += 1
        return True


def connection_env(conn: Mapping[str, Any]) -> tuple[str, str]:
    """``(AIRFLOW_CONN_<ID>, JSON)`` for a connection dict that carries its ``conn_id``.

    How the emulators' connections reach Airflow, as a user would set them.
    """
    fields = {key: value for key, value in conn.items() if key != "conn_id"}
    return f"AIRFLOW_CONN_{str(conn['conn_id']).upper()}", json.dumps(fields)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response; ``body=None`` gives an empty body."""
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.json_response(body, status=status, headers=headers)


class BackgroundLoop:
    """An asyncio loop on a daemon thread: what each emulator and the wire proxy serve from.

    :param name: the thread's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(
        self, setup: Callable[[], Awaitable[object]], teardown: Callable[[], Awaitable[object]]
    ) -> None:
        """Run ``setup`` on a new loop in a thread and return once it is done (its error is raised
        here); the loop then runs until :meth:`stop`, which ends it with ``teardown``.

        :param setup: binds the ports (run first, on the loop).
        :param teardown: closes them (run last, on the loop).
        """
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                loop.run_until_complete(setup())
            except BaseException as exc:  # raised to the caller of start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(teardown())
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]

    def stop(self, timeout: float) -> None:
        """Stop the loop (its ``teardown`` runs) and wait up to ``timeout`` seconds for the thread.

        :param timeout: seconds to wait for the thread to end.
        """
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        self.loop = None
        self._thread = None


class EmulatorServer:
    """Base class of the platform emulators.

    Subclasses implement :meth:`build_sites` (site name -> ``web.Application``) and may override
    :meth:`expire_tokens` and :meth:`connection`. Every site gets request logging and fault
    injection.

    :param host: interface to bind; loopback by default (the tests never leave the machine).
    :param clock: emulator clock shared by every site.
    """

    name = "emulator"
    #: The object-storage site serving results, for emulators that have one (site ``storage``).
    storage: ObjectStorageSite | None = None

    def __init__(self, *, host: str = "127.0.0.1", clock: EmulatorClock | None = None) -> None:
        self.host = host
        self.clock = clock or EmulatorClock()
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.urls: dict[str, str] = {}
        self._log_lock = threading.Lock()
        self._runners: list[web.AppRunner] = []
        self._background = BackgroundLoop(f"{self.name}-emulator")

    # -- to implement -------------------------------------------------------------------------
    def build_sites(self) -> dict[str, web.Application]:
        """Site name -> application. Called once per start."""
        raise NotImplementedError

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far (platforms with a token service)."""

    def connection(self, conn_id: str | None = None) -> dict[str, Any]:
        """The Airflow connection (as a JSON-able dict) that points a hook at this emulator."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Environment variables that point Airflow at this emulator: ``AIRFLOW_CONN_*`` of
        :meth:`connection`, plus whatever else the emulator serves (queues...)."""
        return dict([connection_env(self.connection())])

    # -- faults and request log ---------------------------------------------------------------
    def inject(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        """Add a fault (a :class:`Fault` or its keyword arguments) and return it."""
        fault = fault or Fault(**kwargs)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget recorded requests and injected faults."""
        with self._log_lock:
            self.requests.clear()
        self.faults.clear()

    def requests_to(
        self, site: str | None = None, method: str | None = None, path: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests filtered by site, method and a path regular expression."""
        with self._log_lock:
            recorded = list(self.requests)
        return [
            r
            for r in recorded
            if (site is None or r.site == site)
            and (method is None or r.method == method.upper())
            and (path is None or re.search(path, r.path))
        ]

    def _middleware(self, site: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            body = await request.read()
            record = RecordedRequest(
                site=site,
                method=request.method,
                path=request.path,
                query={k: request.query.getall(k) for k in request.query},
                headers=dict(request.headers),
                body=body,
                raw_query=request.rel_url.raw_query_string,
            )
            with self._log_lock:
                self.requests.append(record)
            response = await self._apply_faults(site, request, handler)
            record.status = response.status
            record.fault = request.get(FAULT_MARK)
            record.response_headers = dict(response.headers)
            if isinstance(response, web.Response) and not response.prepared:
                kept = response.body
                if isinstance(kept, bytes | bytearray) and len(kept) <= RECORDED_BODY_LIMIT:
                    record.response_body = bytes(kept)
            return response

        return middleware

    async def _apply_faults(self, site: str, request: web.Request, handler: Handler) -> web.StreamResponse:
        for fault in self.faults:
            if not fault.matches(site, request):
                continue
            fault.hits += 1
            request[FAULT_MARK] = fault.action
            if fault.action == "status":
                if isinstance(fault.body, bytes | str):
                    return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
                return json_response(fault.body, status=fault.status, headers=fault.headers)
            if fault.action == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError("fault: connection dropped")
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.action == "expire_token":
                self.expire_tokens()
            elif fault.action == "truncate":
                # Streaming handlers (the storage site) cut their own body when they see the mark.
                request[TRUNCATE_MARK] = True
                response = await handler(request)
                return response if response.prepared else await self._truncated(request, response)
            break
        return await handler(request)

    @staticmethod
    async def _truncated(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        body = response.body if isinstance(response, web.Response) else b""
        data = bytes(body) if isinstance(body, bytes | bytearray) else b""
        cut = web.StreamResponse(status=response.status, headers=response.headers)
        cut.content_length = len(data)
        await cut.prepare(request)
        await cut.write(data[: len(data) // 2])
        if request.transport is not None:
            request.transport.abort()
        return cut

    # -- lifecycle ----------------------------------------------------------------------------
    async def start_async(self: _Server) -> _Server:
        """Serve every site on the running event loop."""
        for site_name, app in self.build_sites().items():
            app.middlewares.insert(0, self._middleware(site_name))  # type: ignore[arg-type]
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            tcp = web.TCPSite(runner, self.host, 0, backlog=4096)
            await tcp.start()
            port = runner.addresses[0][1]
            self.urls[site_name] = f"http://{self.host}:{port}"
            self._runners.append(runner)
        if self.storage is not None:
            # Presigned URLs name the storage site, whose port is known only now.
            self.storage.base_url = self.urls["storage"]
        return self

    async def stop_async(self) -> None:
        """Stop serving (from the loop that started it)."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    def start(self: _Server) -> _Server:
        """Serve every site from a background thread; returns once the ports are bound."""
        self._background.start(self.start_async, self.stop_async)
        return self

    def stop(self) -> None:
        """Stop the background thread started by :meth:`start`."""
        self._background.stop(timeout=30)

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
