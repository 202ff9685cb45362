"""Test-wide setup: a throwaway AIRFLOW_HOME and metadata DB, and clean process-wide caches."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Airflow reads its home at import time: set it before anything imports airflow.
_HOME = Path(os.environ.get("QUERYTASKS_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="querytasks-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault(
    "AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parent.parent / "example_dags")
)
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME / 'airflow.db'}")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated metadata DB (needed by ``dag.test()``); migrated once per test session."""
    marker = _HOME / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
        )
        marker.touch()
    return _HOME


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """Tokens and rate-limit buckets are process-wide: start every test without them."""
    from airflow_provider_querytasks.common.auth import token_cache
    from airflow_provider_querytasks.common.ratelimit import rate_limiters

    token_cache.clear()
    rate_limiters.reset()
    yield
    token_cache.clear()
    rate_limiters.reset()


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """``dag.test()`` for a DAG defined in a test module.

    Airflow 3 runs ``dag.test()`` only for DAGs it finds serialized in the metadata DB (normally
    by parsing the DAG bundles); a DAG built inside a test is written there first.
    """
    from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.collection import update_dag_parsing_results_in_db
        from airflow.serialization.serialized_objects import LazyDeserializedDAG
        from airflow.utils.session import create_session

        with create_session() as session:
            DagBundlesManager().sync_bundles_to_db(session=session)
            session.commit()
            update_dag_parsing_results_in_db(
                "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session
            )
    return dag.test(**kwargs)
