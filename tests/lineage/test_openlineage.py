"""Each example DAG, run against the emulators with the OpenLineage provider on (file transport),
emits COMPLETE events whose inputs are the remote queries and whose outputs are the fetched files
under their final names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "airflow.providers.openlineage",
    reason="the OpenLineage provider (the 'openlineage' extra) is not installed",
)

from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_dags"
LOGICAL_DATE = "2026-11-20T00:00:00+00:00"

Pair = tuple[str, str]


@pytest.fixture
def output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "out"
    monkeypatch.setenv("AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR", str(folder))
    monkeypatch.setenv("QUERYTASKS_EXAMPLE_POLL_SECONDS", "0.2")
    return folder


def run_with_lineage(example: str, variable: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run a DAG of an example file with OpenLineage on; return its COMPLETE events by task id."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        # Emit from a thread of the task process (not a fork): deterministic under pytest.
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "querytasks-tests",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.lineage.run_example_dag",
            str(EXAMPLES / example),
            variable,
            LOGICAL_DATE,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    assert all(".part" not in json.dumps(event) for event in events)
    complete: dict[str, dict[str, Any]] = {}
    for event in events:
        task_id = event["job"]["name"].partition(".")[2]
        if event["eventType"] == "COMPLETE" and task_id:
            complete[task_id] = event
    return complete


def datasets(event: dict[str, Any], kind: str) -> list[Pair]:
    return sorted((d["namespace"], d["name"]) for d in event.get(kind) or [])


def files_under(folder: Path, pattern: str) -> list[Pair]:
    return sorted(("file", str(path)) for path in folder.rglob(pattern) if path.is_file())


def test_adobe_example_reports_sql_tables_ctas_target_and_exported_files(
    airflow_db: Any, adobe_emulator: AdobeQueryServiceEmulator, output_dir: Path, tmp_path: Path
) -> None:
    events = run_with_lineage("example_adobe_query_service.py", "daily_ctas", tmp_path)
    settings = AdobeQueryServiceHook().settings
    namespace = f"adobe-experience-platform://{settings.org_id}"
    target = json.loads(adobe_emulator.requests_to("api", "POST", r"/queries$")[0].body)["ctasParameters"][
        "datasetName"
    ]
    ctas = events["daily_page_views"]
    # FROM web_events is read; the CTAS dataset (ctasParameters.datasetName) is written.
    assert datasets(ctas, "inputs") == [(namespace, f"{settings.sandbox}.web_events")]
    assert datasets(ctas, "outputs") == [(namespace, f"{settings.sandbox}.{target}")]
    assert "FROM web_events" in ctas["job"]["facets"]["sql"]["query"]
    export = events["export_page_views"]
    assert datasets(export, "inputs") == [(namespace, f"{settings.sandbox}.{target}")]
    parquet = files_under(output_dir, "*.parquet")
    assert len(parquet) == 2 and datasets(export, "outputs") == parquet


def test_data_kiosk_example_reports_the_queried_dataset_and_every_page_file(
    airflow_db: Any, data_kiosk_emulator: DataKioskEmulator, output_dir: Path, tmp_path: Path
) -> None:
    data_kiosk_emulator.pages = 2
    events = run_with_lineage("example_data_kiosk.py", "sales_and_traffic", tmp_path)
    query = events["sales_and_traffic_by_date"]
    account = DataKioskHook().settings.account
    assert datasets(query, "inputs") == [
        (f"amazon-sp-api://{account}", "analytics_salesAndTraffic_2024_04_24.salesAndTrafficByDate")
    ]
    pages = files_under(output_dir, "*.jsonl")
    assert [Path(name).name for _, name in pages] == ["page-0001.jsonl", "page-0002.jsonl"]
    assert datasets(query, "outputs") == pages


def test_shoplazza_examples_report_the_shop_events_and_every_csv(
    airflow_db: Any, shoplazza_emulator: ShoplazzaEmulator, output_dir: Path, tmp_path: Path
) -> None:
    namespace = f"shoplazza://{ShoplazzaHook().settings.shop}"
    daily = run_with_lineage("example_shoplazza.py", "daily", tmp_path / "daily")
    export = daily["export_purchases"]
    assert datasets(export, "inputs") == [(namespace, "realtime_events.purchase_product")]
    assert datasets(export, "outputs") == files_under(output_dir / "example_shoplazza_daily_export", "*.csv")

    backfill = run_with_lineage("example_shoplazza.py", "backfill", tmp_path / "backfill")
    folder = output_dir / "example_shoplazza_backfill_with_sensor"
    three_days = backfill["export_three_days"]
    assert datasets(three_days, "inputs") == [(namespace, "realtime_events.add_to_cart")]
    assert datasets(three_days, "outputs") == files_under(folder / "three_days", "*.csv")
    assert len(datasets(three_days, "outputs")) == 3
    # Submitted without waiting: the remote query is an input, nothing was written.
    submit = backfill["submit_pageviews"]
    assert datasets(submit, "inputs") == [(namespace, "realtime_events.pageview")]
    assert datasets(submit, "outputs") == []
    # A download by task id: the task does not report its event, only the shop's event table.
    download = backfill["download_pageviews"]
    assert datasets(download, "inputs") == [(namespace, "realtime_events")]
    assert datasets(download, "outputs") == files_under(folder / "pageviews", "*.csv")
