"""Run every example DAG with ``dag.test()`` against the local emulators and report what happened.

Usage: ``python scripts/run_examples.py [--output DIR] [DAG_FILE ...]`` (``scripts/demo`` runs it).
It creates a throwaway ``AIRFLOW_HOME``, starts the three platform emulators on 127.0.0.1, points
the default connections at them through ``AIRFLOW_CONN_*`` variables (as a user would), runs each
DAG once, and prints per DAG: its state, the queries submitted, the status polls, and the files
fetched. Exits non-zero when a DAG run fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_dags"

#: How each emulator's request log shows a submission and a status poll: (site, method, path regex).
SUBMISSIONS = {
    "shoplazza": ("api", "GET", r"/data/query$"),
    "data_kiosk": ("api", "POST", r"/queries$"),
    "adobe": ("api", "POST", r"/queries$"),
}
POLLS = {
    "shoplazza": ("api", "GET", r"/data/task$"),
    "data_kiosk": ("api", "GET", r"/queries/[^/]+$"),
    "adobe": ("api", "GET", r"/queries/[^/]+$"),
}


def prepare_airflow_home(output: Path) -> Path:
    home = Path(tempfile.mkdtemp(prefix="querytasks-demo-airflow-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR": str(output),
            # The emulators finish queries in seconds: poll them every second.
            "QUERYTASKS_EXAMPLE_POLL_SECONDS": "1",
        }
    )
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return home


def start_emulators(sql: bool) -> dict[str, Any]:
    """Every emulator; with ``sql``, Adobe's also serves its PostgreSQL interface (a real,
    throwaway server: needs the ``adobe-sql`` extra)."""
    from airflow_provider_querytasks.testing import EMULATORS, connection_env, emulator_class

    emulators: dict[str, Any] = {}
    for name in EMULATORS:
        emulator = emulator_class(name)().start()
        connections = [emulator.connection()]
        if name == "adobe" and sql:
            from airflow_provider_querytasks.testing.postgres import LocalPostgres

            emulator.attach_postgres(LocalPostgres().start())  # type: ignore[attr-defined]
            connections.append(emulator.sql_connection())  # type: ignore[attr-defined]
        os.environ.update(connection_env(conn) for conn in connections)
        emulators[name] = emulator
        print(f"emulator {name:<11} {' '.join(f'{s}={u}' for s, u in emulator.urls.items())}")
    return emulators


def dags_in(path: Path) -> list[Any]:
    from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import DAG
    else:
        from airflow import DAG
    namespace = runpy.run_path(str(path), run_name=f"example_{path.stem}")
    return [value for value in namespace.values() if isinstance(value, DAG)]


def count(requests: list[Any], rule: tuple[str, str, str]) -> int:
    """How many recorded requests match (site, method, path regex)."""
    site, method, path_re = rule
    return sum(1 for r in requests if r.site == site and r.method == method and re.search(path_re, r.path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "out", help="where example DAGs write results")
    parser.add_argument("files", nargs="*", type=Path, help="DAG files (default: every example DAG)")
    args = parser.parse_args()
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    prepare_airflow_home(output)
    files = args.files or sorted(EXAMPLES.glob("example_*.py"))
    # PostgreSQL only for the DAGs that use Query Service's SQL interface.
    emulators = start_emulators(sql=any("adobe_query_service_sql" in path.read_text() for path in files))
    from airflow_provider_querytasks.testing.dags import run_dag

    logical_date = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    failures = 0
    rows = []
    try:
        for path in files:
            for dag in dags_in(path):
                before = {name: len(e.requests) for name, e in emulators.items()}
                files_before = {p for p in output.rglob("*") if p.is_file()}
                started = time.monotonic()
                run = run_dag(dag, logical_date=logical_date)
                seconds = time.monotonic() - started
                state = str(getattr(run, "state", "unknown")).rsplit(".", 1)[-1].lower()
                failures += state != "success"
                submitted = polled = 0
                for name, emulator in emulators.items():
                    new = emulator.requests[before[name] :]
                    submitted += count(new, SUBMISSIONS[name])
                    polled += count(new, POLLS[name])
                fetched = sorted(p for p in output.rglob("*") if p.is_file() and p not in files_before)
                rows.append((dag.dag_id, state, seconds, submitted, polled, fetched))
    finally:
        for emulator in emulators.values():
            emulator.stop()
            if getattr(emulator, "postgres", None) is not None:
                emulator.postgres.stop()
    print()
    print(f"{'dag':<40} {'state':<8} {'seconds':>7} {'submitted':>9} {'polls':>5}  fetched")
    for dag_id, state, seconds, submitted, polled, fetched in rows:
        names = ", ".join(f"{p.relative_to(output)} ({p.stat().st_size} B)" for p in fetched) or "-"
        print(f"{dag_id:<40} {state:<8} {seconds:>7.1f} {submitted:>9} {polled:>5}  {names}")
    print(f"\nresults under {output}")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
