"""Shoplazza operators against the emulator, directly and through the example DAGs."""

from __future__ import annotations

import datetime as dt
import itertools
import runpy
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.operators.shoplazza import (
    ShoplazzaDownloadResultOperator,
    split_window_kwargs,
)
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from ..helpers import run_trigger
from .conftest import export

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_shoplazza.py"


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"event": "purchase"}, "event"),
        ({"end_time": "2026-11-19T00:00:00"}, "end_time"),
        ({"begin_time": "yesterday"}, "begin_time"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"end_time": "2026-11-23T00:00:00", "destination": "/tmp/one-file.csv"}, "destination"),
        ({"destination": "/tmp/x/", "wait_for_completion": False}, "destination"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    emulator: ShoplazzaEmulator, kwargs: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"'{parameter}'"):
        export(**kwargs).execute({})  # type: ignore[arg-type]
    assert emulator.requests == []


def test_three_days_are_three_sequential_tasks_and_three_files(
    emulator: ShoplazzaEmulator, tmp_path: Path
) -> None:
    result = export(end_time="2026-11-23T00:00:00", destination=f"{tmp_path}/out/").execute({})  # type: ignore[arg-type]
    created = emulator.requests_to("api", "GET", r"/data/query$")
    assert [(r.param("beginTime"), r.param("endTime")) for r in created] == [
        ("2026-11-20T00:00:00", "2026-11-21T00:00:00"),
        ("2026-11-21T00:00:00", "2026-11-22T00:00:00"),
        ("2026-11-22T00:00:00", "2026-11-23T00:00:00"),
    ]
    # Each window was complete before the next was created (sequential, not parallel).
    for earlier, later in itertools.pairwise(created):
        polls = [
            r for r in emulator.requests_to("api", "GET", r"/data/task$") if earlier.at < r.at < later.at
        ]
        assert polls, "the next window was created before the previous one was waited for"
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [
        "purchase_product_20261120T000000_20261121T000000.csv",
        "purchase_product_20261121T000000_20261122T000000.csv",
        "purchase_product_20261122T000000_20261123T000000.csv",
    ]
    assert result["window"] == {
        "begin": "2026-11-20T00:00:00",
        "end": "2026-11-23T00:00:00",
        "begin_at": "2026-11-20T00:00:00-05:00",  # the shop reports -0500 (the emulator's zone)
        "end_at": "2026-11-23T00:00:00-05:00",
        "timezone": "-05:00",
    }
    assert [w["status"] for w in result["windows"]] == ["complete"] * 3
    assert all(w["fetch"]["rows"] == 20 and "?" not in w["url"] for w in result["windows"])
    assert "query_id" not in result  # only a single window is flattened


def test_aware_times_are_sent_in_the_shop_time_zone(emulator: ShoplazzaEmulator) -> None:
    emulator.shop_timezone = "Asia/Shanghai"
    result = export(
        begin_time=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc),
        end_time="2026-11-21T00:00:00+00:00",
        timezone="Asia/Shanghai",
    ).execute({})  # type: ignore[arg-type]
    created = emulator.requests_to("api", "GET", r"/data/query$")[0]
    assert (created.param("beginTime"), created.param("endTime")) == (
        "2026-11-20T08:00:00",
        "2026-11-21T08:00:00",
    )
    assert result["query_id"] in emulator.tasks and result["fetch"] is None


def test_without_waiting_every_window_is_submitted(emulator: ShoplazzaEmulator) -> None:
    result = export(end_time="2026-11-22T12:00:00", wait_for_completion=False).execute({})  # type: ignore[arg-type]
    assert result["status"] == "submitted"
    assert [w["window"]["end"] for w in result["windows"]] == [
        "2026-11-21T00:00:00",
        "2026-11-22T00:00:00",
        "2026-11-22T12:00:00",
    ]
    assert {w["query_id"] for w in result["windows"]} == set(emulator.tasks)
    assert emulator.requests_to("api", "GET", r"/data/task$") == []


@pytest.mark.parametrize("with_kwargs", [True, False], ids=["triggerer", "dag.test-event-only"])
def test_deferred_split_resumes_window_after_window(
    emulator: ShoplazzaEmulator, tmp_path: Path, with_kwargs: bool
) -> None:
    op = export(end_time="2026-11-22T00:00:00", destination=f"{tmp_path}/", deferrable=True)
    step: Any = lambda: op.execute({})  # noqa: E731
    for _ in range(2):
        with pytest.raises(TaskDeferred) as deferred:
            step()
        event = run_trigger(deferred.value.trigger)
        kwargs = deferred.value.kwargs if with_kwargs else {}
        step = lambda event=event, kwargs=kwargs: op.execute_complete({}, event, **kwargs)  # type: ignore[misc]  # noqa: E731
    result = step()
    assert len(result["windows"]) == 2 and len(list(tmp_path.iterdir())) == 2
    assert len(emulator.tasks) == 2


def test_download_operator_names_the_file_after_the_task(emulator: ShoplazzaEmulator, tmp_path: Path) -> None:
    query_id = export().execute({})["query_id"]  # type: ignore[arg-type]
    record = ShoplazzaDownloadResultOperator(
        task_id="download", query_id=query_id, destination=f"{tmp_path}/"
    ).execute({})  # type: ignore[arg-type]
    assert Path(record["uri"]).name == f"{query_id}.csv" and record["rows"] == 20
    with pytest.raises(InvalidInputError, match="query_id"):
        ShoplazzaDownloadResultOperator(task_id="d", query_id=" ", destination=f"{tmp_path}/").execute({})  # type: ignore[arg-type]


def test_example_dags_run_end_to_end(
    airflow_db: Any, emulator: ShoplazzaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("QUERYTASKS_EXAMPLE_POLL_SECONDS", "0.2")
    namespace = runpy.run_path(str(EXAMPLE), run_name="example_shoplazza")
    for name in ("daily", "backfill"):
        run = run_dag(namespace[name], logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
        assert str(run.state).rsplit(".", 1)[-1].lower() == "success", name
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 5, files
    assert any(f.startswith("example_shoplazza_daily_export/") and "purchase_product_" in f for f in files)
    assert sum("three_days/add_to_cart_" in f for f in files) == 3
    assert any("pageviews/" in f for f in files)
    # No partial download left behind, and every file is a whole CSV.
    assert all(not f.endswith(".part") for f in files)
    assert all((tmp_path / f).read_bytes().count(b"\n") == 21 for f in files)


def test_split_window_kwargs_feed_mapped_operators(emulator: ShoplazzaEmulator) -> None:
    emulator.shop_timezone = "Asia/Shanghai"
    kwargs = split_window_kwargs(
        dt.datetime(2026, 11, 20, 16, tzinfo=dt.timezone.utc),
        "2026-11-22T04:00:00+00:00",
        timezone="Asia/Shanghai",
    )
    assert kwargs == [
        {"begin_time": "2026-11-21T00:00:00+08:00", "end_time": "2026-11-22T00:00:00+08:00"},
        {"begin_time": "2026-11-22T00:00:00+08:00", "end_time": "2026-11-22T12:00:00+08:00"},
    ]
    # Each mapped instance sends its window's instants (the times carry their offsets).
    for item in kwargs:
        export(timezone="Asia/Shanghai", wait_for_completion=False, **item).execute({})  # type: ignore[arg-type]
    sent = [
        (r.param("beginTime"), r.param("endTime"))
        for r in emulator.requests_to("api", "GET", r"/data/query$")
    ]
    assert sent == [(k["begin_time"][:19], k["end_time"][:19]) for k in kwargs]
    with pytest.raises(InvalidInputError, match="end_time"):
        split_window_kwargs("2026-11-22", "2026-11-21")
