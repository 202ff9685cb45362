"""Adobe Query Service sensors against the emulator: query and scheduled-run sensors."""

from __future__ import annotations

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


def test_schedules_runs_and_the_run_sensor(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    query_def = AdobeQueryDefinition(sql="SELECT 1 -- emulator: FAILED", db_name="prod:all").body()
    schedule = hook.create_schedule(query_def, {"schedule": "@daily", "startDate": "2026-11-01T00:00:00Z"})
    assert schedule["state"] == "REGISTERING" and hook.get_schedule(schedule["id"])["state"] == "ENABLED"
    hook.set_schedule_enabled(schedule["id"], False)
    assert [s["state"] for s in hook.list_schedules()] == ["DISABLED"]
    run_id = hook.trigger_run(schedule["id"])
    assert run_id and hook.get_run(schedule["id"], run_id)["id"] == run_id
    sensor = AdobeScheduledQueryRunSensor(task_id="run", schedule_id=schedule["id"], run_id=run_id)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    emulator.clock.advance(1.0)
    with pytest.raises(RemoteQueryFailedError, match="58000"):
        sensor.poke({})  # type: ignore[arg-type]
    emulator.duration = 60.0
    second = hook.trigger_run(schedule["id"])
    assert second and second != run_id
    hook.cancel_run(schedule["id"], second)
    assert hook.get_run_status(schedule["id"], second).state is QueryState.CANCELLED


def test_query_sensor_returns_the_created_dataset(emulator: AdobeQueryServiceEmulator) -> None:
    submitted = operator(ctas_parameters={"datasetName": "out"}, wait_for_completion=False).execute({})  # type: ignore[arg-type]
    sensor = AdobeQuerySensor(task_id="s", query_id=submitted["query_id"], poll_interval=0.05)
    deadline = time.monotonic() + 10
    while (done := sensor.poke({})) is False and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.05)
    assert isinstance(done, PokeReturnValue)
    record: dict[str, Any] = done.xcom_value  # type: ignore[assignment]
    assert record["created_dataset_id"] in emulator.datasets
