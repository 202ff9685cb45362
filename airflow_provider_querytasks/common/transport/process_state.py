"""What one worker or triggerer process keeps between calls, in one place with bounds.

A triggerer runs for weeks and sees connections and accounts come and go: every cache here
forgets entries that were not used for a while, and holds at most a fixed number of them
(the least recently used go first). ``process_state.reset()`` empties everything (tests).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio

    import aiohttp

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]

_MISSING: Any = object()

if TYPE_CHECKING:
    PerLoop = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, V]


class BoundedCache(Generic[K, V]):
    """A thread-safe mapping whose entries expire ``ttl`` seconds after their last use, and
    which keeps at most ``max_size`` entries (least recently used dropped first).

    Reads and writes both count as use.

    :param name: what the cache holds (for ``repr`` and tests).
    :param ttl: seconds an unused entry is kept.
    :param max_size: entries kept at most.
    :param clock: monotonic seconds (tests pass a fake clock).
    """

    def __init__(self, name: str, *, ttl: float, max_size: int, clock: Clock = time.monotonic) -> None:
        if ttl <= 0 or max_size < 1:
            raise ValueError(f"BoundedCache {name!r}: ttl must be > 0 and max_size >= 1")
        self.name = name
        self.ttl = ttl
        self.max_size = max_size
        self.clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BoundedCache({self.name!r}, ttl={self.ttl}, max_size={self.max_size}, size={len(self)})"

    def _prune(self, now: float) -> None:
        # Ordered by last use: the expired entries are at the front.
        while self._entries:
            _, (_, used) = next(iter(self._entries.items()))
            if now - used <= self.ttl:
                break
            self._entries.popitem(last=False)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def _touch(self, key: K, now: float) -> V:
        value = self._entries[key][0]
        self._entries[key] = (value, now)
        self._entries.move_to_end(key)
        return value

    def get(self, key: K, default: V | None = None) -> V | None:
        """The entry (and mark it used), or ``default`` when absent or expired."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            if key not in self._entries:
                return default
            return self._touch(key, now)

    def __getitem__(self, key: K) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[return-value]

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            now = self.clock()
            self._entries[key] = (value, now)
            self._entries.move_to_end(key)
            self._prune(now)

    def setdefault(self, key: K, factory: Callable[[], V]) -> V:
        """The entry, created with ``factory()`` when absent or expired (atomically)."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            if key in self._entries:
                return self._touch(key, now)
            value = factory()
            self._entries[key] = (value, now)
            self._prune(now)
            return value

    def pop(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
        return default if entry is None else entry[0]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            self._prune(self.clock())
            return key in self._entries

    def keys(self) -> list[K]:
        """The live keys (a copy: the cache may change while the caller iterates)."""
        with self._lock:
            self._prune(self.clock())
            return list(self._entries)

    def items(self) -> list[tuple[K, V]]:
        """The live entries (a copy), without marking them used."""
        with self._lock:
            self._prune(self.clock())
            return [(key, value) for key, (value, _) in self._entries.items()]

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def __len__(self) -> int:
        with self._lock:
            self._prune(self.clock())
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class ProcessState:
    """Every process-wide cache of the provider, each bounded, with one :meth:`reset`.

    ============================  ===========================================  ========  ========
    cache                         holds (key)                                  idle TTL  max size
    ============================  ===========================================  ========  ========
    ``tokens``                    access token (credential)                    1 h       1,024
    ``rejected_tokens``           digests of refused tokens (credential)       1 h       1,024
    ``token_locks``               single-flight thread lock (credential)       1 h       1,024
    ``async_token_locks``         single-flight asyncio lock (credential,      1 h       4,096
                                  event loop)
    ``written_tokens``            rotated tokens this process wrote (store)    24 h      1,024
    ``unsaved_tokens``            rotated tokens the store refused (store)     24 h      1,024
    ``rate_buckets``              token bucket (platform, account, operation)  1 h       4,096
    ``shared_settings``           a connection read by a trigger (hook class,  10 min    1,024
                                  conn id); reused for 60 s after the read
    ``settings_locks``            single-flight asyncio lock of a connection   10 min    4,096
                                  read (hook class, conn id, event loop)
    ``shared_async_clients``      async API client (hook class, conn id,       10 min    1,024
                                  retry, timeout)
    ============================  ===========================================  ========  ========

    Rotated tokens are kept a day: when the shared store refused a write, this process holds
    the only valid refresh token. A rate bucket idle for an hour has refilled; a new one starts
    from the published plan again. Per-event-loop state (the shared ``aiohttp`` session, its
    lease count, the notification queue readers) is held weakly by its loop, so it goes with the loop.

    :param clock: monotonic seconds for every cache (tests pass a fake clock).
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        def cache(name: str, ttl: float, max_size: int) -> BoundedCache[Any, Any]:
            return BoundedCache(name, ttl=ttl, max_size=max_size, clock=clock)

        hour, day = 3600.0, 86400.0
        self.tokens = cache("tokens", hour, 1024)
        self.rejected_tokens = cache("rejected_tokens", hour, 1024)
        self.token_locks = cache("token_locks", hour, 1024)
        self.async_token_locks = cache("async_token_locks", hour, 4096)
        self.written_tokens = cache("written_tokens", day, 1024)
        self.unsaved_tokens = cache("unsaved_tokens", day, 1024)
        self.rate_buckets = cache("rate_buckets", hour, 4096)
        self.shared_settings = cache("shared_settings", 600.0, 1024)
        self.settings_locks = cache("settings_locks", 600.0, 4096)
        self.shared_async_clients = cache("shared_async_clients", 600.0, 1024)
        #: Notifications refused for their account, already warned about (one warning each).
        self.refused_accounts = cache("refused_accounts", day, 4096)
        #: Per event loop: the shared ``aiohttp`` session, its lease count, the notification queue readers.
        self.client_sessions: PerLoop[aiohttp.ClientSession] = weakref.WeakKeyDictionary()
        self.session_leases: PerLoop[int] = weakref.WeakKeyDictionary()
        self.queue_readers: PerLoop[dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
        #: Per event loop: the ``coalesce.AccountPoller`` of each account (hook class, poller key).
        self.account_pollers: PerLoop[dict[Hashable, Any]] = weakref.WeakKeyDictionary()
        #: ``[querytasks] coalesce_polls``, read once per process (``None``: not read yet).
        self.coalesce_polls: bool | None = None

    def caches(self) -> list[BoundedCache[Any, Any]]:
        """Every bounded cache."""
        return [value for value in vars(self).values() if isinstance(value, BoundedCache)]

    def reset(self) -> None:
        """Forget everything this process learnt (tests; a fresh process starts so)."""
        for cache in self.caches():
            cache.clear()
        self.client_sessions.clear()
        self.session_leases.clear()
        self.queue_readers.clear()
        self.account_pollers.clear()
        self.coalesce_polls = None


#: The state of this process (one per worker or triggerer process).
process_state = ProcessState()
