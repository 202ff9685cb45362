"""Token buckets and their registry (common/transport/ratelimit.py): the static bucket, and the
adaptive one that shares a platform's rate limit with other processes."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from airflow_provider_querytasks.common.transport.ratelimit import (
    AdaptiveTokenBucket,
    RateLimiterRegistry,
    StaticTokenBucket,
)

from ...helpers import FakeClock


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = StaticTokenBucket(rate=2.0, burst=3.0, clock=clock)
    waits = [bucket._reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.5)
    assert waits[4] == pytest.approx(1.0)


def test_registry_shares_a_bucket_per_platform_account_and_operation() -> None:
    registry = RateLimiterRegistry(safety=1.0)
    a = registry.bucket("dk", "acct1", "getQuery", 2, 15)
    assert registry.bucket("dk", "acct1", "getQuery", 2, 15) is a
    assert registry.bucket("dk", "acct2", "getQuery", 2, 15) is not a
    assert registry.bucket("dk", "acct1", "createQuery", 2, 15) is not a


async def test_async_bucket_spaces_concurrent_callers() -> None:
    clock = FakeClock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the time stands still: every caller comes at once
        waits.append(seconds)
        await asyncio.sleep(0)

    bucket = StaticTokenBucket(rate=20.0, burst=2.0, clock=clock, async_sleep=sleep)
    await asyncio.gather(*(bucket.acquire_async() for _ in range(6)))
    # 2 at once, then 4 more at 20/s: the last one waits 0.2 s.
    assert sorted(waits) == pytest.approx([0.05, 0.1, 0.15, 0.2])


# -- the adaptive bucket (rate limits shared with other processes) ------------------------------
def adaptive(clock: FakeClock, rate: float = 1.8, burst: float = 13.5) -> AdaptiveTokenBucket:
    return AdaptiveTokenBucket(
        rate, burst, server_rate=rate / 0.9, server_burst=burst / 0.9, clock=clock, jitter=lambda: 0.5
    )


def take(bucket: AdaptiveTokenBucket, clock: FakeClock) -> float:
    """Acquire one token on the fake clock; return when it was granted."""
    place = bucket._enqueue()
    while (delay := bucket._wait_for(place)) > 0:
        clock.sleep(delay)
    return clock()


def test_a_new_fast_plan_bucket_starts_with_a_tenth_of_its_burst_and_a_third_of_its_rate() -> None:
    clock = FakeClock()
    bucket = adaptive(clock)  # getQuery: 2/s, burst 15 (90% of it)
    start = clock()
    granted = [take(bucket, clock) - start for _ in range(5)]
    assert granted[0] == 0.0 and granted[1] > 0  # 1.35 tokens: one at once, not 13
    gaps = [b - a for a, b in itertools.pairwise(granted[1:])]
    assert gaps == pytest.approx([1 / 0.6] * 3, rel=0.02)  # a third of the ceiling's rate...
    clock.sleep(20)
    assert bucket.current_rate() < 0.7  # ... probing upwards slowly at first ...
    clock.sleep(60)
    assert bucket.current_rate() == pytest.approx(1.8)  # ... at the ceiling after about a minute
    slow = adaptive(clock, rate=0.0167 * 0.9, burst=15 * 0.9)  # createQuery: full rate at once
    assert slow.current_rate() == pytest.approx(0.0167 * 0.9)


def test_a_429_cuts_the_rate_to_this_process_share_once_and_it_grows_back() -> None:
    clock = FakeClock()
    bucket = adaptive(clock)
    sent = [take(bucket, clock) for _ in range(10)]  # about 5 s at 1.8/s
    in_flight = sent[-1]
    bucket.record_answer(sent[-2], throttled=True)
    # The platform admitted 2/s x elapsed + its burst 15; this process sent 10 of them.
    share = 1.8 * 10 / (2.0 * (clock() - 1000.0) + 15.0)
    assert bucket.current_rate() == pytest.approx(AdaptiveTokenBucket.SHARE_MARGIN * share)
    assert bucket.cuts == 1
    bucket.record_answer(in_flight - 1e-9, throttled=True)  # sent before the cut: no second cut
    assert bucket.cuts == 1 and bucket.throttles == 2
    cut = bucket.current_rate()
    clock.sleep(10)
    assert cut <= bucket.current_rate() < 1.8  # stays near the share for a while...
    clock.sleep(300)
    assert bucket.current_rate() == pytest.approx(1.8)  # ... and the ceiling comes back
    bucket.record_answer(clock(), throttled=False)
    assert bucket.cuts == 1


def test_a_second_429_right_after_a_cut_does_not_cut_again() -> None:
    clock = FakeClock()
    bucket = adaptive(clock)
    sent = [take(bucket, clock) for _ in range(10)]
    bucket.record_answer(sent[-1], throttled=True)
    rate = bucket.current_rate()
    again = take(bucket, clock)
    bucket.record_answer(again, throttled=True)  # others may not have cut yet
    assert bucket.cuts == 1 and bucket.current_rate() >= rate


def test_a_one_off_caller_waits_for_the_platforms_refill_after_a_429() -> None:
    # A worker process submitting one createQuery (1 per minute, burst 15) whose account's burst
    # was spent by other workers: its retry waits for a refill, not tenacity's 1-2 s.
    clock = FakeClock()
    bucket = adaptive(clock, rate=0.0167 * 0.9, burst=15 * 0.9)
    first = take(bucket, clock)
    bucket.record_answer(first, throttled=True)
    retry = take(bucket, clock)
    # The platform's bucket is empty: no token left here either, and the retry goes 1 to 2
    # intervals later (jitter 0.5 here), at a rate between the cut and the ceiling.
    ceiling = 0.0167 * 0.9
    assert 1.5 / ceiling <= retry - first <= 1.5 / (AdaptiveTokenBucket.BETA * ceiling)


def test_the_rate_limit_header_lowers_the_ceiling() -> None:
    clock = FakeClock()
    bucket = adaptive(clock)
    clock.sleep(120)  # past its start
    bucket.record_answer(clock(), throttled=False, limit=1.0)  # the platform applies 1 rps
    assert bucket.current_rate() == pytest.approx(0.9)
    bucket.record_answer(clock(), throttled=False, limit=5.0)  # more than published: raised again
    assert bucket.ceiling == pytest.approx(4.5)  # (tests/data_kiosk/test_readings.py: the bound)


def test_a_waiter_that_gives_up_lets_the_next_one_go_in_its_place() -> None:
    clock = FakeClock()
    bucket = adaptive(clock, rate=5.0, burst=1.0)
    clock.sleep(120)  # past its start, at the full rate
    take(bucket, clock)  # the only token
    bucket._enqueue()  # a waiter that will give up...
    behind = bucket._enqueue()
    assert bucket._wait_for(behind) == pytest.approx(0.4)
    bucket._leave()  # ... cancelled while queued
    assert bucket._wait_for(behind) == pytest.approx(0.2)


def test_registry_makes_adaptive_buckets_unless_told_otherwise() -> None:
    assert isinstance(RateLimiterRegistry().bucket("dk", "a", "getQuery", 2, 15), AdaptiveTokenBucket)
    static = RateLimiterRegistry(adaptive=False).bucket("dk", "a", "getQuery", 2, 15)
    assert type(static) is StaticTokenBucket


def test_spare_tokens_are_what_a_call_may_spend_now_without_waiting() -> None:
    clock = FakeClock()
    # getQueries: 0.0222 rps, burst 10 (90% of it): a new bucket starts (nearly) full.
    bucket = adaptive(clock, rate=0.0222 * 0.9, burst=10 * 0.9)
    assert bucket.idle_for() == float("inf")
    full = bucket.spare()
    assert 8 <= full <= 9
    assert bucket.spare(keep=1 / 3) == pytest.approx(full - 3)  # a third of the size kept back
    take(bucket, clock)
    assert bucket.idle_for() == 0.0 and bucket.spare() == pytest.approx(full - 1, abs=0.5)
    clock.sleep(45)
    assert bucket.idle_for() == 45.0
    queued = adaptive(clock, rate=1.0, burst=1.0)
    take(queued, clock)
    queued._enqueue()  # somebody waits for the next token: nothing is spare
    assert queued.spare() == 0.0
    static = StaticTokenBucket(2.0, 4.0, clock=clock)
    static._reserve()
    assert static.spare() == pytest.approx(3.0) and static.idle_for() == 0.0
    assert static.rate_now() == 2.0


def test_the_budget_of_an_operation_is_its_plan_else_the_accounts_shared_plan() -> None:
    from airflow_provider_querytasks.common.api.calls import PlatformApi

    class Api(PlatformApi):
        platform = "p"
        rate_limits = {"getQuery": (2.0, 15.0)}
        shared_rate_limit = (10.0, 20.0)

    class Unlimited(PlatformApi):
        platform = "u"

    registry = RateLimiterRegistry(adaptive=False)
    api = Api("https://api.example.test", account="a")
    own = registry.budget(api, "getQuery")
    assert own is registry.bucket("p", "a", "getQuery", 2.0, 15.0)
    shared = registry.budget(api, "createQuery")
    assert shared is registry.bucket("p", "a", "*", 10.0, 20.0) and shared is not own
    assert registry.budget(api, "token", authenticated=False) is None
    assert registry.budget(Unlimited("https://api.example.test", account="a"), "getQuery") is None
