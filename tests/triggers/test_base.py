"""The shared trigger (triggers/base.py): round trip, events, cancel on kill."""

from __future__ import annotations

import importlib
import json
import time
from typing import Any

from airflow_provider_querytasks.common.transport.clients import close_shared_client_session

from ..common.fake_platform import FakeEmulator, FakeHook, FakeTrigger


def trigger_for(query_id: str, **kwargs: Any) -> FakeTrigger:
    defaults: dict[str, Any] = {
        "conn_id": "fake_default",
        "query_id": query_id,
        "deadline": time.time() + 30,
        "poll_schedule": {"initial": 0.05, "maximum": 0.1, "proportion": 0.1},
    }
    return FakeTrigger(**{**defaults, **kwargs})


async def first_event(trigger: FakeTrigger) -> dict[str, Any]:
    try:
        async for event in trigger.run():
            return dict(event.payload)
    finally:
        await close_shared_client_session()
    raise AssertionError("the trigger yielded nothing")


def test_trigger_serialises_to_json_and_round_trips() -> None:
    trigger = trigger_for("q1", started=123.0, cancel_on_kill=False)
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # plain JSON only
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["query_id"] == "q1" and kwargs["started"] == 123.0 and kwargs["cancel_on_kill"] is False


async def test_trigger_yields_success(emulator: FakeEmulator, hook: FakeHook) -> None:
    query_id = hook.create_query("select 1")
    event = await first_event(trigger_for(query_id))
    assert event["status"] == "success"
    assert event["snapshot"]["remote_status"] == "DONE"
    assert len(emulator.requests_to("api", "GET", f"/queries/{query_id}$")) >= 2


async def test_trigger_yields_failed_with_remote_text(hook: FakeHook, emulator: FakeEmulator) -> None:
    emulator.outcome = "FAILED"
    event = await first_event(trigger_for(hook.create_query("select * from users_2")))
    assert event["status"] == "failed"
    assert "Table users_2 does not exist" in event["message"]


async def test_trigger_yields_timeout_at_its_deadline(hook: FakeHook, emulator: FakeEmulator) -> None:
    emulator.duration = 60
    event = await first_event(trigger_for(hook.create_query("select 1"), deadline=time.time() + 0.3))
    assert event["status"] == "timeout"
    assert "did not finish before the timeout" in event["message"]


async def test_trigger_resumes_after_a_restart_from_its_kwargs(
    hook: FakeHook, emulator: FakeEmulator
) -> None:
    query_id = hook.create_query("select 1")
    _, kwargs = trigger_for(query_id).serialize()
    # A new triggerer process: fresh caches, the trigger rebuilt from its kwargs.
    from airflow_provider_querytasks.common.transport.process_state import process_state

    process_state.reset()
    event = await first_event(FakeTrigger(**kwargs))
    assert event["status"] == "success" and event["query_id"] == query_id
    assert len(emulator.requests_to("api", "POST")) == 1


async def test_trigger_error_event_instead_of_a_crash(emulator: FakeEmulator) -> None:
    event = await first_event(trigger_for("missing"))
    assert event["status"] == "error"
    assert "no such query" in event["message"]


async def test_trigger_on_kill_cancels_the_remote_query(hook: FakeHook, emulator: FakeEmulator) -> None:
    emulator.duration = 60
    query_id = hook.create_query("select 1")
    try:
        await trigger_for(query_id).on_kill()
    finally:
        await close_shared_client_session()
    assert emulator.queries[query_id].cancelled
    assert len(emulator.requests_to("api", "DELETE")) == 1


async def test_trigger_on_kill_respects_cancel_on_kill_false(hook: FakeHook, emulator: FakeEmulator) -> None:
    emulator.duration = 60
    query_id = hook.create_query("select 1")
    await trigger_for(query_id, cancel_on_kill=False).on_kill()
    assert not emulator.queries[query_id].cancelled
