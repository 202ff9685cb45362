"""The process-wide state: bounded caches and one reset()."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_querytasks.common.transport.clients import shared_client_session
from airflow_provider_querytasks.common.transport.process_state import BoundedCache, ProcessState
from airflow_provider_querytasks.common.transport.ratelimit import RateLimiterRegistry
from airflow_provider_querytasks.common.transport.tokens import (
    AccessToken,
    SharedTokenStore,
    StoredTokens,
    TokenCache,
)

from ...helpers import FakeClock


def test_an_entry_unused_for_longer_than_its_ttl_is_dropped() -> None:
    clock = FakeClock()
    cache: BoundedCache[str, int] = BoundedCache("test", ttl=10.0, max_size=100, clock=clock)
    cache["idle"] = 1
    cache["used"] = 2
    clock.now += 8
    assert cache.get("used") == 2  # a read is a use: its 10 s start again
    clock.now += 8
    assert cache.get("idle") is None and "idle" not in cache
    assert cache.get("used") == 2
    clock.now += 10.5
    assert len(cache) == 0 and cache.keys() == []


def test_a_cache_over_its_max_size_drops_the_least_recently_used() -> None:
    clock = FakeClock()
    cache: BoundedCache[str, int] = BoundedCache("test", ttl=60.0, max_size=3, clock=clock)
    for n, key in enumerate("abc"):
        cache[key] = n
        clock.now += 1
    assert cache["a"] == 0  # "b" is now the least recently used
    cache["d"] = 3
    assert sorted(cache.keys()) == ["a", "c", "d"]
    assert cache.setdefault("e", lambda: 4) == 4
    assert sorted(cache.keys()) == ["a", "d", "e"]


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl must be > 0 and max_size >= 1"):
        BoundedCache("test", ttl=0.0, max_size=1)


def test_token_and_rate_caches_of_unused_accounts_expire() -> None:
    clock = FakeClock()
    state = ProcessState(clock=clock)
    registry = RateLimiterRegistry(state=state)
    bucket = registry.bucket("fake", "account", "op", 1.0, 1.0)
    assert registry.bucket("fake", "account", "op", 1.0, 1.0) is bucket
    clock.now += state.rate_buckets.ttl + 1
    assert registry.bucket("fake", "account", "op", 1.0, 1.0) is not bucket
    state.tokens["credential"] = AccessToken("process-state-test-token", None)
    clock.now += state.tokens.ttl + 1
    assert state.tokens.get("credential") is None


def _fill(state: ProcessState) -> None:
    """Put one entry in every cache."""
    record = StoredTokens(
        lineage="l",
        credential="c",
        refresh_token="r",
        access_token=None,
        expires_at=None,
        issued_at=None,
        updated_at=1.0,
    )
    state.written_tokens["store"] = record
    state.unsaved_tokens["store"] = (record, "old")
    state.tokens["credential"] = AccessToken("process-state-test-token", None)
    state.rejected_tokens["credential"] = ["digest"]
    state.token_locks["credential"] = object()
    state.async_token_locks[("credential", 1)] = object()
    RateLimiterRegistry(state=state).bucket("fake", "account", "op", 1.0, 1.0)
    state.shared_settings[(object, "conn")] = (object(), None, 0.0)
    state.settings_locks[(object, "conn", 1)] = object()
    state.shared_async_clients[(object, "conn", None, (1.0, 1.0))] = (object(), object())
    state.refused_accounts[("queue", "query", "theirs", "mine")] = True


def test_reset_clears_every_cache() -> None:
    from airflow_provider_querytasks.common.transport.process_state import process_state

    _fill(process_state)
    store = SharedTokenStore("store", "test", None)  # the store writes to the same cache
    store.write(
        StoredTokens(
            lineage="l",
            credential="c",
            refresh_token="r2",
            access_token=None,
            expires_at=None,
            issued_at=None,
            updated_at=2.0,
        ),
        "r",
    )
    assert store.read() is not None and store.read().refresh_token == "r2"  # type: ignore[union-attr]
    assert all(len(cache) == 1 for cache in process_state.caches()), process_state.caches()
    assert len(process_state.caches()) == 11

    async def per_loop_state() -> None:
        shared_client_session()
        process_state.session_leases[asyncio.get_running_loop()] = 1
        process_state.queue_readers[asyncio.get_running_loop()] = {}
        assert len(process_state.client_sessions) == 1
        session = process_state.client_sessions[asyncio.get_running_loop()]
        process_state.reset()
        await session.close()

    asyncio.run(per_loop_state())
    assert [cache.name for cache in process_state.caches() if len(cache)] == []
    assert not process_state.client_sessions and not process_state.session_leases
    assert not process_state.queue_readers


def test_token_cache_clear_forgets_this_process_copies() -> None:
    state = ProcessState()
    _fill(state)
    TokenCache(state).clear()
    token_caches = ("tokens", "rejected_tokens", "written_tokens", "unsaved_tokens")
    assert [c.name for c in state.caches() if c.name in token_caches and len(c)] == []
