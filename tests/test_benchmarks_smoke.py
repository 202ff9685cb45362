"""The benchmarks run at a tiny size: a smoke test of the scripts, never of the timings."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_runs_and_reports_its_baseline(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    # --quick runs: 30 waits (scale), 20 (economy, fairness), 2 MiB downloads, 8 waits in 1 then 2
    # triggerers, 6 waits on one queue. Every figure below is measured: it must be a number
    # that a broken benchmark would not give (no timing is asserted: these are smoke runs).
    [scale] = results["scale"]
    assert scale["waits"] == 30 and scale["succeeded"] == scale["waits"] and scale["polls"] >= scale["waits"]
    assert measured(scale["wall_s"]) and measured(scale["cpu_ms_per_poll"])
    assert measured(scale["bare_get_cpu_ms"]) and measured(scale["cpu_ratio_vs_bare"])
    assert [row["duration_s"] for row in results["economy"]] == [10.0, 300.0, 3600.0]
    # Measured over HTTP: per-wait polls in one run, list calls in the coalesced one; --quick
    # runs 5 waits on each of 2 Shoplazza and 2 Adobe accounts.
    assert all(row["per_wait_calls"] >= row["waits"] == 20 for row in results["economy"])
    assert all(0 < row["coalesced_list_calls"] <= row["coalesced_calls"] for row in results["economy"])
    # More waits than getQuery's burst on one account, against an emulator enforcing Amazon's
    # usage plan: unpaced polls are answered 429 there (57 in a run with the limiter lifted).
    # Coalesced polling, then per-wait polling (the baseline), each against a fresh emulator.
    fairness = results["fairness"]
    assert [row["polling"] for row in fairness] == ["coalesced", "per wait (baseline)"]
    for row in fairness:
        assert row["waits_on_one_account"] == 20
        # Each wait sees its query done after the emulator finished it: lateness is >= 0, the
        # worst no less than the median, the last sighting no earlier than the last completion.
        assert 0 <= row["median_seen_after_completion_s"] <= row["worst_seen_after_completion_s"]
        assert row["all_seen_after_s"] >= row["last_query_done_at_s"] > 0
        assert row["http_429"] == 0 and row["http_429_seen_by_client"] == 0
    assert fairness[0]["getQueries_calls"] >= 1 and fairness[1]["getQueries_calls"] == 0
    download = results["download"]
    assert [row["kind"] for row in download] == ["csv", "csv, gzip-encoded", "jsonl"]
    for row in download:
        assert row["bytes"] > 1_000_000 and row["runs"] == len(row["run_ratios"]) == 1
        assert measured(row["throughput_ratio_vs_curl"]) and measured(row["curl_mib_s"])
        assert measured(row["ours_mib_s"])
    assert download[0]["bytes"] == download[1]["bytes"]  # the gzip-encoded CSV, decoded, is the CSV
    imports = results["imports"]
    assert imports[0]["import"] == "this provider (all operators and sensors)" and measured(imports[0]["ms"])
    assert imports[-1]["import"] == "target"
    # A baseline is measured, or says it is not installed (--quick installs nothing).
    assert all(
        measured(row["ms"]) or row["note"] == "not installed in this environment" for row in imports[1:-1]
    )
    one_account, one_queue = results["multiprocess"]["one_account"], results["multiprocess"]["one_queue"]
    assert [row["triggerers"] for row in one_account] == [1, 2]
    assert all(row["succeeded"] == row["waits_on_one_account"] == 8 for row in one_account)
    assert all(measured(row["last_completion_s"]) for row in one_account)
    assert one_queue["triggerers"] == 2
    assert one_queue["succeeded"] == one_queue["waits_on_one_queue"] == 6
    assert (
        math.isfinite(one_queue["worst_late_s"])
        and 0 <= one_queue["median_late_s"] <= one_queue["worst_late_s"]
    )


def measured(value: Any) -> bool:
    """A measured figure: a finite number above zero (not None, NaN, infinity, zero or a text)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
