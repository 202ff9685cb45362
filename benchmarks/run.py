"""Benchmarks: triggerer scale, polling economy, rate-limit fairness, download, imports, many triggerers,
a real Airflow triggerer.

``python benchmarks/run.py [--quick] [--only SECTIONS] [--waits N] [--fair-waits N]
[--download-mib M] [--download-large-mib M] [--multi-waits N] [--triggerers N] [--sqs-waits N]
[--real-waits N] [--real-accounts N] [--json PATH]`` (``benchmarks/run`` wraps it). Every figure is reported
beside a baseline measured in the same run, as a ratio: the machines are shared and noisy,
absolute numbers are not comparable between runs. Each measurement runs in a fresh subprocess
(clean RSS), against the emulators running in their own process (their CPU stays out of the
figures). Targets are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from real_triggerer import PHASES  # benchmarks/ (this script's folder); imports no Airflow

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process, bytes."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def emulators(count: int, low: float, high: float, *extra: str) -> Any:
    """Start benchmarks/emulators.py; yield its state (urls, connections, ids, durations), to
    which ``http_429`` (429 answers per emulator) is added once the emulators have stopped."""
    with tempfile.TemporaryDirectory() as folder:
        state_file = Path(folder) / "state.json"
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "emulators.py"),
                str(state_file),
                str(count),
                str(low),
                str(high),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not state_file.exists() or not state_file.stat().st_size:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator process did not start")
                time.sleep(0.1)
            time.sleep(0.2)
            state = json.loads(state_file.read_text())
            yield state
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)
        answered = state_file.with_name(f"{state_file.name}.answered")
        if answered.exists():
            state.update(json.loads(answered.read_text()))


def set_connection(conn_id: str, conn: dict[str, Any]) -> None:
    from airflow_provider_querytasks.testing import connection_env

    name, value = connection_env({**conn, "conn_id": conn_id})
    os.environ[name] = value


class LoopWatch:
    """Worst event-loop lag and peak RSS while the loop runs, and the cyclic GC's full
    collections meanwhile (each one stops the loop for as long as it takes)."""

    def __init__(self) -> None:
        self.worst_lag = 0.0
        self.peak_rss = rss()
        self.full_collections = 0
        self.worst_full_collection = 0.0
        self._collection_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._collection_started = time.perf_counter()
        else:
            self.full_collections += 1
            pause = time.perf_counter() - self._collection_started
            self.worst_full_collection = max(self.worst_full_collection, pause)

    async def run(self, stop: asyncio.Event) -> None:
        gc.callbacks.append(self._on_gc)
        try:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.05)
                self.worst_lag = max(self.worst_lag, time.perf_counter() - before - 0.05)
                self.peak_rss = max(self.peak_rss, rss())
        finally:
            gc.callbacks.remove(self._on_gc)


class PeakRss:
    """The highest RSS seen (sampled every 5 ms from a thread) while the block runs."""

    def __init__(self) -> None:
        self.value = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.value = max(self.value, rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.value = max(self.value, rss())


def preload(*platforms: str) -> None:
    """Import trigger modules before the emulators start: seeded queries' durations are running."""
    for platform in platforms:
        importlib.import_module(f"airflow_provider_querytasks.triggers.{platform}")


# -- 1. triggerer scale ------------------------------------------------------------------------
#: Poll schedules of benchmark 1: the operators' default (``poll_interval`` 60 s: polls 5 s apart
#: at first), and a stress schedule five times as frequent.
#: (Each runs in a process of its own, so that one's memory does not hide the other's.)
SCALE_SCHEDULES = {
    "default": {"initial": 5.0, "maximum": 60.0, "proportion": 0.1},
    "stress": {"initial": 1.0, "maximum": 5.0, "proportion": 0.1},
}


def triggerer_scale(waits: int, low: float, high: float, schedule_name: str) -> list[dict[str, Any]]:
    preload("shoplazza", "amazon_data_kiosk", "adobe_query_service")

    per_platform = max(1, waits // 3)
    schedule = SCALE_SCHEDULES[schedule_name]
    with emulators(per_platform, low, high) as state:
        row = asyncio.run(_triggerer_scale(state, per_platform, schedule))
    return [{"schedule": f"{schedule_name} ({schedule['initial']:g}-{schedule['maximum']:g} s)", **row}]


async def _triggerer_scale(
    state: dict[str, Any], per_platform: int, schedule: dict[str, float]
) -> dict[str, Any]:
    import aiohttp

    from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
    from airflow_provider_querytasks.common.transport.ratelimit import AdaptiveTokenBucket
    from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
    from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
    from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
    from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger
    from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger
    from airflow_provider_querytasks.triggers.shoplazza import ShoplazzaDataTaskTrigger

    # When each wait polled, so that the paced baseline makes the same GETs at the same times.
    poll_times: dict[str, list[float]] = {}
    originals = {h: h.aget_status for h in (ShoplazzaHook, DataKioskHook, AdobeQueryServiceHook)}
    for hook_class, original in originals.items():

        async def counted(self: Any, query_id: str, _original: Any = original) -> Any:
            poll_times.setdefault(query_id, []).append(time.perf_counter())
            return await _original(self, query_id)

        hook_class.aget_status = counted  # type: ignore[method-assign]

    # Ten waits per shop and per selling partner: each platform's rate limit is per account, and
    # this measures the triggerer's cost, not one account's budget (that is benchmark 3). Ten
    # waits 5 s apart are 2 getQuery calls/s, the plan's rate; a new process's getQuery buckets
    # start at a third of it and reach it after about a minute (the slow start), which would hold
    # back about one poll in seven of this one-minute run. Lifted, as in a triggerer that has run
    # for a minute; the buckets still pace every poll.
    AdaptiveTokenBucket.START_RATE = 1.0
    triggers: list[Any] = []
    for i, query_id in enumerate(state["ids"]["shoplazza"][:per_platform]):
        conn = dict(state["connections"]["shoplazza"], host=f"bench{i // 10}.myshoplaza.com")
        set_connection(f"bench_shop_{i // 10}", conn)
        triggers.append(ShoplazzaDataTaskTrigger(f"bench_shop_{i // 10}", query_id, poll_schedule=schedule))
    for i, query_id in enumerate(state["ids"]["data_kiosk"][:per_platform]):
        conn = state["connections"]["data_kiosk"]
        conn = dict(conn, extra=dict(conn["extra"], selling_partner_id=f"A{i // 10:08d}"))
        set_connection(f"bench_dk_{i // 10}", conn)
        triggers.append(DataKioskQueryTrigger(f"bench_dk_{i // 10}", query_id, poll_schedule=schedule))
    set_connection("bench_adobe", state["connections"]["adobe"])
    for query_id in state["ids"]["adobe"][:per_platform]:
        triggers.append(AdobeQueryTrigger("bench_adobe", query_id, poll_schedule=schedule))

    # Warm up as a running triggerer is: modules imported, HTTP stack loaded (one poll each).
    for warm in (triggers[0], triggers[per_platform], triggers[-1]):
        await warm.hook().aget_status(warm.query_id)
    poll_times.clear()
    # ... and each account's connection seen once: a connection's first sight costs a
    # secrets-masker update that recompiles one pattern of every secret seen so far (Airflow's
    # masker; quadratic in distinct secrets). Timed apart: it is set-up, not polling.
    one_per_connection = {t.conn_id: t for t in triggers}
    first_sight_cpu = cpu()
    for trigger in one_per_connection.values():
        await trigger.hook().aclient()
    first_sight_cpu = cpu() - first_sight_cpu

    async def first_event(trigger: Any) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "none"

    watch = LoopWatch()
    stop = asyncio.Event()
    monitor = asyncio.create_task(watch.run(stop))
    base_rss = rss()
    started_cpu, started = cpu(), time.perf_counter()
    statuses = await asyncio.gather(*(first_event(t) for t in triggers))
    trigger_cpu, wall = cpu() - started_cpu, time.perf_counter() - started
    for hook_class, original in originals.items():
        hook_class.aget_status = original  # type: ignore[method-assign]
    stop.set()
    await monitor
    await close_shared_client_session()
    total = sum(map(len, poll_times.values()))

    # Baselines against the same emulator: the same number of authenticated GETs.
    hook = AdobeQueryServiceHook("bench_adobe")
    query_ids = state["ids"]["adobe"]
    url = f"{state['urls']['adobe']['api']}/data/foundation/query/queries/"
    headers = hook.client.credential_headers(url + query_ids[0], "bench")
    limit = asyncio.Semaphore(200)

    async def get(session: aiohttp.ClientSession, query_id: str) -> None:
        async with limit, session.get(url + query_id, headers=headers) as answer:
            await answer.read()

    async def burst() -> float:
        before = cpu()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(get(session, query_ids[i % len(query_ids)]) for i in range(total)))
        return cpu() - before

    async def session_per_poll() -> float:
        before = cpu()

        async def one(i: int) -> None:
            async with aiohttp.ClientSession() as session:
                await get(session, query_ids[i % len(query_ids)])

        await asyncio.gather(*(one(i) for i in range(total)))
        return cpu() - before

    async def paced() -> float:
        """One bare GET loop per wait, each GET at the time its trigger polled: the floor.

        (The burst above amortises each event-loop wake-up over many answers; spread-out polls
        cannot, which is most of the difference between the two baselines.)
        """
        offsets = [[t - started for t in times] for times in poll_times.values()]
        before = cpu()
        async with aiohttp.ClientSession() as session:
            start = time.perf_counter()

            async def replay(i: int, wait_offsets: list[float]) -> None:
                for offset in wait_offsets:
                    await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
                    await get(session, query_ids[i % len(query_ids)])

            await asyncio.gather(*(replay(i, o) for i, o in enumerate(offsets)))
        return cpu() - before

    burst_cpu = await burst()
    fresh_cpu = await session_per_poll()
    paced_cpu = await paced()
    per_poll, per_get, per_fresh = trigger_cpu / total, paced_cpu / total, fresh_cpu / total
    return {
        "waits": len(triggers),
        "succeeded": statuses.count("success"),
        "polls": total,
        "wall_s": round(wall, 1),
        "cpu_ms_per_poll": round(per_poll * 1000, 3),
        "bare_get_cpu_ms": round(per_get * 1000, 3),
        "bare_get_burst_cpu_ms": round(burst_cpu / total * 1000, 3),
        "session_per_poll_cpu_ms": round(per_fresh * 1000, 3),
        "cpu_ratio_vs_bare": round(per_poll / per_get, 2),
        "cpu_ratio_vs_bare_burst": round(trigger_cpu / burst_cpu, 2),
        "session_per_poll_ratio_vs_bare": round(per_fresh / per_get, 2),
        "kib_per_wait": round((watch.peak_rss - base_rss) / 1024 / len(triggers), 1),
        "worst_loop_lag_ms": round(watch.worst_lag * 1000, 1),
        "full_gc_collections": watch.full_collections,
        "worst_full_gc_ms": round(watch.worst_full_collection * 1000, 1),
        "connections": len(one_per_connection),
        "connections_first_sight_cpu_s": round(first_sight_cpu, 2),
        "targets": "5000 waits; cpu ratio <= 1.5; <= 20 KiB/wait; lag < 100 ms",
    }


# -- 2. polling economy ------------------------------------------------------------------------
#: Benchmark 2: accounts per platform, waits per account, and the query durations (real time)
#: whose waits are measured. Time runs ECONOMY_SCALE times faster than real (the poll schedule,
#: the query durations and the coalescing gather window alike), so an hour's wait takes a minute;
#: the call counts do not depend on the scale (the schedule is proportional to elapsed time).
ECONOMY_ACCOUNTS = 4
ECONOMY_WAITS_PER_ACCOUNT = 20
ECONOMY_DURATIONS = (10.0, 300.0, 3600.0)
ECONOMY_SCALE = 30.0


def polling_economy(samples: int, quick: bool = False) -> list[dict[str, Any]]:
    """Status calls and lateness of deferred waits under the default schedule (``poll_interval``
    60 s), measured over HTTP: the same waits (several accounts of Shoplazza and Adobe, each its
    own emulator, in this process) with ``[querytasks] coalesce_polls`` off (every wait polls its
    own query) and on (one poller per account, list calls), counting the requests the emulators
    answered; beside them the schedule's own count per wait, a fixed 60 s poll, and a Data Kiosk
    wait on SQS notifications (safety-net polls, 15 min at most)."""
    from airflow_provider_querytasks.common.wait.loop import PollSchedule

    def polls_until(schedule: PollSchedule, duration: float) -> tuple[int, float]:
        """Status calls made until the first one at or after ``duration``, and its lateness."""
        t, calls = 0.0, 1
        while t < duration:
            t += schedule.next_interval(t)
            calls += 1
        return calls, t - duration

    notified_late = notification_latency(samples)
    accounts, per_account = (2, 5) if quick else (ECONOMY_ACCOUNTS, ECONOMY_WAITS_PER_ACCOUNT)
    scale = ECONOMY_SCALE * (10 if quick else 1)
    rows = []
    for duration in ECONOMY_DURATIONS:
        schedule_calls, _ = polls_until(PollSchedule.from_poll_interval(60.0), duration)
        # Notified: only the safety-net polls that fall before the query ends (the wait listens
        # first: no poll at the start, nor the one after the end that polling needs).
        net_calls, _ = polls_until(PollSchedule.safety_net(900.0), duration)
        net_calls -= 2
        measured = {
            coalesce: measured_waits(duration, accounts, per_account, scale, coalesce)
            for coalesce in (False, True)
        }
        off, on = measured[False], measured[True]
        rows.append(
            {
                "duration_s": duration,
                "waits": off["waits"],
                "accounts": f"{accounts} shoplazza + {accounts} adobe",
                "per_wait_calls": off["calls"],
                "per_wait_late_s": off["late_s"],
                "coalesced_calls": on["calls"],
                "coalesced_late_s": on["late_s"],
                "coalesced_list_calls": on["list_calls"],
                "ratio": round(on["calls"] / off["calls"], 3) if off["calls"] else None,
                # Per-wait polling on this shared machine may fall behind its schedule at the
                # start (hundreds of polls a second): the ratio to what the schedule asks too.
                "ratio_to_schedule": round(on["calls"] / (schedule_calls * off["waits"]), 3),
                "schedule_calls_per_wait": schedule_calls,
                "fixed_60s_calls_per_wait": int(duration // 60) + 2,
                "notified_calls": net_calls,
                "notified_late_s": notified_late,
                "time_scale": scale,
                "target": "coalesced <= 1/10 of per-wait calls; 1 h: <= 25 calls a wait",
            }
        )
    return rows


def measured_waits(
    duration: float, accounts: int, per_account: int, scale: float, coalesce: bool
) -> dict[str, Any]:
    """Run ``accounts`` x ``per_account`` deferred waits per platform (Shoplazza, Adobe) through the
    real trigger classes on one event loop, queries ending after about ``duration`` seconds
    (scaled), coalescing on or off; the requests the emulators answered, and how late (real
    seconds, median) each wait saw its query end."""
    import random
    from datetime import datetime, timedelta

    from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
    from airflow_provider_querytasks.common.transport.process_state import process_state
    from airflow_provider_querytasks.common.wait import coalesce as coalesce_module
    from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
    from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
    from airflow_provider_querytasks.protocols.shoplazza import ShoplazzaApi
    from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
    from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator
    from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger
    from airflow_provider_querytasks.triggers.shoplazza import ShoplazzaDataTaskTrigger

    logging.disable(logging.WARNING)  # thousands of poll lines would only cost CPU here
    os.environ["AIRFLOW__QUERYTASKS__COALESCE_POLLS"] = str(coalesce)
    process_state.reset()
    # The same schedule for both modes, whatever the shop's 2 requests/s would allow.
    ShoplazzaApi.shared_rate_limit = (1e9, 1e9)
    coalesce_module.GATHER_WINDOW = 0.5 / scale
    schedule = {"initial": 5.0 / scale, "maximum": 60.0 / scale, "proportion": 0.1}
    chance = random.Random(17)  # the same query durations in both modes
    shops = [
        ShoplazzaEmulator(shop=f"econ{a}.myshoplaza.com", rate_capacity=1e12, rate_per_second=1e12).start()
        for a in range(accounts)
    ]
    sandboxes = [AdobeQueryServiceEmulator().start() for _ in range(accounts)]
    servers: list[Any] = [*shops, *sandboxes]
    for account, (shop, adobe) in enumerate(zip(shops, sandboxes, strict=True)):
        set_connection(f"econ_shop_{account}", shop.connection())
        set_connection(f"econ_adobe_{account}", adobe.connection())
    day = datetime(2026, 11, 20)

    def seed() -> list[tuple[Any, float]]:
        """Queries created just before their waits start, as an operator defers right after
        submitting: (trigger, when its query ends)."""
        waits: list[tuple[Any, float]] = []
        for account, (shop, adobe) in enumerate(zip(shops, sandboxes, strict=True)):
            for _ in range(per_account):
                length = duration * chance.uniform(0.8, 1.2) / scale
                task = shop.add_task("pageview", day, day + timedelta(hours=24))
                task.duration = length
                trigger: Any = ShoplazzaDataTaskTrigger(
                    f"econ_shop_{account}", task.query_id, poll_schedule=schedule
                )
                waits.append((trigger, time.time() + length))
                query = adobe.add_query({"dbName": "prod:all", "sql": "SELECT 1"})
                query.duration = length
                trigger = AdobeQueryTrigger(f"econ_adobe_{account}", query.id, poll_schedule=schedule)
                waits.append((trigger, time.time() + length))
        return waits

    async def one(trigger: Any, ends: float) -> float:
        async for event in trigger.run():
            if event.payload["status"] != "success":
                raise RuntimeError(
                    f"benchmark wait ended {event.payload['status']}: {event.payload['message']}"
                )
            return time.time() - ends
        raise RuntimeError("no event")

    async def run() -> list[float]:
        try:
            # Warm up as a running triggerer is: connections read, tokens and HTTP session held
            # (one status call per account, not counted), so the waits' first polls are polls.
            for account, (shop, adobe) in enumerate(zip(shops, sandboxes, strict=True)):
                task_id = shop.add_task("pageview", day, day + timedelta(hours=24)).query_id
                await ShoplazzaHook(f"econ_shop_{account}").aget_status(task_id)
                query_id = adobe.add_query({"dbName": "prod:all", "sql": "SELECT 1"}).id
                await AdobeQueryServiceHook(f"econ_adobe_{account}").aget_status(query_id)
            for server in servers:
                server.clear()
            waits = seed()
            return list(await asyncio.gather(*(one(trigger, ends) for trigger, ends in waits)))
        finally:
            await close_shared_client_session()

    try:
        late = asyncio.run(run())
    finally:
        for server in servers:
            server.stop()
    answered = [r for server in servers for r in server.requests_to("api") if r.status == 200]
    return {
        "waits": len(late),
        "calls": len(answered),
        "list_calls": sum(r.path.endswith(("/data/tasks", "/queries")) for r in answered),
        "late_s": round(statistics.median(late) * scale, 1),
    }


def notification_latency(samples: int) -> float:
    """Seconds from a Data Kiosk query's end to its notified trigger's event, against the emulator
    (SQS long polling), median of ``samples`` waits."""
    from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
    from airflow_provider_querytasks.common.wait.loop import PollSchedule
    from airflow_provider_querytasks.notification_sources.amazon_sqs import SqsNotificationSource
    from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
    from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger

    duration = 2.0
    with DataKioskEmulator(duration=duration) as emulator:
        for conn in (emulator.connection(), emulator.aws_connection()):
            set_connection(conn["conn_id"], conn)
        source = SqsNotificationSource(emulator.notification_queue_url, account=emulator.account_id)

        async def one() -> float:
            query = emulator.add_query("query { x }")
            ends = time.time() + duration
            trigger = DataKioskQueryTrigger(
                "amazon_sp_api_default",
                query.query_id,
                poll_schedule=PollSchedule.safety_net(900.0).to_dict(),
                notifications=source.to_dict(),
            )
            async for _ in trigger.run():
                return time.time() - ends
            raise RuntimeError("no event")

        async def measure() -> list[float]:
            try:
                return [await one() for _ in range(samples)]
            finally:
                await close_shared_client_session()

        return round(statistics.median(asyncio.run(measure())), 3)


# -- 3. rate-limit fairness --------------------------------------------------------------------
def rate_limit_fairness(waits: int, low: float, high: float) -> list[dict[str, Any]]:
    """Benchmark 3: ``waits`` waits on one Data Kiosk account, coalesced polling (the default)
    and, as the same run's baseline, per-wait polling (``[querytasks] coalesce_polls`` off)."""
    from airflow_provider_querytasks.common.transport.process_state import process_state

    preload("amazon_data_kiosk")
    rows = []
    for coalesced in (True, False):
        process_state.reset()  # fresh rate buckets: each run starts as a new triggerer would
        process_state.coalesce_polls = coalesced
        with emulators(waits, low, high, "--dk-limits") as state:
            result = asyncio.run(_fairness(state, waits, low, high))
        # The emulator's own count is the figure; the client-side count (its logs) a cross-check.
        result["http_429_seen_by_client"] = result["http_429"]
        result["http_429"] = state["http_429"]["data_kiosk"]
        calls = state.get("data_kiosk_calls", {})
        result["getQuery_calls"] = calls.get("getQuery")
        result["getQueries_calls"] = calls.get("getQueries")
        rows.append({"polling": "coalesced" if coalesced else "per wait (baseline)", **result})
    return rows


async def _fairness(state: dict[str, Any], waits: int, low: float, high: float) -> dict[str, Any]:
    from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
    from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger

    rejected = [0]

    class Count429(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "-> 429" in record.getMessage():
                rejected[0] += 1

    transport_log = logging.getLogger("airflow_provider_querytasks.common.transport.clients")
    counter = Count429(logging.INFO)
    transport_log.addHandler(counter)
    transport_log.setLevel(logging.INFO)
    set_connection("bench_dk", state["connections"]["data_kiosk"])
    started = time.time()
    #: query id -> when its wait's event came (time.time(), as the emulator's completion times).
    seen: dict[str, float] = {}

    async def wait(query_id: str) -> None:
        trigger = DataKioskQueryTrigger(
            "bench_dk", query_id, poll_schedule={"initial": 1.0, "maximum": 5.0, "proportion": 0.1}
        )
        async for _event in trigger.run():
            seen[query_id] = time.time()
            return

    await asyncio.gather(*(wait(q) for q in state["ids"]["data_kiosk"][:waits]))
    await close_shared_client_session()
    transport_log.removeHandler(counter)
    # How late each wait saw its query's completion (the emulator knows when each finished).
    ends = state["data_kiosk_ends"]
    late = sorted(at - ends[query_id] for query_id, at in seen.items())
    return {
        "waits_on_one_account": waits,
        "http_429": rejected[0],
        "worst_seen_after_completion_s": round(late[-1], 1),
        "median_seen_after_completion_s": round(statistics.median(late), 1),
        "all_seen_after_s": round(max(seen.values()) - started, 1),
        "last_query_done_at_s": round(max(ends[q] for q in seen) - started, 1),
        "per_wait_floor_s": round(waits / 2.0, 1),
        "note": "getQuery allows 2 rps: one poll of every wait takes waits/2 s",
        "target": "every completion seen within 60 s, 0 HTTP 429",
    }


# -- 6. several triggerers on one account and one queue --------------------------------------
DATA_KIOSK_TRIGGER = "airflow_provider_querytasks.triggers.amazon_data_kiosk.DataKioskQueryTrigger"
#: Benchmark 3's stress schedule: far more polls wanted than the account's plan allows.
STRESS_POLLS = {"initial": 1.0, "maximum": 5.0, "proportion": 0.1}


def _triggerers_run(processes: int, waits: int, low: float, high: float, static: bool) -> dict[str, Any]:
    """``waits`` polling waits on one Data Kiosk account (usage plans enforced), split between
    ``processes`` triggerer-like processes started together."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from triggerer_process import TriggererProcesses

    with TriggererProcesses(processes) as group, emulators(waits, low, high, "--dk-limits") as state:
        conn = dict(state["connections"]["data_kiosk"], conn_id="bench_dk")
        triggers = [
            {
                "class": DATA_KIOSK_TRIGGER,
                "kwargs": {"conn_id": "bench_dk", "query_id": q, "poll_schedule": STRESS_POLLS},
            }
            for q in state["ids"]["data_kiosk"][:waits]
        ]
        handed_over, results = group.run([conn], triggers, static_buckets=static)
    events = [e for r in results for e in r["events"]]
    # Each process's buckets count the 429s of their operation (getQuery, getQueries).
    by_operation: dict[str, int] = {}
    for result in results:
        for bucket in result["buckets"]:
            operation = bucket["key"][-1]
            by_operation[operation] = by_operation.get(operation, 0) + (bucket["throttles"] or 0)
    return {
        "triggerers": processes,
        "buckets": "static (before)" if static else "adaptive",
        "waits_on_one_account": waits,
        "succeeded": sum(e["status"] == "success" for e in events),
        "http_429": sum(r["http_429"] for r in results),
        "getQuery_429": None if static else by_operation.get("getQuery", 0),
        "getQueries_429": None if static else by_operation.get("getQueries", 0),
        "last_completion_s": round(max(e["at"] for e in events) - handed_over, 1),
    }


def several_triggerers(
    waits: int, processes: int, low: float, high: float, with_static: bool
) -> list[dict[str, Any]]:
    """Benchmark 6a: ``waits`` waits on one account, one process vs ``processes`` processes."""
    rows = [_triggerers_run(1, waits, low, high, static=False)]
    rows.append(_triggerers_run(processes, waits, low, high, static=False))
    if with_static:
        rows.append(_triggerers_run(processes, waits, low, high, static=True))
    baseline = rows[0]["last_completion_s"]
    for row in rows:
        row["last_completion_vs_one_process"] = round(row["last_completion_s"] / baseline, 2)
        row["target"] = "<= 5 x 429 in all; last completion <= 1.2x one process"
    return rows


def notifications_several_triggerers(waits: int, processes: int, low: float, high: float) -> dict[str, Any]:
    """Benchmark 6b: ``waits`` Data Kiosk waits on one SQS queue, split between ``processes``
    triggerer-like processes; how late each wait ends after its query finished."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from triggerer_process import TriggererProcesses

    safety_net = {"initial": 60.0, "maximum": 900.0, "proportion": 0.5}  # PollSchedule.safety_net(900)
    with TriggererProcesses(processes) as group, emulators(waits, low, high) as state:
        conn = dict(state["connections"]["data_kiosk"], conn_id="bench_dk")
        source = {
            "queue_url": state["notification_queue_url"],
            "aws_conn_id": "aws_default",
            "account": state["account_id"],
        }
        triggers = [
            {
                "class": DATA_KIOSK_TRIGGER,
                "kwargs": {
                    "conn_id": "bench_dk",
                    "query_id": q,
                    "poll_schedule": safety_net,
                    "notifications": source,
                },
            }
            for q in state["ids"]["data_kiosk"][:waits]
        ]
        _, results = group.run([conn, state["connections"]["aws"]], triggers)
        ends = state["data_kiosk_ends"]
    late = sorted(e["at"] - ends[e["query_id"]] for r in results for e in r["events"])
    return {
        "triggerers": processes,
        "waits_on_one_queue": waits,
        "succeeded": sum(e["status"] == "success" for r in results for e in r["events"]),
        "median_late_s": round(statistics.median(late), 2),
        "worst_late_s": round(late[-1], 2),
        "target": "every wait ends <= 10 s after its notification",
    }


# -- 4. result download ------------------------------------------------------------------------
#: Bytes per record of the emulators' results, to size them: a Shoplazza CSV line, a Data Kiosk
#: JSONL record.
CSV_LINE, JSONL_RECORD = 96, 214


DOWNLOAD_KINDS = ("csv", "csv, gzip-encoded", "jsonl")
#: Each row alternates curl and our fetch this many times (the machines are shared: the best of
#: each is the least disturbed), stopping early once a row has taken DOWNLOAD_ROW_BUDGET_S.
DOWNLOAD_REPEATS, DOWNLOAD_ROW_BUDGET_S = 3, 60.0


def download(
    mib: int, large_mib: int | None, large_kinds: tuple[str, ...] = DOWNLOAD_KINDS, repeats: int = 1
) -> list[dict[str, Any]]:
    """Our fetch vs ``curl`` of the same URL: CSV, gzip-encoded CSV, JSONL, at both sizes."""
    from airflow_provider_querytasks.common.transport.fetch import report_output

    # A process's first fetch also imports Airflow's hook-lineage collector (once, on commit):
    # timed here apart, so that the rows measure the transfer, not the first row's imports.
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report_output(Path(folder) / "warm-up", local=True)
        first_fetch_imports_s = round(time.perf_counter() - started, 2)
    rows = [download_one(kind, mib, repeats) for kind in DOWNLOAD_KINDS if mib]
    if large_mib:
        rows.extend(download_one(kind, large_mib, repeats) for kind in large_kinds)
    if rows:
        rows[0]["first_fetch_imports_s"] = first_fetch_imports_s
    return rows


def download_one(kind: str, mib: int, repeats: int = 1) -> dict[str, Any]:
    """One format at one size: curl and our fetch in turns, ``repeats`` times (fewer if slow)."""
    from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
    from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook

    records = mib * 2**20 // (JSONL_RECORD if kind == "jsonl" else CSV_LINE)
    extra = ["--dk-rows", str(records)] if kind == "jsonl" else ["--rows", str(records)]
    if "gzip" in kind:
        extra.append("--gzip")
    with emulators(1, 0.0, 0.0, *extra) as state, tempfile.TemporaryDirectory() as folder:
        fetch: Any
        if kind == "jsonl":
            set_connection("bench_download", state["connections"]["data_kiosk"])
            dk = DataKioskHook("bench_download")
            document_id = dk.get_query(state["ids"]["data_kiosk"][0])["dataDocumentId"]
            url = dk.get_document(document_id)

            def fetch(target: str) -> dict[str, Any]:
                return dk.download_document(document_id, target)
        else:
            set_connection("bench_download", state["connections"]["shoplazza"])
            shop = ShoplazzaHook("bench_download")
            query_id = state["ids"]["shoplazza"][0]  # complete at once (duration 0)
            url = shop.result_url(query_id)

            def fetch(target: str) -> dict[str, Any]:
                return shop.download_result(query_id, target)

        pairs: list[dict[str, float]] = []
        row_started = time.perf_counter()
        while len(pairs) < repeats and (
            not pairs or time.perf_counter() - row_started < DOWNLOAD_ROW_BUDGET_S
        ):
            pairs.append(_download_pair(kind, url, fetch, Path(folder)))
    best_curl, best_ours = min(p["curl_s"] for p in pairs), min(p["ours_s"] for p in pairs)
    size = pairs[0]["bytes"]
    return {
        "kind": kind,
        "bytes": int(size),
        "baseline": ("curl --compressed -o" if "gzip" in kind else "curl -o")
        if shutil.which("curl")
        else "urllib + shutil.copyfileobj",
        "runs": len(pairs),
        "curl_mib_s": round(size / best_curl / 2**20, 1),
        "ours_mib_s": round(size / best_ours / 2**20, 1),
        # Best against best; each run's own ratio beside it.
        "throughput_ratio_vs_curl": round(best_curl / best_ours, 2),
        "run_ratios": [round(p["curl_s"] / p["ours_s"], 2) for p in pairs],
        # CPU of the whole fetch (all its threads) against curl's, for the same bytes: what the
        # download costs beyond curl's read-and-write (hashing, line counting).
        "cpu_ratio_vs_curl": round(
            statistics.median(p["ours_cpu_s"] for p in pairs)
            / statistics.median(p["curl_cpu_s"] for p in pairs),
            2,
        ),
        "rss_growth_mib": round(max(p["rss_growth"] for p in pairs) / 2**20, 1),
        "target": ">= 0.9x curl; RSS growth <= 50 MiB",
    }


def _download_pair(kind: str, url: str, fetch: Any, folder: Path) -> dict[str, float]:
    """curl, then our fetch, of ``url``: seconds, CPU seconds, bytes and our RSS growth."""
    # Each download starts with the page cache flushed: a gigabyte written moments before
    # is still being written back, and throttles whichever download comes second.
    os.sync()
    curl_out = folder / "curl.out"
    children, started_cpu = resource.getrusage(resource.RUSAGE_CHILDREN), cpu()
    started = time.perf_counter()
    if shutil.which("curl"):
        options = ["--compressed"] if "gzip" in kind else []
        subprocess.run(["curl", "-s", *options, "-o", str(curl_out), url], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        curl_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    else:  # a machine without curl: the standard library's copy loop instead
        with urllib.request.urlopen(url) as answer, open(curl_out, "wb") as out:
            shutil.copyfileobj(answer, out, 1 << 20)
        curl_cpu = cpu() - started_cpu
    curl_s = time.perf_counter() - started
    size = curl_out.stat().st_size
    curl_out.unlink()  # keep one copy on disk at a time
    os.sync()
    before = rss()
    with PeakRss() as peak:
        started_cpu, started = cpu(), time.perf_counter()
        record = fetch(str(folder / "ours.out"))
        ours_s, ours_cpu = time.perf_counter() - started, cpu() - started_cpu
    (folder / "ours.out").unlink()
    if record["bytes"] != size:
        raise RuntimeError(f"{kind}: our fetch wrote {record['bytes']} bytes, curl {size}")
    return {
        "bytes": size,
        "curl_s": curl_s,
        "curl_cpu_s": curl_cpu,
        "ours_s": ours_s,
        "ours_cpu_s": ours_cpu,
        "rss_growth": max(0, peak.value - before),
    }


# -- 5. import cost ----------------------------------------------------------------------------
IMPORTS = {
    "this provider (all operators and sensors)": "\n".join(
        f"import airflow_provider_querytasks.{kind}.{module}"
        for kind in ("operators", "sensors")
        for module in ("shoplazza", "amazon_data_kiosk", "adobe_query_service")
    ),
    "baseline: apache-airflow-providers-dbt-cloud": (
        "import airflow.providers.dbt.cloud.operators.dbt\nimport airflow.providers.dbt.cloud.sensors.dbt"
    ),
    "baseline: apache-airflow-providers-standard (PythonOperator)": (
        "import airflow.providers.standard.operators.python"
    ),
}
PROBE = """
import time, os
try:
    import airflow.sdk
except ImportError:
    import airflow
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
m, t = rss(), time.perf_counter()
{imports}
print(time.perf_counter() - t, rss() - m)
"""


#: The dbt-cloud provider, the import baseline: installed by the full run into benchmarks/.deps
#: only (never into the test environments), without its dependencies (Airflow's environment has
#: what it imports).
DBT_CLOUD = "apache-airflow-providers-dbt-cloud==4.11.1"
BENCHMARK_DEPS = ROOT / "benchmarks" / ".deps"


def install_baseline() -> None:
    if (BENCHMARK_DEPS / "airflow" / "providers" / "dbt").exists():
        return
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [
            *(str(uv), "pip", "install", "--quiet", "--compile-bytecode"),
            *("--target", str(BENCHMARK_DEPS), "--no-deps", DBT_CLOUD),
        ],
        capture_output=True,
        check=False,  # without it, the row says the baseline is not installed
    )


def import_cost(repeats: int, install: bool) -> list[dict[str, Any]]:
    if install:
        install_baseline()
    # airflow.providers is a namespace package: a folder on PYTHONPATH adds the dbt provider.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCHMARK_DEPS), os.environ.get("PYTHONPATH")])),
    }
    # Imports are measured with bytecode, as on an installed Airflow: the first, uncounted run
    # writes what is missing (this checkout's package is not compiled at install time).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    rows: list[dict[str, Any]] = []
    for name, imports in IMPORTS.items():
        samples = []
        for _ in range(repeats + 1):  # the first run compiles bytecode: not counted
            done = subprocess.run(
                [sys.executable, "-c", PROBE.format(imports=imports)], capture_output=True, text=True, env=env
            )
            if done.returncode:
                break
            seconds, grown = done.stdout.split()
            samples.append((float(seconds), int(grown)))
        samples = samples[1:]
        if not samples:
            rows.append({"import": name, "ms": None, "note": "not installed in this environment"})
            continue
        rows.append(
            {
                "import": name,
                "ms": round(statistics.median(s for s, _ in samples) * 1000, 1),
                "mib": round(statistics.median(g for _, g in samples) / 2**20, 1),
            }
        )
    rows.append({"import": "target", "ms": "<= 50 added, no slower than the dbt-cloud baseline"})
    return rows


# -- driver ------------------------------------------------------------------------------------
def child(section: str, args: argparse.Namespace) -> Any:
    if section.startswith("scale:"):
        # Benchmark 1 prices a status poll against a bare GET: every wait polls its own query
        # (coalesced polling, which replaces most polls by list calls, is benchmark 2's).
        os.environ["AIRFLOW__QUERYTASKS__COALESCE_POLLS"] = "False"
        durations = (4.0, 8.0) if args.quick else (15.0, 60.0)
        return triggerer_scale(args.waits, *durations, section.partition(":")[2])
    if section == "economy":
        return polling_economy(1 if args.quick else 5, quick=args.quick)
    if section == "fairness":
        return rate_limit_fairness(args.fair_waits, *((4.0, 6.0) if args.quick else (10.0, 20.0)))
    if section == "download":
        return download(
            args.download_mib, args.download_large_mib, repeats=1 if args.quick else DOWNLOAD_REPEATS
        )
    if section == "multiprocess":
        quick = args.quick
        rows = several_triggerers(
            args.multi_waits, args.triggerers, *((2.0, 4.0) if quick else (10.0, 20.0)), with_static=not quick
        )
        sqs = notifications_several_triggerers(args.sqs_waits, 2, *((1.0, 3.0) if quick else (2.0, 20.0)))
        return {"one_account": rows, "one_queue": sqs}
    if section == "imports":
        return import_cost(1 if args.quick else 10, install=not args.quick)
    if section == "adobe_sql":
        from adobe_sql import adobe_sql_export

        return adobe_sql_export(args.sql_rows, 1 if args.quick else 3)
    if section == "realtriggerer":
        from real_triggerer import real_triggerer

        durations = REAL_DURATIONS_QUICK if args.quick else REAL_DURATIONS
        return real_triggerer(
            args.real_waits, args.real_accounts, durations, timeout=600.0, phases_wanted=args.real_phases
        )
    raise ValueError(section)


#: Benchmark 7's query durations (seconds, uniform): longer than Airflow takes to start 5,000
#: triggers in one triggerer (90-310 s in the runs of 2026-12-01: 50 a loop), so that most waits
#: poll a running query for minutes (with 60-180 s most waits started after their query ended:
#: about 2 calls a wait),
#: and long enough for the default schedule to back off (5 s apart for the first 50 s, then 10 %
#: of the elapsed time); short enough for a run of minutes.
REAL_DURATIONS, REAL_DURATIONS_QUICK = (300.0, 480.0), (5.0, 15.0)


SECTIONS_HELP = """sections (--only, comma-separated; default: all):
  scale         1. concurrent waits in one triggerer: CPU per poll, memory, loop lag
  economy       2. status calls and lateness of deferred waits under the default schedule,
                measured over HTTP against the emulators (Shoplazza and Adobe, 4 accounts each,
                20 waits an account; time scaled 30x): every wait polling its own query
                (coalesce_polls off) vs coalesced polling (on), the ratio (target <= 1/10);
                and of a Data Kiosk wait on SQS notifications
  fairness      3. --fair-waits waits on one Data Kiosk account in one process (usage plans
                enforced), coalesced polling and per-wait polling (the baseline): the worst
                delay between a query's completion (the emulator's clock) and its wait's event,
                HTTP 429s, getQuery and getQueries calls (target: <= 60 s, 0 x 429)
  download      4. result download vs curl (CSV, gzip CSV, JSONL at --download-mib and
                --download-large-mib; curl and the fetch alternate, best of each compared)
  imports       5. import cost vs the dbt-cloud provider
  multiprocess  6. several triggerer-like processes (separate OS processes, each running its
                share of the waits through the real trigger classes on its own event loop)
                against ONE emulator process:
                6a. --multi-waits polling waits on one Data Kiosk account (getQuery 2 rps,
                    burst 15, enforced; polls wanted every 1-5 s), in 1 process (the baseline)
                    and split over --triggerers processes, with the adaptive buckets, and with
                    static per-process buckets (what the provider did before): HTTP 429s in
                    all, and the last completion vs the one-process run (target: <= 5 x 429,
                    <= 1.2x);
                6b. --sqs-waits waits ended by SQS notifications on one queue, split over 2
                    processes: how late each ends after its query finished (target: <= 10 s).
  realtriggerer 7. --real-waits deferred waits on --real-accounts accounts (each its own
                emulated shop / selling partner / IMS org, a third per platform) run by a real
                `airflow triggerer` (metadata DB: a throwaway PostgreSQL 15; connections in the
                DB; task instances and Trigger rows created deferred through Airflow's ORM, as
                the providers' sensors defer; default poll schedule; queries running 300-480 s,
                5-15 s with --quick; a phase stops 600 s after the slowest query; ~45 min in
                all at 5,000 waits; --real-phases picks phases). Phases: the triggerer with
                per-wait polling ([querytasks] coalesce_polls=False), the triggerer as configured
                by default (coalesced), the floor: the same task instances deferred on Airflow's
                own DateTimeTrigger for the moment each query ends (what the triggerer costs
                with no polling at all), and the baseline: a plain asyncio process making one
                bare aiohttp GET per wait per poll on the same schedule. Figures, measured from
                outside: waits finished, API calls per operation (the emulators' counts),
                triggerer process-tree CPU (user+sys; supervisor and trigger runner apart) per
                wait-hour of deferred time, peak RSS, worst loop lag (the trigger runner's
                "async thread was blocked" lines, logged from 20 ms of lag); a phase where
                nothing finishes and the triggerer uses under 1 s of CPU for 120 s is stalled,
                with every process's stacks (py-spy) in the kept home. Targets:
                all finish; calls <= 0.1x per-wait polling; CPU per wait-hour <= 0.5x the bare
                GET's; worst lag < 100 ms. Not part of the default run (--only realtriggerer).
  adobe_sql     8. --sql-rows rows (1,000,000) of a table on the Adobe emulator's PostgreSQL
                interface streamed to CSV by AdobeQueryServiceSqlHook.export_rows (server-side
                cursor) and by `psql -c "\\copy (SELECT ...) TO ... CSV HEADER"` on the same
                server, in turns (3 runs each; every export in a process of its own, the
                emulator and its wire proxy in another): rows per second as a ratio to
                psql's, the exporting process's RSS growth, whether the files are identical,
                the load average. Targets:
                >= 0.8x psql, <= 50 MiB. Not part of the default run (--only adobe_sql). The
                published figures are copied by hand into benchmarks/results/adobe_sql.json.
"""


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows as an aligned text table (the keys of the first row are the columns)."""
    columns = list(rows[0])
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


#: Sections run only when named in --only (minutes of a real Airflow and a PostgreSQL).
OPT_IN_SECTIONS = ("realtriggerer", "adobe_sql")


def print_real_triggerer(result: dict[str, Any]) -> None:
    print("7. deferred waits in a real `airflow triggerer` vs bare GETs on the same schedule")
    columns = (
        *("phase", "waits", "finished", "stalled", "api_calls", "http_429", "cpu_s", "cpu_s_supervisor"),
        "cpu_s_runner",
        *(
            "wait_hours",
            "cpu_s_per_wait_hour",
            "runner_cpu_s_per_wait_hour",
            "peak_rss_mib",
            "every_wait_polled_once_s",
            "worst_loop_lag_ms",
        ),
        *("worst_loop_lag_after_first_polls_ms", "seen_late_s_median", "seen_late_s_max", "wall_s"),
    )
    print_table([{c: row.get(c, "") for c in columns} for row in result["phases"]])
    print("  API calls per operation:")
    print_table(
        [
            {"phase": row["phase"], "operation": operation, "calls": calls}
            for row in result["phases"]
            for operation, calls in sorted(row["api_calls_per_operation"].items())
        ]
    )
    print("  summary:")
    print_table([result["summary"]])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=SECTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=None, help="run only these sections (comma-separated, see below)")
    parser.add_argument(
        "--multi-waits", type=int, default=None, help="waits on one account for benchmark 6a (90)"
    )
    parser.add_argument(
        "--triggerers", type=int, default=None, help="triggerer processes for benchmark 6a (3)"
    )
    parser.add_argument(
        "--sqs-waits", type=int, default=None, help="waits on one queue for benchmark 6b (50)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's smoke run)")
    parser.add_argument("--waits", type=int, default=None, help="concurrent waits for benchmark 1 (1000)")
    parser.add_argument(
        "--fair-waits", type=int, default=None, help="waits on one account for benchmark 3 (200)"
    )
    parser.add_argument("--download-mib", type=int, default=None, help="result size for benchmark 4 (100)")
    parser.add_argument(
        "--download-large-mib",
        type=int,
        default=None,
        help="also every format at this size for benchmark 4 (1024; gzip and JSONL are held in memory)",
    )
    # Every format is downloaded at both sizes now; the flag stays accepted for older commands.
    parser.add_argument("--download-large-all", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--real-waits",
        type=int,
        default=None,
        help="deferred waits in the real triggerer, benchmark 7 (5000)",
    )
    parser.add_argument(
        "--real-accounts", type=int, default=None, help="accounts (connections) for benchmark 7 (50)"
    )
    parser.add_argument(
        "--real-phases",
        default=",".join(PHASES),
        help=f"benchmark 7's phases to run (comma-separated: {', '.join(PHASES)}; the ratios need all)",
    )
    parser.add_argument("--sql-rows", type=int, default=None, help="rows of benchmark 8's SELECT (1000000)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    args = parser.parse_args()

    def default(value: int | None, quick: int, full: int) -> int:
        return (quick if args.quick else full) if value is None else value

    args.waits = default(args.waits, 30, 1000)
    # Quick: more waits than getQuery's burst (15), so a client that did not pace them would be
    # answered 429.
    args.fair_waits = default(args.fair_waits, 20, 200)
    args.download_mib = default(args.download_mib, 2, 100)
    args.download_large_mib = default(args.download_large_mib, 0, 1024)
    args.multi_waits = default(args.multi_waits, 8, 90)
    args.triggerers = default(args.triggerers, 2, 3)
    args.sqs_waits = default(args.sqs_waits, 6, 50)
    args.real_waits = default(args.real_waits, 30, 5000)
    args.real_accounts = default(args.real_accounts, 6, 50)
    args.sql_rows = default(args.sql_rows, 20_000, 1_000_000)
    phases = tuple(args.real_phases.split(","))
    if set(phases) - set(PHASES) or not phases:
        parser.error(f"--real-phases: {args.real_phases!r}; allowed: {', '.join(PHASES)} (comma-separated)")
    args.real_phases = phases
    if args.section:
        print(json.dumps(child(args.section, args)))
        return 0
    logging.disable(logging.WARNING)
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    scales = [f"scale:{name}" for name in (["stress"] if args.quick else SCALE_SCHEDULES)]
    sections = [*scales, "economy", "fairness", "download", "imports", "multiprocess"]
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.partition(":")[0] for s in [*sections, *OPT_IN_SECTIONS]}
        if unknown:
            parser.error(f"--only: unknown sections {sorted(unknown)}")
        sections = [s for s in [*sections, *OPT_IN_SECTIONS] if s.partition(":")[0] in wanted]
    for section in sections:
        flags = [
            *("--multi-waits", str(args.multi_waits), "--triggerers", str(args.triggerers)),
            *("--sqs-waits", str(args.sqs_waits)),
            *("--real-waits", str(args.real_waits), "--real-accounts", str(args.real_accounts)),
            *("--real-phases", ",".join(args.real_phases)),
            *("--sql-rows", str(args.sql_rows)),
            "--waits",
            str(args.waits),
            "--fair-waits",
            str(args.fair_waits),
            "--download-mib",
            str(args.download_mib),
            "--download-large-mib",
            str(args.download_large_mib),
            *(["--download-large-all"] if args.download_large_all else []),
        ]
        command = [
            sys.executable,
            __file__,
            "--section",
            section,
            *flags,
            *(["--quick"] if args.quick else []),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"\n== {section}")
        if section.startswith("scale:"):  # one table for every schedule
            results.setdefault("scale", []).extend(result)
        else:
            results[section] = result
        if section == "multiprocess":
            print("6a. waits on one Data Kiosk account, one process vs several")
            print_table(result["one_account"])
            print("6b. waits on one SQS queue, several processes")
            print_table([result["one_queue"]])
            continue
        if section == "realtriggerer":
            print_real_triggerer(result)
            continue
        if section == "adobe_sql":
            print("8. a SELECT's rows to CSV: the Adobe SQL hook vs psql \\copy, same server, same run")
            print_table([result])
            continue
        for row in result if isinstance(result, list) else [result]:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
