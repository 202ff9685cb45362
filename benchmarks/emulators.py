"""The three emulators in their own process, seeded with queries, for the benchmarks.

``python benchmarks/emulators.py STATE_FILE N MIN_S MAX_S [--dk-limits] [--rows R] [--gzip]
[--dk-rows R]``: starts the emulators on 127.0.0.1, creates N queries per platform finishing after
a random duration in [MIN_S, MAX_S] (fixed seed; Shoplazza results of R CSV rows, gzip-encoded
with ``--gzip``; Data Kiosk documents of R JSONL records; Data Kiosk usage plans enforced with
``--dk-limits``),
writes ``{"urls", "connections", "ids", "data_kiosk_ends", ...}`` to STATE_FILE and serves until
stdin closes, then writes how many 429 answers each emulator gave to ``STATE_FILE.answered``.
Running apart keeps the servers' CPU out of the figures measured in the benchmark process.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

QUERY = 'query { analytics_salesAndTraffic_2024_04_24 { salesAndTrafficByDate(startDate: "2026-11-01", endDate: "2026-11-01", aggregateBy: DAY, marketplaceIds: ["X"]) { startDate } } }'  # noqa: E501


def main() -> None:
    state_file, count, low, high = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    chance = random.Random(7)
    rows = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else 100
    dk_rows = int(sys.argv[sys.argv.index("--dk-rows") + 1]) if "--dk-rows" in sys.argv else 10
    shoplazza = ShoplazzaEmulator(
        rate_capacity=1e12, rate_per_second=1e12, rows=rows, gzip="--gzip" in sys.argv
    ).start()
    data_kiosk = DataKioskEmulator(enforce_rate_limits="--dk-limits" in sys.argv, rows=dk_rows).start()
    adobe = AdobeQueryServiceEmulator().start()
    ids: dict[str, list[str]] = {"shoplazza": [], "data_kiosk": [], "adobe": []}
    #: When each Data Kiosk query finishes (``time.time()``): its notification is due then.
    data_kiosk_ends: dict[str, float] = {}
    day = datetime(2026, 11, 20)
    for _ in range(count):
        task = shoplazza.add_task("pageview", day, day + timedelta(hours=24))
        task.duration = chance.uniform(low, high)
        ids["shoplazza"].append(task.query_id)
        query = data_kiosk.add_query(QUERY)
        query.duration = chance.uniform(low, high)
        ids["data_kiosk"].append(query.query_id)
        data_kiosk_ends[query.query_id] = query.created_wall + query.duration
        adobe_query = adobe.add_query({"dbName": "prod:all", "sql": "SELECT 1"})
        adobe_query.duration = chance.uniform(low, high)
        ids["adobe"].append(adobe_query.id)
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
            },
            out,
        )
    sys.stdin.read()  # serve until the benchmark closes our stdin
    servers = {"shoplazza": shoplazza, "data_kiosk": data_kiosk, "adobe": adobe}
    for server in servers.values():
        server.stop()
    # What the servers answered, counted where it happened (the client's logs could miss some).
    answered = {name: sum(r.status == 429 for r in server.requests) for name, server in servers.items()}
    # Data Kiosk's status calls: getQuery (one query) and getQueries (a list), and their 429s.
    api = data_kiosk.requests_to("api", "GET")
    kiosk_calls = {
        "getQuery": sum("/queries/" in r.path for r in api),
        "getQueries": sum(r.path.rstrip("/").endswith("/queries") for r in api),
        "getQueries_429": sum(r.path.rstrip("/").endswith("/queries") and r.status == 429 for r in api),
    }
    with open(f"{state_file}.answered", "w", encoding="utf-8") as out:
        json.dump({"http_429": answered, "data_kiosk_calls": kiosk_calls}, out)


if __name__ == "__main__":
    main()
