"""Adobe Query Service sensors against the emulator: query and scheduled-run sensors."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import RemoteQueryFailedError
from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.compat import PokeReturnValue
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.protocols.adobe_query_service import (
    AdobeQueryDefinition,
)
from airflow_provider_querytasks.sensors.adobe_query_service import (
    AdobeQuerySensor,
    AdobeScheduledQueryRunSensor,
)
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator

from .conftest import operator


def daily_schedule(hook: AdobeQueryServiceHook, sql: str) -> dict[str, Any]:
    """A new daily schedule of ``sql`` on ``prod:all``, as ``POST /schedules`` answered it."""
    query_def = AdobeQueryDefinition(sql=sql, db_name="prod:all").body()
    return hook.create_schedule(query_def, {"schedule": "@daily", "startDate": "2026-11-01T00:00:00Z"})


def test_schedules_runs_and_the_run_sensor(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    schedule = daily_schedule(hook, "SELECT 1 -- emulator: FAILED")
    assert schedule["state"] == "REGISTERING" and hook.get_schedule(schedule["id"])["state"] == "ENABLED"
    hook.set_schedule_enabled(schedule["id"], False)
    assert [s["state"] for s in hook.list_schedules()] == ["DISABLED"]
    emulator.duration = 30.0
    run_id = hook.trigger_run(schedule["id"], poll=0.05)
    assert run_id and hook.get_run(schedule["id"], run_id)["id"] == run_id
    sensor = AdobeScheduledQueryRunSensor(task_id="run", schedule_id=schedule["id"], run_id=run_id)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    emulator.clock.advance(31.0)
    with pytest.raises(RemoteQueryFailedError, match="58000"):
        sensor.poke({})  # type: ignore[arg-type]
    emulator.duration = 60.0
    second = hook.trigger_run(schedule["id"], poll=0.05)
    assert second and second != run_id
    hook.cancel_run(schedule["id"], second)
    # The spec's run states are SUCCESS, IN_PROGRESS and FAILED: a cancelled run reads FAILED.
    assert hook.get_run_status(schedule["id"], second).state is QueryState.FAILED


def test_a_trigger_takes_the_run_that_appeared_after_it_not_the_newest(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    schedule = daily_schedule(hook, "SELECT 1")["id"]
    emulator.run_delay = 0.0
    earlier = emulator.add_run(schedule)["id"]  # yesterday's manual run, the newest so far
    emulator.run_delay = 0.4  # the new run shows in the list a little after the 202
    run_id = hook.trigger_run(schedule, poll=0.05)
    created = [r for r in emulator.runs if r != earlier]
    assert run_id != earlier and [run_id] == created


def test_a_trigger_fails_when_several_runs_or_none_appear(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    schedule = daily_schedule(hook, "SELECT 1")["id"]
    emulator.run_delay = 0.3
    other = threading.Timer(0.05, emulator.add_run, args=(schedule,))  # another task's trigger
    other.start()
    with pytest.raises(RemoteQueryFailedError, match="2 runs appeared after the trigger"):
        hook.trigger_run(schedule, poll=0.05)
    other.join()
    # A 202 after which no run shows (within the bounded wait): a clear error, not a guess.
    emulator.inject(action="status", method="POST", path=r"/runs$", status=202, body={"statusCode": 202})
    with pytest.raises(RemoteQueryFailedError, match="no new manual run appeared within 0.5 s"):
        hook.trigger_run(schedule, poll=0.05, appear_timeout=0.5)


def test_query_sensor_returns_the_created_dataset(emulator: AdobeQueryServiceEmulator) -> None:
    submitted = operator(ctas_parameters={"datasetName": "out"}, wait_for_completion=False).execute({})  # type: ignore[arg-type]
    sensor = AdobeQuerySensor(task_id="s", query_id=submitted["query_id"], poll_interval=0.05)
    deadline = time.monotonic() + 10
    while (done := sensor.poke({})) is False and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.05)
    assert isinstance(done, PokeReturnValue)
    record: dict[str, Any] = done.xcom_value  # type: ignore[assignment]
    assert record["created_dataset_id"] in emulator.datasets
