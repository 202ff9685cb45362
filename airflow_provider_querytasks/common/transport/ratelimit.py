"""Client-side rate limiting: per-account buckets that adapt to what the platform answers.

A bucket is keyed by (platform, account, operation), so 50 triggers polling one selling
partner's queries share that account's ``getQuery`` plan instead of each assuming it has the
whole plan. Callers take a place in the bucket's queue under a lock and sleep outside it, so the
same bucket serves threads (hooks) and event loops (triggers).

A process does not know how many other processes (triggerers, workers) spend the same account's
plan, and a platform's plan is one budget for all of them. So the bucket is *adaptive*, after
the AWS SDKs' "adaptive" retry mode (botocore ``retries/adaptive.py``: a CUBIC rate controller
over a token bucket): the published plan is only the ceiling; an HTTP 429 cuts the rate, which
then grows back along a CUBIC curve, flat near the rate where the last 429 happened. Where it
differs from botocore (so that several processes sharing one account's plan each meet about
one 429 to learn their share; the Benchmarks page has the figures):

- A new bucket keeps back the part of the burst its plan refills within seconds (a getQuery
  bucket starts with a tenth of it, and at a third of its rate, probing upwards like TCP's slow
  start), so N processes started together (a triggerer restart, HA triggerers) do not spend N
  full bursts at once, nor overshoot the plan N-fold; and it paces its requests at random around its
  rate, so that every process sharing a plan meets the 429s, not only those pacing unluckily.
- A 429 cuts the rate to at most this process's *share* of what the platform admitted since the
  last 429: when a 429 comes, the platform's bucket is empty, so between two 429s it admitted
  exactly ``rate x elapsed`` (plus its burst before the first one); the fraction of that sent by
  this process is what it may keep sending. CUBIC's fixed cut (x0.7) needs several 429s per
  process to reach a third of the plan when three processes share it; the share gets there in
  one.

Callers see a :class:`RateBudget`, the few methods they use. :class:`AdaptiveTokenBucket` is the
one production uses; :class:`StaticTokenBucket` (``RateLimiterRegistry(adaptive=False)``) is the
fixed-rate baseline that tests and benchmarks compare it with.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from airflow_provider_querytasks.common.api.calls import PlatformApi
from airflow_provider_querytasks.common.transport.process_state import (
    BoundedCache,
    ProcessState,
    process_state,
)


class RateBudget(Protocol):
    """What a caller of a bucket uses: :class:`AdaptiveTokenBucket` (production) and
    :class:`StaticTokenBucket` (the static baseline of tests and benchmarks) both are one."""

    def acquire(self) -> float:
        """Block the thread until a token is available; return the monotonic time it was granted."""

    async def acquire_async(self) -> float:
        """Suspend the coroutine until a token is available; return the time it was granted."""

    def record_answer(self, granted_at: float, throttled: bool, limit: float | None = None) -> None:
        """What the platform answered to a request sent at ``granted_at``: ``throttled`` for a
        429; ``limit`` the rate it says it applies (``None``: it did not say)."""

    def rate_now(self) -> float:
        """The rate allowed now (requests per second)."""

    def idle_for(self) -> float:
        """Seconds since the last token was granted (``inf`` before the first)."""

    def spare(self, keep: float = 0.0) -> float:
        """Tokens free now beyond ``keep`` (a fraction of the bucket's size): what optional
        calls may spend at once, without waiting (0 while anybody waits for a token).

        A call that must not wait checks this before it goes (calls of one event loop between
        the check and their turn cannot take its token: nothing else runs in between).
        """

    def until_spare(self, keep: float = 0.0, tokens: float = 1.0) -> float:
        """Seconds until :meth:`spare` holds ``tokens`` at today's rate (0: it does now)."""


class StaticTokenBucket:
    """A static token bucket: ``burst`` tokens, refilled at ``rate`` per second; it ignores
    what the platform answers (the baseline the adaptive bucket is measured against).

    :param rate: sustained requests per second.
    :param burst: bucket size (requests that may go at once after a quiet period).
    :param clock: monotonic clock (for tests).
    :param sleep: how a thread waits for its turn, and ``async_sleep`` a coroutine (for tests:
        a clock that jumps over the waits).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()
        #: When the last token was granted (monotonic; -inf before the first).
        self.last_grant = float("-inf")

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def _reserve(self) -> float:
        """Take one token now or in the future; return the seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1.0
            delay = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
            self.last_grant = now + delay
            return delay

    def acquire(self) -> float:
        """Block the thread until a token is available; return the monotonic time it was granted."""
        delay = self._reserve()
        if delay > 0:
            self._sleep(delay)
        return self._clock()

    async def acquire_async(self) -> float:
        """Suspend the coroutine until a token is available; return the time it was granted."""
        delay = self._reserve()
        if delay > 0:
            await self._async_sleep(delay)
        return self._clock()

    def record_answer(self, granted_at: float, throttled: bool, limit: float | None = None) -> None:
        """Ignored: a static bucket keeps its rate whatever the platform answers."""

    def rate_now(self) -> float:
        """The rate allowed now: always :attr:`rate`."""
        return self.rate

    def idle_for(self) -> float:
        """Seconds since the last token was granted (``inf`` before the first)."""
        return self._clock() - self.last_grant

    def spare(self, keep: float = 0.0) -> float:
        """Tokens free now beyond ``keep`` (a fraction of the bucket's size)."""
        with self._lock:
            self._refill(self._clock())
            return max(0.0, self._tokens - keep * self.burst)

    def until_spare(self, keep: float = 0.0, tokens: float = 1.0) -> float:
        """Seconds until :meth:`spare` holds ``tokens`` (0: it does now)."""
        return max(0.0, tokens - self.spare(keep)) / self.rate


class AdaptiveTokenBucket:
    """A token bucket whose rate follows the platform's 429s (see the module docstring).

    Waiters take a numbered place in a queue and go when the bucket's cumulative credit reaches
    their place; they re-check at least every :attr:`MAX_NAP` seconds, so a rate that changes
    while they wait (cut by a 429, or grown back) applies to them at once, in their order.

    :param rate: the ceiling: sustained requests per second (the published plan, with margin).
    :param burst: the ceiling of the bucket size.
    :param server_rate: the platform's own rate (the plan without margin): what it admits.
    :param server_burst: the platform's own burst.
    :param clock: monotonic clock (for tests).
    :param jitter: source of uniform [0, 1) numbers (for tests).
    :param sleep: how a thread waits (for tests), and ``async_sleep`` a coroutine.
    """

    #: A new bucket holds back the part of the burst its plan refills within START_SECONDS,
    #: keeping at least START_BURST of it (its rate starts at the ceiling): a getQuery bucket
    #: (2/s, burst 15) starts with a tenth, as N processes starting together would otherwise
    #: spend N bursts at once; a createQuery bucket (1 a minute, burst 15) starts full, since
    #: holding it back would delay a task's submissions by minutes (a 429 then makes its retry
    #: wait for the refill, below).
    START_BURST = 0.1
    START_SECONDS = 10.0
    #: A new bucket whose plan refills its whole burst within START_SECONDS (getQuery: 2/s,
    #: burst 15) also starts at this fraction of its rate and probes upwards along CUBIC's
    #: convex branch (slowly at first, at the ceiling after about a minute), as TCP's slow start
    #: does: N processes starting together (a triggerer restart, HA triggerers) then cross the
    #: plan gently, and each meets about one 429 to learn its share instead of several.
    START_RATE = 1 / 3
    #: CUBIC's cut on a 429 (botocore's), and its scale as a fraction of the ceiling per second
    #: cubed: after a cut by BETA the rate is back after about 45 s; near a share it stays
    #: within 5 % for 25 s and within 15 % for 35 s, so processes that found their shares
    #: probe beyond them slowly (faster probing costs a round of 429s a minute).
    BETA = 0.7
    SCALE = 3e-6
    #: A cut by share keeps this fraction of it (the share is estimated, often on the high side).
    SHARE_MARGIN = 0.9
    #: Fewer requests than this since the window began estimate no share (a one-off caller).
    MIN_SHARE_SAMPLES = 4
    #: The lowest rate, as a fraction of the ceiling: the bucket never stops.
    FLOOR = 1 / 32
    #: Longest sleep before a waiter checks the bucket again (rates change while it waits).
    MAX_NAP = 1.0
    #: The most a reported rate (``x-amzn-RateLimit-Limit``) may raise the ceiling, as a multiple
    #: of the published plan: an account may be granted more than the default plan, but a
    #: garbled or test header must not unleash unbounded calls (429s still cut the rate).
    MAX_RAISE = 10.0

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        server_rate: float | None = None,
        server_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        #: The ceiling of the bucket size (a reported rate may lower it).
        self.burst = float(burst)
        self.ceiling = rate
        self.server_rate = server_rate or rate
        self.server_burst = server_burst or burst
        #: The published plan the bucket was made for (what a reported rate is bounded by).
        self.plan_rate = self.server_rate
        self.plan_burst = float(burst)
        self._clock = clock
        self._jitter = jitter
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._lock = threading.Lock()
        #: When the last token was granted (monotonic; -inf before the first).
        self.last_grant = float("-inf")
        now = clock()
        self._updated = now
        self._tokens = max(1.0, burst * self.START_BURST, burst - rate * self.START_SECONDS)
        self._issued = 0
        #: CUBIC state: the rate it returns to, when the last cut happened, the cut rate.
        start = rate * self.START_RATE if rate * self.START_SECONDS >= burst else rate
        self._w_max = start
        self._cut_at = now
        self._cut_rate = start
        self._k = 0.0
        #: Sent since the window began (the bucket's creation, then each cut), and what the
        #: platform could admit beyond its rate in that window (its burst, then nothing).
        self._window_start = now
        self._window_sent = 0
        self._window_extra = self.server_burst
        #: Statistics (logs, tests, benchmarks).
        self.throttles = 0
        self.cuts = 0

    # -- the rate -------------------------------------------------------------------------------
    def _zero_point(self) -> float:
        return float(((self._w_max - self._cut_rate) / (self.SCALE * self.ceiling)) ** (1 / 3))

    def current_rate(self, now: float | None = None) -> float:
        """The rate allowed now: CUBIC since the last cut, within [floor, ceiling]."""
        now = self._clock() if now is None else now
        grown = self.SCALE * self.ceiling * (now - self._cut_at - self._k) ** 3 + self._w_max
        return min(self.ceiling, max(self.ceiling * self.FLOOR, self._cut_rate, grown))

    def _capacity(self, rate: float) -> float:
        """Bucket size at ``rate``: the burst scaled like the rate (a cut rate gets a cut burst)."""
        return max(1.0, self.burst * rate / self.ceiling)

    def rate_now(self) -> float:
        """The rate allowed now (see :meth:`current_rate`)."""
        return self.current_rate()

    def idle_for(self) -> float:
        """Seconds since the last token was granted (``inf`` before the first)."""
        return self._clock() - self.last_grant

    def spare(self, keep: float = 0.0) -> float:
        """Tokens free now beyond ``keep`` (a fraction of the bucket's size now, which shrinks
        with a cut rate): what optional calls may spend at once, without waiting (0 while
        anybody waits for a token)."""
        with self._lock:
            now = self._clock()
            rate = self._refill(now)
            return max(0.0, self._tokens - keep * self._capacity(rate))

    def _refill(self, now: float) -> float:
        rate = self.current_rate(now)
        # (a cut burst keeps no more than its new size)
        self._tokens = min(self._capacity(rate), self._tokens + (now - self._updated) * rate)
        self._updated = now
        return rate

    # -- waiting --------------------------------------------------------------------------------
    def _enqueue(self) -> int:
        with self._lock:
            self._refill(self._clock())
            place = self._issued
            self._issued += 1
            self._tokens -= 1.0  # credit (tokens + issued) is unchanged: a place, not a spend
            return place

    def _wait_for(self, place: int) -> float:
        """Seconds until ``place`` may go (0: now); counts it as sent when it may."""
        with self._lock:
            now = self._clock()
            rate = self._refill(now)
            missing = place + 1 - (self._tokens + self._issued)
            if missing <= 1e-9:
                self._window_sent += 1
                self.last_grant = now
                # Paced at random (each request costs 0.5 to 1.5 tokens, 1 on average): a
                # process pacing exactly at its rate, below the platform's, would never meet
                # a 429 while its peers met them all, and never learn it has to share.
                self._tokens -= self._jitter() - 0.5
                return 0.0
            return min(missing / rate, self.MAX_NAP)

    def _leave(self) -> None:
        """A waiter gave up before its turn: everybody behind it moves up one place."""
        with self._lock:
            self._tokens += 1.0

    def until_spare(self, keep: float = 0.0, tokens: float = 1.0) -> float:
        """Seconds until :meth:`spare` holds ``tokens`` at today's rate (0: it does now)."""
        return max(0.0, tokens - self.spare(keep)) / self.current_rate()

    def acquire(self) -> float:
        """Block the thread until its place in the queue comes; return when it was granted."""
        place = self._enqueue()
        try:
            while (delay := self._wait_for(place)) > 0:
                self._sleep(delay)
        except BaseException:
            self._leave()
            raise
        return self._clock()

    async def acquire_async(self) -> float:
        """Suspend the coroutine until its place in the queue comes; return when it was granted."""
        place = self._enqueue()
        try:
            while (delay := self._wait_for(place)) > 0:
                await self._async_sleep(delay)
        except BaseException:  # cancelled while queued (a trigger moved or killed)
            self._leave()
            raise
        return self._clock()

    # -- feedback -------------------------------------------------------------------------------
    def record_answer(self, granted_at: float, throttled: bool, limit: float | None = None) -> None:
        """Adapt to an answer: ``throttled`` for a 429; ``limit``: the rate the platform says it
        applies (``x-amzn-RateLimit-Limit``), which moves the ceiling to it (with the same
        safety margin): lower, or higher up to :attr:`MAX_RAISE` times the published plan (the
        burst is never raised above the plan's: no header reports it)."""
        with self._lock:
            now = self._clock()
            if limit is not None and limit > 0:
                limit = min(limit, self.plan_rate * self.MAX_RAISE)
                if abs(limit - self.server_rate) > 1e-9 * self.server_rate:
                    self._move_ceiling(limit, now)
            if not throttled:
                return
            self.throttles += 1
            if granted_at < self._cut_at:
                return  # sent before the last cut, at the old rate: that cut answered it already
            if self.cuts and self._window_sent < self.MIN_SHARE_SAMPLES:
                # Too soon after the last cut to tell it was too small: the others sharing the
                # plan may not have cut yet. Keep the rate and the pace (whoever has not cut
                # then gets the next 429s; pausing would leave it the room), spend no burst.
                self._refill(now)
                self._tokens = min(self._tokens, 0.0) - (self._jitter() if self._one_off() else 0.0)
                return
            self._cut(now)

    def _one_off(self) -> bool:
        """Whether this bucket has served too few requests to be anything but a one-off caller."""
        return self._issued <= self.MIN_SHARE_SAMPLES

    def _move_ceiling(self, limit: float, now: float) -> None:
        factor = limit / self.server_rate
        self._refill(now)
        self.server_rate = limit
        self.ceiling *= factor
        self.burst = max(1.0, min(self.plan_burst, self.burst * factor))
        self._w_max = min(self._w_max, self.ceiling)
        self._cut_rate = min(self._cut_rate, self.ceiling)
        self._k = self._zero_point()

    def _cut(self, now: float) -> None:
        rate = self._refill(now)
        cut = self.BETA * rate
        w_max = rate
        if self._window_sent >= self.MIN_SHARE_SAMPLES:
            # What the platform admitted in the window: its rate, plus its burst in the first
            # window (assumed full when this process began), since it was empty at the last 429.
            admitted = self.server_rate * (now - self._window_start) + self._window_extra
            share = self.ceiling * min(1.0, self._window_sent / admitted)
            cut = min(cut, self.SHARE_MARGIN * share)
            # CUBIC returns towards the rate where congestion began: the share when lower.
            w_max = min(rate, share)
            spread = 0.0
        else:
            # Too few requests to estimate a share (a worker submitting once): the next request
            # of a one-off caller goes at a random moment of the next two intervals, out of
            # step with the other workers'.
            spread = self._jitter() if self._one_off() else 0.0
        self._cut_rate = max(self.ceiling * self.FLOOR, cut)
        self._w_max = max(self._cut_rate, w_max)
        self._cut_at = now
        self._k = self._zero_point()
        # The platform's bucket is empty now: no burst left.
        self._tokens = min(self._tokens, 0.0) - spread
        self._window_start, self._window_sent, self._window_extra = now, 0, 0.0
        self.cuts += 1


class RateLimiterRegistry:
    """Buckets by (platform, account, operation), created on first use.

    :param safety: fraction of the published rate the client uses, leaving room for clock
        differences between client and server (requests arrive a little bunched).
    :param adaptive: adaptive buckets (default); ``False``: static buckets of the published plan.
    :param state: where the buckets are kept (bounded; see :class:`ProcessState`); default: its own.
    :param clock: the buckets' monotonic clock, ``sleep`` and ``async_sleep`` how they wait (for
        tests: a clock that jumps over the waits; buckets made before a change keep theirs).
    """

    def __init__(
        self,
        safety: float = 0.9,
        adaptive: bool = True,
        *,
        state: ProcessState | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.safety = safety
        self.adaptive = adaptive
        self.clock = clock
        self.sleep = sleep
        self.async_sleep = async_sleep
        buckets: BoundedCache[tuple[str, str, str], RateBudget] = (state or ProcessState()).rate_buckets
        self._buckets = buckets
        self._lock = threading.Lock()

    def bucket(self, platform: str, account: str, operation: str, rate: float, burst: float) -> RateBudget:
        """The process's bucket of one account's operation, made on first use at the plan's rate and burst
        times ``safety``.
        """
        key = (platform, account, operation)
        with self._lock:
            found = self._buckets.get(key)
            if found is None:
                limited_rate, limited_burst = rate * self.safety, max(1.0, burst * self.safety)
                if self.adaptive:
                    found = AdaptiveTokenBucket(
                        limited_rate,
                        limited_burst,
                        server_rate=rate,
                        server_burst=float(burst),
                        clock=self.clock,
                        sleep=self.sleep,
                        async_sleep=self.async_sleep,
                    )
                else:
                    found = StaticTokenBucket(
                        limited_rate,
                        limited_burst,
                        self.clock,
                        sleep=self.sleep,
                        async_sleep=self.async_sleep,
                    )
                self._buckets[key] = found
            return found

    def budget(self, api: PlatformApi, operation: str, authenticated: bool = True) -> RateBudget | None:
        """The bucket that paces ``operation`` of ``api``'s account: its own usage plan when the
        platform publishes one, else the account's shared plan for authenticated calls; ``None``
        when nothing limits it."""
        plan = api.rate_limits.get(operation)
        if plan is not None:
            return self.bucket(api.platform, api.account, operation, *plan)
        if api.shared_rate_limit is not None and authenticated:
            return self.bucket(api.platform, api.account, "*", *api.shared_rate_limit)
        return None


#: The process-wide registry (one per triggerer or worker process).
rate_limiters = RateLimiterRegistry(state=process_state)
