"""The benchmarks run at a tiny size: a smoke test of the scripts, never of the timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    [scale] = results["scale"]
    assert scale["succeeded"] == scale["waits"] and scale["polls"] >= scale["waits"]
    assert scale["bare_get_cpu_ms"] > 0 and "cpu_ratio_vs_bare" in scale
    assert [row["duration_s"] for row in results["economy"]] == [10.0, 300.0, 3600.0]
    # Measured over HTTP: per-wait polls in one run, list calls in the coalesced one.
    assert all(row["per_wait_calls"] >= row["waits"] > 0 for row in results["economy"])
    assert all(0 < row["coalesced_list_calls"] <= row["coalesced_calls"] for row in results["economy"])
    # More waits than getQuery's burst on one account, against an emulator enforcing Amazon's
    # usage plan: unpaced polls are answered 429 there (57 in a run with the limiter lifted).
    fairness = results["fairness"]
    assert fairness["waits_on_one_account"] == 20
    assert fairness["http_429"] == 0 and fairness["http_429_seen_by_client"] == 0
    assert [row["kind"] for row in results["download"]] == ["csv", "csv, gzip-encoded", "jsonl"]
    assert all(
        row["bytes"] > 1_000_000 and row["throughput_ratio_vs_curl"] > 0 for row in results["download"]
    )
    assert results["imports"][0]["ms"] is not None
    one_account, one_queue = results["multiprocess"]["one_account"], results["multiprocess"]["one_queue"]
    assert [row["triggerers"] for row in one_account] == [1, 2]
    assert all(row["succeeded"] == row["waits_on_one_account"] == 8 for row in one_account)
    assert one_queue["succeeded"] == one_queue["waits_on_one_queue"] == 6 and one_queue["worst_late_s"] >= 0
