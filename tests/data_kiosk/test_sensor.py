"""Data Kiosk sensor against the emulator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from airflow_provider_querytasks.compat import PokeReturnValue
from airflow_provider_querytasks.operators.amazon_data_kiosk import (
    DataKioskDownloadDocumentOperator,
)
from airflow_provider_querytasks.sensors.amazon_data_kiosk import DataKioskQuerySensor
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator

from .conftest import operator


# -- sensor, other operators, notifications ----------------------------------------------------
def test_sensor_and_download_operator(emulator: DataKioskEmulator, tmp_path: Path) -> None:
    query_id = operator(wait_for_completion=False).execute({})["query_id"]  # type: ignore[arg-type]
    sensor = DataKioskQuerySensor(task_id="wait", query_id=query_id, poll_interval=0.05)
    deadline = time.monotonic() + 10
    while (done := sensor.poke({})) is False and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.05)
    assert isinstance(done, PokeReturnValue)
    record: dict[str, Any] = done.xcom_value  # type: ignore[assignment]
    fetched = DataKioskDownloadDocumentOperator(
        task_id="download", document_id=record["data_document_id"], destination=f"{tmp_path}/"
    ).execute({})  # type: ignore[arg-type]
    assert Path(fetched["uri"]).name == f"{record['data_document_id']}.jsonl" and fetched["rows"] == 5
