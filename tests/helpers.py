"""Helpers shared by the test packages."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from airflow_provider_querytasks.common.transport.clients import (
    RetryPolicy,
    close_shared_client_session,
)
from airflow_provider_querytasks.testing import connection_env
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.server import EmulatorServer
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

if TYPE_CHECKING:
    from .common.fake_platform import FakeEmulator

#: Retries without waiting: the emulators answer at once.
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.2, jitter=0.0)

ServerT = TypeVar("ServerT", bound=EmulatorServer)


def use_connection(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> str:
    """Expose an emulator's connection dict as ``AIRFLOW_CONN_<ID>`` (as a user would)."""
    name, value = connection_env(conn)
    monkeypatch.setenv(name, value)
    return str(conn["conn_id"])


def with_secret(conn: dict[str, Any], secret: str) -> dict[str, Any]:
    """The same connection with another client secret (where each platform keeps it)."""
    conn = {**conn, "extra": dict(conn.get("extra") or {})}
    if "client_secret" in conn["extra"]:
        conn["extra"]["client_secret"] = secret
    else:
        conn["password"] = secret
    return conn


# The platforms' emulators as most tests want them: quick queries, a few rows or files.
def new_shoplazza_emulator() -> ShoplazzaEmulator:
    return ShoplazzaEmulator(duration=0.3, rows=20)


def new_data_kiosk_emulator() -> DataKioskEmulator:
    return DataKioskEmulator(duration=0.3, rows=5)


def new_adobe_emulator(**options: Any) -> AdobeQueryServiceEmulator:
    """The Adobe emulator the tests use: quick queries, small files; ``options`` on top."""
    return AdobeQueryServiceEmulator(**{"duration": 0.3, "file_size": 1000, **options})


def new_fake_emulator() -> FakeEmulator:
    """The fake platform (``tests/common/fake_platform.py``), imported when first asked for: it
    imports Airflow, which a test session that never uses it need not load at collection."""
    from .common.fake_platform import FakeEmulator

    return FakeEmulator(duration=0.3)


def serve(server: ServerT, monkeypatch: pytest.MonkeyPatch, *, contract: bool = True) -> Iterator[ServerT]:
    """Run an emulator for one test, its default connection exposed as ``AIRFLOW_CONN_*``; when
    the test ends (and ``contract``), every exchange it recorded is checked against the
    platform's published spec (``tests/contracts``)."""
    from .contracts.check import assert_contract

    server.start()
    use_connection(monkeypatch, server.connection())
    yield server
    server.stop()
    if contract:
        assert_contract(server)


class FakeClock:
    """Monotonic time that moves only when told: ``sleep`` (or ``now +=``) advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FastForwardClock:
    """Monotonic time that jumps over the waits it is asked for: the wall clock plus every
    second slept so far. A rate limiter on it computes and accounts for its waits as on the real
    clock (a 429 on createQuery, 1 a minute, costs its minute) without spending them."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def sleep(self, seconds: float) -> None:
        self.skipped += max(0.0, seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.skipped += max(0.0, seconds)
        await asyncio.sleep(0)


def fast_forward_rate_limits(monkeypatch: pytest.MonkeyPatch) -> FastForwardClock:
    """Give the process-wide rate limiter's buckets (made from now on) a :class:`FastForwardClock`.

    For tests about what follows a client-side wait, not about the platform's own limit: the
    emulators' usage plans still run on the wall clock.
    """
    from airflow_provider_querytasks.common.transport.process_state import process_state
    from airflow_provider_querytasks.common.transport.ratelimit import rate_limiters

    clock = FastForwardClock()
    monkeypatch.setattr(rate_limiters, "clock", clock)
    monkeypatch.setattr(rate_limiters, "sleep", clock.sleep)
    monkeypatch.setattr(rate_limiters, "async_sleep", clock.async_sleep)
    process_state.rate_buckets.clear()
    return clock


def run_trigger(trigger: Any) -> dict[str, Any]:
    """Run a trigger to its first event and return the payload."""

    async def first() -> dict[str, Any]:
        try:
            async for event in trigger.run():
                return dict(event.payload)
        finally:
            await close_shared_client_session()
        raise AssertionError("no event")

    return asyncio.run(first())


def run_triggers(triggers: list[Any]) -> list[dict[str, Any]]:
    """Run triggers together on one event loop, each to its first event; return the payloads."""

    async def first(trigger: Any) -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    async def run() -> list[dict[str, Any]]:
        try:
            return list(await asyncio.gather(*(first(t) for t in triggers)))
        finally:
            await close_shared_client_session()

    return asyncio.run(run())


def run_waits(trigger_class: Any, query_ids: list[str], schedule: dict[str, float]) -> list[dict[str, Any]]:
    """Defer one wait per query on the trigger class's default connection, all on one loop."""
    now = time.time()
    conn_id = trigger_class.hook_class.default_conn_name
    return run_triggers(
        [
            trigger_class(conn_id=conn_id, query_id=q, deadline=now + 60, poll_schedule=schedule, started=now)
            for q in query_ids
        ]
    )


class StartedTI:
    """A task instance that started ``ago`` seconds before now."""

    def __init__(self, ago: float) -> None:
        self.try_number = 1
        self.start_date = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=ago)

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def started_context(ago: float) -> Any:
    """A task context whose try started ``ago`` seconds before now."""
    return {"ti": StartedTI(ago)}
