"""Each example DAG, run against the emulators with the OpenLineage provider on (file transport),
emits COMPLETE events whose inputs are the remote queries and whose outputs are the fetched files
under their final names."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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

from ..helpers import new_adobe_emulator, new_data_kiosk_emulator, new_shoplazza_emulator, serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_dags"
LOGICAL_DATE = "2026-11-20T00:00:00+00:00"

Pair = tuple[str, str]


#: The example DAGs run (``file:variable``), all in one process.
RUNS = (
    "example_adobe_query_service.py:daily_ctas",
    "example_data_kiosk.py:sales_and_traffic",
    "example_shoplazza.py:daily",
    "example_shoplazza.py:backfill",
)


@dataclass
class LineageRun:
    """The example DAGs' COMPLETE events by task id, where they wrote, and the emulators."""

    events: dict[str, dict[str, Any]]
    output: Path
    adobe: AdobeQueryServiceEmulator
    data_kiosk: DataKioskEmulator
    shoplazza: ShoplazzaEmulator


@pytest.fixture(scope="module")
def lineage(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LineageRun]:
    """Every example DAG of :data:`RUNS`, run once for the module with OpenLineage on (in one
    process: Airflow and the OpenLineage plugin load once), against emulators of its own."""
    folder = tmp_path_factory.mktemp("lineage")
    serving = contextlib.contextmanager(serve)
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.ExitStack() as stack:
        adobe = stack.enter_context(serving(new_adobe_emulator(), monkeypatch))
        data_kiosk = stack.enter_context(serving(new_data_kiosk_emulator(), monkeypatch))
        data_kiosk.pages = 2
        shoplazza = stack.enter_context(serving(new_shoplazza_emulator(), monkeypatch))
        output = folder / "out"
        monkeypatch.setenv("AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR", str(output))
        monkeypatch.setenv("QUERYTASKS_EXAMPLE_POLL_SECONDS", "0.2")
        events = run_with_lineage(RUNS, folder)
        yield LineageRun(events, output, adobe, data_kiosk, shoplazza)


def run_with_lineage(runs: tuple[str, ...], folder: Path) -> dict[str, dict[str, Any]]:
    """Run DAGs of example files with OpenLineage on; return their COMPLETE events by task id."""
    events_file = folder / "openlineage.jsonl"
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
            LOGICAL_DATE,
            *(str(EXAMPLES / run) for run in runs),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    assert all(".part" not in json.dumps(event) for event in events)
    complete: dict[str, dict[str, Any]] = {}
    for event in events:
        task_id = event["job"]["name"].partition(".")[2]
        if event["eventType"] == "COMPLETE" and task_id:
            assert task_id not in complete, f"two example DAGs have a task {task_id!r}"
            complete[task_id] = event
    return complete


def datasets(event: dict[str, Any], kind: str) -> list[Pair]:
    return sorted((d["namespace"], d["name"]) for d in event.get(kind) or [])


def files_under(folder: Path, pattern: str) -> list[Pair]:
    return sorted(("file", str(path)) for path in folder.rglob(pattern) if path.is_file())


def test_adobe_example_reports_sql_tables_ctas_target_and_exported_files(lineage: LineageRun) -> None:
    events, output_dir = lineage.events, lineage.output
    settings = AdobeQueryServiceHook().settings
    namespace = f"adobe-experience-platform://{settings.org_id}"
    target = json.loads(lineage.adobe.requests_to("api", "POST", r"/queries$")[0].body)["ctasParameters"][
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


def test_data_kiosk_example_reports_the_queried_dataset_and_every_page_file(lineage: LineageRun) -> None:
    events, output_dir = lineage.events, lineage.output
    query = events["sales_and_traffic_by_date"]
    account = DataKioskHook().settings.account
    assert datasets(query, "inputs") == [
        (f"amazon-sp-api://{account}", "analytics_salesAndTraffic_2024_04_24.salesAndTrafficByDate")
    ]
    pages = files_under(output_dir, "*.jsonl")
    assert [Path(name).name for _, name in pages] == ["page-0001.jsonl", "page-0002.jsonl"]
    assert datasets(query, "outputs") == pages


def test_shoplazza_examples_report_the_shop_events_and_every_csv(lineage: LineageRun) -> None:
    namespace = f"shoplazza://{ShoplazzaHook().settings.shop}"
    output_dir = lineage.output
    export = lineage.events["export_purchases"]
    assert datasets(export, "inputs") == [(namespace, "realtime_events.purchase_product")]
    assert datasets(export, "outputs") == files_under(output_dir / "example_shoplazza_daily_export", "*.csv")

    folder = output_dir / "example_shoplazza_backfill_with_sensor"
    three_days = lineage.events["export_three_days"]
    assert datasets(three_days, "inputs") == [(namespace, "realtime_events.add_to_cart")]
    assert datasets(three_days, "outputs") == files_under(folder / "three_days", "*.csv")
    assert len(datasets(three_days, "outputs")) == 3
    # Submitted without waiting: the remote query is an input, nothing was written.
    submit = lineage.events["submit_pageviews"]
    assert datasets(submit, "inputs") == [(namespace, "realtime_events.pageview")]
    assert datasets(submit, "outputs") == []
    # A download by task id: the task does not report its event, only the shop's event table.
    download = lineage.events["download_pageviews"]
    assert datasets(download, "inputs") == [(namespace, "realtime_events")]
    assert datasets(download, "outputs") == files_under(folder / "pageviews", "*.csv")
