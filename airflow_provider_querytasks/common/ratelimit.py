"""Client-side rate limiting: token buckets shared by every hook and trigger in a process.

A bucket is keyed by (platform, account, operation), so 50 triggers polling one selling
partner's queries share that account's ``getQuery`` plan instead of each assuming it has the
whole plan. Callers *reserve* a slot (which may lie in the future) under a lock and then sleep
outside it, so the same bucket serves threads (hooks) and event loops (triggers).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` per second.

    :param rate: sustained requests per second.
    :param burst: bucket size (requests that may go at once after a quiet period).
    :param clock: monotonic clock (for tests).
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token now or in the future; return the seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.rate

    def acquire(self) -> float:
        """Block the thread until a token is available; return the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)
        return delay

    async def acquire_async(self) -> float:
        """Suspend the coroutine until a token is available; return the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        return delay


class RateLimiterRegistry:
    """Buckets by (platform, account, operation), created on first use.

    :param safety: fraction of the published rate the client uses, leaving room for clock
        differences between client and server (requests arrive a little bunched).
    """

    def __init__(self, safety: float = 0.9) -> None:
        self.safety = safety
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, platform: str, account: str, operation: str, rate: float, burst: float) -> TokenBucket:
        key = (platform, account, operation)
        with self._lock:
            found = self._buckets.get(key)
            if found is None:
                found = TokenBucket(rate * self.safety, max(1.0, burst * self.safety))
                self._buckets[key] = found
            return found

    def reset(self) -> None:
        """Forget every bucket (tests)."""
        with self._lock:
            self._buckets.clear()


#: The process-wide registry (one per triggerer or worker process).
rate_limiters = RateLimiterRegistry()
