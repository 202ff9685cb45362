"""Several triggerers against one Data Kiosk account and one SQS queue, as separate OS processes.

Each triggerer-like process (``benchmarks/triggerer_process.py``) runs its share of the waits
through the real trigger class on its own event loop; nothing is shared between them but the
emulator (in this process), as in a deployment with several triggerers.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator

from .conftest import QUERY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from triggerer_process import TriggererProcesses

TRIGGER = "airflow_provider_querytasks.triggers.amazon_data_kiosk.DataKioskQueryTrigger"


def polling_waits(emulator: DataKioskEmulator, count: int) -> list[dict[str, Any]]:
    emulator.duration = 4.0
    schedule = {"initial": 1.0, "maximum": 2.0, "proportion": 0.1}  # far more polls than 2/s
    return [
        {
            "class": TRIGGER,
            "kwargs": {
                "conn_id": "dk",
                "query_id": emulator.add_query(QUERY).query_id,
                "poll_schedule": schedule,
            },
        }
        for _ in range(count)
    ]


def http_429(static_buckets: bool) -> int:
    """429s met by 3 triggerer processes polling 18 queries of one account (getQuery 2/s, burst 15)."""
    with TriggererProcesses(3) as group, DataKioskEmulator(notify=False) as emulator:
        _, results = group.run(
            [emulator.connection("dk")], polling_waits(emulator, 18), static_buckets=static_buckets
        )
        assert [e["status"] for r in results for e in r["events"]] == ["success"] * 18
        served = sum(r.status == 429 for r in emulator.requests_to("api", "GET"))
        assert served == sum(r["http_429"] for r in results)  # what the processes saw, as sent
        return served


def test_adaptive_buckets_keep_several_triggerers_within_one_accounts_plan() -> None:
    static = http_429(static_buckets=True)
    adaptive = http_429(static_buckets=False)
    # Static buckets: each process spends the whole plan. Adaptive: about one 429 per process,
    # when they find they share it.
    assert adaptive <= 5, adaptive
    assert static >= 3 * max(adaptive, 1), (static, adaptive)


def test_two_triggerers_on_one_queue_end_every_wait_soon_after_its_notification() -> None:
    emulator = DataKioskEmulator(enforce_rate_limits=False)
    # As docs/data_kiosk.md recommends: a redrive policy, maxReceiveCount 10.
    emulator.sqs.create_queue(emulator.NOTIFICATION_QUEUE, dead_letter_queue="dlq", max_receive_count=10)
    chance = random.Random(14)
    with TriggererProcesses(2) as group, emulator:
        source = {"queue_url": emulator.notification_queue_url, "aws_conn_id": "aws_default"}
        rare_polls = {"initial": 600.0, "maximum": 600.0, "proportion": 0.5}  # only SQS can end them
        ends: dict[str, float] = {}
        triggers = []
        for _ in range(50):
            query = emulator.add_query(QUERY)
            query.duration = chance.uniform(1.0, 8.0)
            ends[query.query_id] = query.created_wall + query.duration
            kwargs = {"conn_id": "dk", "query_id": query.query_id, "poll_schedule": rare_polls}
            triggers.append({"class": TRIGGER, "kwargs": {**kwargs, "notifications": source}})
        _, results = group.run([emulator.connection("dk"), emulator.aws_connection()], triggers)
        events = [e for r in results for e in r["events"]]
        assert sorted(e["query_id"] for e in events) == sorted(ends)
        assert all(e["status"] == "success" for e in events)
        late = {e["query_id"]: e["at"] - ends[e["query_id"]] for e in events}
        assert max(late.values()) <= 10.0, sorted(late.values())[-5:]
        assert not emulator.requests_to("api", "GET")  # no wait needed its safety-net poll
        # Every notification was claimed by its wait; none went to the dead-letter queue.
        assert not emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)
        assert not emulator.sqs.messages("dlq")
