"""Benchmark 8: a SELECT's rows streamed to CSV by the Adobe SQL hook, beside ``psql \\copy``.

Both read the same table of the same throwaway PostgreSQL server, through the Adobe emulator's
PostgreSQL interface (its wire proxy: TLS, Query Service's limits, hence ``LIMIT 0``), in the
same run, in turns: ``psql -c "\\copy (SELECT ...) TO 'file' CSV
HEADER"`` (COPY protocol, the server formats the CSV) and
``AdobeQueryServiceSqlHook.export_rows`` with ``transfer="cursor"`` (the default: a server-side
cursor, ``FETCH`` 10,000 rows at a time, the next batch fetched on a helper thread while the CSV
of this one is written by Python, hashed and moved into place)
and with ``transfer="copy"`` (``COPY ... TO STDOUT``: the server writes the CSV). Figures: rows
per second (best of the runs, every run's ratio beside it), the RSS growth of the exporting
process during the export (sampled every 5 ms), and whether the three files are byte for byte
the same.

Every timed export runs in a process of its own (this file run as a script, ``psql`` or
``export`` mode, printing one JSON line), and PostgreSQL, the emulator and its wire proxy (an
asyncio thread of the process that started the emulator) stay in the parent: the hook's export
shares its interpreter (the GIL) with nobody, as psql does not. Each child asks for its own
connection parameters: the emulator makes the current IMS token the role's password, and a new
process gets a new token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import PeakRss, rss  # run.py is the script that runs this section

TABLE_SQL = """
CREATE TABLE bench_events AS
SELECT 'evt-' || lpad(i::text, 8, '0') AS event_id,
       timestamptz '2026-11-19 00:00:00+00' + i * interval '1 second' AS "timestamp",
       'ecid-' || (i % 99991) AS ecid,
       (ARRAY['home', 'product', 'cart', 'checkout', 'search'])[1 + i % 5] AS page_name,
       1 + i % 3 AS page_views,
       CASE WHEN i % 5 = 3 THEN round((i % 250)::numeric + 0.99, 2) END AS order_total
FROM generate_series(1, {rows}) AS i
"""
#: ``LIMIT 0``: Query Service's way to lift its 50,000-row default cap, which the emulator's
#: PostgreSQL interface enforces (its proxy sends PostgreSQL ``LIMIT ALL``).
SELECT = "SELECT * FROM bench_events LIMIT 0"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def adobe_sql_export(rows: int, repeats: int) -> dict[str, Any]:
    """Start PostgreSQL and the Adobe emulator, fill ``bench_events``, time both exports in turns,
    each export in a child process (:func:`child_main`)."""
    from airflow_provider_querytasks.testing import connection_env
    from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
    from airflow_provider_querytasks.testing.postgres import LocalPostgres

    with LocalPostgres() as postgres, tempfile.TemporaryDirectory() as folder:
        emulator = AdobeQueryServiceEmulator(sql_copy=True).start()  # transfer="copy" is measured too
        try:
            emulator.attach_postgres(postgres)
            with postgres.admin("prod:all") as cursor:
                cursor.execute(TABLE_SQL.format(rows=int(rows)))
                cursor.execute("ANALYZE bench_events")
                cursor.execute(f'GRANT SELECT ON bench_events TO "{emulator.org_id}"')
            env = {**os.environ, **dict([connection_env(emulator.sql_connection())])}
            psql = str(postgres.psql())
            out = Path(folder)
            # Warm-up of the server's caches: the table read once (each child warms itself up).
            in_child(env, "psql", psql, str(out / "warm.csv"))
            psql_runs: list[float] = []
            hook_runs: list[dict[str, Any]] = []
            copy_runs: list[dict[str, Any]] = []
            for _ in range(repeats):
                psql_file = out / "psql.csv"
                psql_runs.append(in_child(env, "psql", psql, str(psql_file))["seconds"])
                for transfer in ("cursor", "copy"):
                    runs = hook_runs if transfer == "cursor" else copy_runs
                    runs.append(in_child(env, "export", transfer, str(out / f"hook-{transfer}.csv")))
            psql_sha = sha256(psql_file)
            same = psql_sha == sha256(out / "hook-cursor.csv") == sha256(out / "hook-copy.csv")
            hook_file = out / "hook-cursor.csv"
            size = hook_file.stat().st_size
        finally:
            emulator.stop()
    if any(run["rows"] != rows for run in [*hook_runs, *copy_runs]):
        raise RuntimeError(f"an export did not write {rows} rows: {hook_runs} {copy_runs}")
    best_psql = min(psql_runs)
    best_hook = min(run["seconds"] for run in hook_runs)
    best_copy = min(run["seconds"] for run in copy_runs)
    return {
        "rows": rows,
        "csv_mib": round(size / 2**20, 1),
        "psql_copy_rows_per_s": round(rows / best_psql),
        "cursor_rows_per_s": round(rows / best_hook),
        "cursor_ratio_vs_psql": round(best_psql / best_hook, 2),
        "cursor_ratios_per_run": [
            round(p / h["seconds"], 2) for p, h in zip(psql_runs, hook_runs, strict=True)
        ],
        "cursor_rss_growth_mib": round(max(run["rss_growth_mib"] for run in hook_runs), 1),
        "copy_rows_per_s": round(rows / best_copy),
        "copy_ratio_vs_psql": round(best_psql / best_copy, 2),
        "copy_ratios_per_run": [
            round(p / h["seconds"], 2) for p, h in zip(psql_runs, copy_runs, strict=True)
        ],
        "copy_rss_growth_mib": round(max(run["rss_growth_mib"] for run in copy_runs), 1),
        "files_identical": same,
        "target": ">= 0.8x psql, <= 50 MiB",
        "postgres": str(postgres.bindir),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def in_child(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run this file as a child process (``args``: its mode and arguments); its JSON line."""
    done = subprocess.run(
        [sys.executable, __file__, *args],
        env={**env, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode:
        raise RuntimeError(f"the {args[0]} child failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def time_psql(psql: str, target: str) -> dict[str, Any]:
    """``psql \\copy`` of :data:`SELECT` to ``target``, logged in with this process's own token."""
    from airflow_provider_querytasks.hooks.adobe_query_service_sql import AdobeQueryServiceSqlHook

    env = {**os.environ, **psql_env(AdobeQueryServiceSqlHook().connection_parameters())}
    command = [psql, "-X", "-q", "-c", f"\\copy ({SELECT}) TO '{target}' WITH (FORMAT csv, HEADER)"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return {"seconds": time.perf_counter() - started}


def time_export(transfer: str, target: str) -> dict[str, Any]:
    """``export_rows`` of :data:`SELECT` to ``target`` after a warm-up (imports, the token, a
    1,000-row export), and this process's RSS growth meanwhile."""
    from airflow_provider_querytasks.hooks.adobe_query_service_sql import AdobeQueryServiceSqlHook

    hook = AdobeQueryServiceSqlHook()
    warm = Path(target).with_name(f"warm-{transfer}.csv")
    hook.export_rows("SELECT * FROM bench_events LIMIT 1000", warm, transfer=transfer)  # type: ignore[arg-type]
    before = rss()
    with PeakRss() as peak:
        started = time.perf_counter()
        record = hook.export_rows(SELECT, target, transfer=transfer)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_growth_mib": (peak.value - before) / 2**20, "rows": record["rows"]}


def child_main(argv: list[str]) -> int:
    """``adobe_sql.py psql PSQL TARGET`` or ``adobe_sql.py export TRANSFER TARGET``: one timed
    export, its figures printed as one JSON line (the connection comes from the environment)."""
    logging.disable(logging.WARNING)
    mode, first, target = argv
    result = time_psql(first, target) if mode == "psql" else time_export(first, target)
    print(json.dumps(result))
    return 0


def psql_env(params: dict[str, Any]) -> dict[str, str]:
    return {
        "PGHOST": str(params["host"]),
        "PGPORT": str(params["port"]),
        "PGUSER": str(params["user"]),
        "PGPASSWORD": str(params["password"]),
        "PGDATABASE": str(params["dbname"]),
        "PGSSLMODE": str(params["sslmode"]),
    }


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
