"""Shoplazza sensor against the emulator."""

from __future__ import annotations

import time
from typing import Any

from airflow_provider_querytasks.compat import PokeReturnValue
from airflow_provider_querytasks.sensors.shoplazza import ShoplazzaDataTaskSensor
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from .conftest import export


def test_sensor_pokes_until_the_url_is_there(emulator: ShoplazzaEmulator) -> None:
    query_id = export(wait_for_completion=False).execute({})["query_id"]  # type: ignore[arg-type]
    sensor = ShoplazzaDataTaskSensor(task_id="wait", query_id=query_id, poll_interval=0.05)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while (done := sensor.poke({})) is False and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.05)
    assert isinstance(done, PokeReturnValue)
    record: dict[str, Any] = done.xcom_value  # type: ignore[assignment]
    assert record["query_id"] == query_id and record["status"] == "complete"
    assert "Signature" not in record["url"]
