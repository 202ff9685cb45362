"""The three emulators in their own process, seeded with queries, for the benchmarks.

``python benchmarks/emulators.py STATE_FILE N MIN_S MAX_S [--dk-limits] [--rows R] [--gzip]
[--dk-rows R] [--accounts K] [--limits] [--hold]``: starts the emulators on 127.0.0.1, creates N
queries per platform finishing after a random duration in [MIN_S, MAX_S] (fixed seed; Shoplazza
results of R CSV rows, gzip-encoded with ``--gzip``; Data Kiosk documents of R JSONL records; Data
Kiosk usage plans enforced with ``--dk-limits``),
writes ``{"urls", "connections", "ids", "data_kiosk_ends", ...}`` to STATE_FILE and serves until
stdin closes, then writes how many 429 answers each emulator gave to ``STATE_FILE.answered``,
with the requests each platform received per operation (``"requests": {platform: {"GET
/path/{id}": n}}``).
Running apart keeps the servers' CPU out of the figures measured in the benchmark process.

``--accounts K``: K emulators per platform, each its own account (shop, selling partner, IMS
org) with its own ports; the N queries of a platform are dealt round-robin between them, and
STATE_FILE gets ``"accounts": {platform: [{"connection", "ids", "urls"}, ...]}`` (the top-level
``connections``/``ids``/``urls`` stay those of the first account). ``--limits``: each platform's
published rate limits are enforced (Shoplazza's per shop, and Data Kiosk's usage plans); without
it Shoplazza's are lifted as before. ``--hold``: the queries' durations start when a line
``go`` arrives on stdin (the emulators' clock is set back to their creation), and
``STATE_FILE.go`` gets that moment (``time.time()``); stdin closing still stops the emulators.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.server import EmulatorClock, EmulatorServer
from airflow_provider_querytasks.testing.shoplazza import RATE_CAPACITY as SHOPLAZZA_RATE_CAPACITY
from airflow_provider_querytasks.testing.shoplazza import RATE_PER_SECOND as SHOPLAZZA_RATE_PER_SECOND
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

QUERY = 'query { analytics_salesAndTraffic_2024_04_24 { salesAndTrafficByDate(startDate: "2026-11-01", endDate: "2026-11-01", aggregateBy: DAY, marketplaceIds: ["X"]) { startDate } } }'  # noqa: E501


def operation(method: str, path: str, ids: set[str]) -> str:
    """A request's operation: its method and path, with query ids as ``{id}``."""
    return f"{method} " + "/".join("{id}" if part in ids else part for part in path.split("/"))


def main() -> None:
    state_file, count, low, high = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    chance = random.Random(7)
    rows = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else 100
    dk_rows = int(sys.argv[sys.argv.index("--dk-rows") + 1]) if "--dk-rows" in sys.argv else 10
    accounts = int(sys.argv[sys.argv.index("--accounts") + 1]) if "--accounts" in sys.argv else 1
    limits = "--limits" in sys.argv
    # One clock for every emulator: ``go`` sets all their queries running at once.
    clock = EmulatorClock()
    shoplazzas = [
        ShoplazzaEmulator(
            shop=f"bench{i}.myshoplaza.com" if accounts > 1 else "querytasks-demo.myshoplaza.com",
            rows=rows,
            gzip="--gzip" in sys.argv,
            clock=clock,
            rate_capacity=SHOPLAZZA_RATE_CAPACITY if limits else 1e12,
            rate_per_second=SHOPLAZZA_RATE_PER_SECOND if limits else 1e12,
        ).start()
        for i in range(accounts)
    ]
    data_kiosks = [
        DataKioskEmulator(
            account_id=f"A{i:08d}BENCH" if accounts > 1 else "A3EMULATORSP",
            enforce_rate_limits=limits or "--dk-limits" in sys.argv,
            rows=dk_rows,
            clock=clock,
        ).start()
        for i in range(accounts)
    ]
    adobes = [
        AdobeQueryServiceEmulator(
            org_id=f"BENCH{i:06d}@AdobeOrg" if accounts > 1 else "EMULATOR0123456789@AdobeOrg",
            clock=clock,
            # Polling is measured, not tie handling: thousands of queries seeded in a loop would
            # otherwise share milliseconds by the hundred.
            created_resolution=None,
        ).start()
        for i in range(accounts)
    ]
    shoplazza, data_kiosk, adobe = shoplazzas[0], data_kiosks[0], adobes[0]
    ids: dict[str, list[str]] = {"shoplazza": [], "data_kiosk": [], "adobe": []}
    per_account: dict[str, list[list[str]]] = {name: [[] for _ in range(accounts)] for name in ids}
    #: When each query finishes (emulator time; ``time.time()`` for Data Kiosk's below).
    durations: dict[str, float] = {}
    #: When each Data Kiosk query finishes (``time.time()``): its notification is due then.
    data_kiosk_ends: dict[str, float] = {}
    day = datetime(2026, 11, 20)
    seeded_at = clock.now()
    for n in range(count):
        i = n % accounts
        task = shoplazzas[i].add_task("pageview", day, day + timedelta(hours=24))
        task.duration = chance.uniform(low, high)
        ids["shoplazza"].append(task.query_id)
        per_account["shoplazza"][i].append(task.query_id)
        durations[task.query_id] = task.duration
        query = data_kiosks[i].add_query(QUERY)
        query.duration = chance.uniform(low, high)
        ids["data_kiosk"].append(query.query_id)
        per_account["data_kiosk"][i].append(query.query_id)
        durations[query.query_id] = query.duration
        data_kiosk_ends[query.query_id] = query.created_wall + query.duration
        adobe_query = adobes[i].add_query({"dbName": "prod:all", "sql": "SELECT 1"})
        adobe_query.duration = chance.uniform(low, high)
        ids["adobe"].append(adobe_query.id)
        per_account["adobe"][i].append(adobe_query.id)
        durations[adobe_query.id] = adobe_query.duration
    servers: dict[str, list[EmulatorServer]] = {"shoplazza": [*shoplazzas], "data_kiosk": [*data_kiosks]}
    servers["adobe"] = [*adobes]
    connections: dict[str, Any] = {
        "shoplazza": shoplazza.connection(),
        "data_kiosk": data_kiosk.connection(),
        "adobe": adobe.connection(),
        "aws": data_kiosk.aws_connection(),
    }
    urls = {"shoplazza": shoplazza.urls, "data_kiosk": data_kiosk.urls, "adobe": adobe.urls}
    with open(state_file, "w", encoding="utf-8") as out:
        json.dump(
            {
                "urls": urls,
                "connections": connections,
                "ids": ids,
                "data_kiosk_ends": data_kiosk_ends,
                "notification_queue_url": data_kiosk.notification_queue_url,
                "account_id": data_kiosk.account_id,
                "durations": durations,
                "accounts": {
                    name: [
                        {"connection": server.connection(), "ids": per_account[name][i], "urls": server.urls}
                        for i, server in enumerate(group)
                    ]
                    for name, group in servers.items()
                },
            },
            out,
        )
    for line in sys.stdin:  # serve until the benchmark closes our stdin
        if line.strip() == "go" and "--hold" in sys.argv:
            clock.advance(seeded_at - clock.now())  # every query starts now
            with open(f"{state_file}.go", "w", encoding="utf-8") as out:
                json.dump(time.time(), out)
    for group in servers.values():
        for server in group:
            server.stop()
    # What the servers answered, counted where it happened (the client's logs could miss some).
    answered = {
        name: sum(r.status == 429 for server in group for r in server.requests)
        for name, group in servers.items()
    }
    known = {query_id for group in ids.values() for query_id in group}
    requests = {
        name: dict(Counter(operation(r.method, r.path, known) for server in group for r in server.requests))
        for name, group in servers.items()
    }
    # Data Kiosk's status calls: getQuery (one query) and getQueries (a list), and their 429s.
    api = [r for server in servers["data_kiosk"] for r in server.requests_to("api", "GET")]
    kiosk_calls = {
        "getQuery": sum("/queries/" in r.path for r in api),
        "getQueries": sum(r.path.rstrip("/").endswith("/queries") for r in api),
        "getQueries_429": sum(r.path.rstrip("/").endswith("/queries") and r.status == 429 for r in api),
    }
    with open(f"{state_file}.answered", "w", encoding="utf-8") as out:
        json.dump({"http_429": answered, "requests": requests, "data_kiosk_calls": kiosk_calls}, out)


if __name__ == "__main__":
    main()
