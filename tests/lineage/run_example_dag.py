"""Run one DAG of an example file with ``dag.test()``, in a process of its own.

The OpenLineage provider decides once per process (when Airflow loads its plugins) whether it is
on, from ``AIRFLOW__OPENLINEAGE__*``: the lineage tests run DAGs here, with a transport set,
so the rest of the test session runs without OpenLineage.

Usage: ``python -m tests.lineage.run_example_dag EXAMPLE_FILE DAG_VARIABLE LOGICAL_DATE``.
"""

from __future__ import annotations

import datetime as dt
import runpy
import sys

from airflow_provider_querytasks.testing.dags import run_dag


def main(example: str, variable: str, logical_date: str) -> int:
    namespace = runpy.run_path(example, run_name="example")
    run = run_dag(namespace[variable], logical_date=dt.datetime.fromisoformat(logical_date))
    state = str(run.state).rsplit(".", 1)[-1].lower()
    print(f"dag run state: {state}")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
