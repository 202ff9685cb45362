"""Run a DAG once in-process with ``dag.test()``, on Airflow 2.11 and 3.x alike.

DAG authors can test their own DAGs against the emulators with it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)``, after writing the DAG to the metadata DB where Airflow needs it.

    Airflow 3 runs ``dag.test()`` only for DAGs it finds serialized in the metadata DB (normally
    by parsing the DAG bundles); a DAG built in a test or loaded from a file is written there
    first. The metadata DB must be migrated (``airflow db migrate``). ``logical_date`` is passed
    as ``execution_date`` on Airflow 2.
    """
    if AIRFLOW_V_3_0_PLUS:
        from airflow_provider_querytasks.compat import write_dag_to_db

        write_dag_to_db(dag)
    else:
        if "logical_date" in kwargs:
            kwargs["execution_date"] = kwargs.pop("logical_date")
        # dag.test() replaces an earlier run of the same date; deleting it walks dag_run_note's
        # foreign key to the FAB user table, which must then be known to SQLAlchemy.
        with contextlib.suppress(ImportError):
            import airflow.providers.fab.auth_manager.models  # noqa: F401
    return dag.test(**kwargs)
