"""Data Kiosk trigger against the emulator: kill, many concurrent waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger

from .conftest import QUERY


def trigger_for(query_id: str, deadline: float = 30.0) -> DataKioskQueryTrigger:
    return DataKioskQueryTrigger(
        conn_id="amazon_sp_api_default",
        query_id=query_id,
        deadline=time.time() + deadline,
        poll_schedule={"initial": 0.05, "maximum": 0.1, "proportion": 0.1},
        started=time.time(),
    )


def test_killed_trigger_cancels_the_query(emulator: DataKioskEmulator, hook: DataKioskHook) -> None:
    emulator.duration = 60.0
    query_id = hook.create_query(QUERY)
    trigger = trigger_for(query_id)

    async def kill() -> None:
        try:
            await trigger.on_kill()
        finally:
            await close_shared_client_session()

    asyncio.run(kill())
    assert emulator.queries[query_id].cancelled


def test_fifty_concurrent_waits_on_one_account_get_no_429(emulator: DataKioskEmulator) -> None:
    emulator.duration = 3.0
    ids = [emulator.add_query(QUERY).query_id for _ in range(50)]

    async def wait_all() -> list[dict[str, Any]]:
        async def one(query_id: str) -> dict[str, Any]:
            async for event in trigger_for(query_id, deadline=120).run():
                return dict(event.payload)
            raise AssertionError("no event")

        try:
            return await asyncio.gather(*(one(q) for q in ids))
        finally:
            await close_shared_client_session()

    events = asyncio.run(wait_all())
    assert [e["status"] for e in events] == ["success"] * 50
    polls = emulator.requests_to("api", "GET", r"/queries/")
    assert polls and all(r.status != 429 for r in polls)
