"""Run DAGs of the example files with ``dag.test()``, one after another, in a process of their own.

The OpenLineage provider decides once per process (when Airflow loads its plugins) whether it is
on, from ``AIRFLOW__OPENLINEAGE__*``: the lineage tests run DAGs here, with a transport set,
so the rest of the test session runs without OpenLineage. One process runs them all: Airflow
and the OpenLineage plugin are loaded once.

Usage: ``python -m tests.lineage.run_example_dag LOGICAL_DATE EXAMPLE_FILE:DAG_VARIABLE...``.
"""

from __future__ import annotations

import datetime as dt
import runpy
import sys
from typing import Any

from airflow_provider_querytasks.testing.dags import run_dag


def main(logical_date: str, *dags: str) -> int:
    namespaces: dict[str, dict[str, Any]] = {}
    failed = 0
    for spec in dags:
        example, _, variable = spec.rpartition(":")
        if example not in namespaces:
            namespaces[example] = runpy.run_path(example, run_name="example")
        run = run_dag(namespaces[example][variable], logical_date=dt.datetime.fromisoformat(logical_date))
        state = str(run.state).rsplit(".", 1)[-1].lower()
        print(f"{spec}: dag run state: {state}")
        failed += state != "success"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
