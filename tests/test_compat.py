"""The compat layer resolves every name on the running Airflow line (2.11, 3.0, 3.1, 3.2, 3.3)."""

from __future__ import annotations

import datetime as dt
import importlib
import uuid
from pathlib import Path

import pytest
from packaging.version import Version

from airflow_provider_querytasks import compat, version_compat


def test_version_flags_follow_the_installed_airflow() -> None:
    from airflow import __version__

    installed = Version(Version(__version__).base_version)
    assert installed == version_compat.AIRFLOW_VERSION
    assert version_compat.AIRFLOW_V_3_0_PLUS is (installed.major >= 3)
    assert version_compat.AIRFLOW_V_3_1_PLUS is (installed >= Version("3.1.0"))
    assert version_compat.AIRFLOW_V_3_2_PLUS is (installed >= Version("3.2.0"))
    assert version_compat.AIRFLOW_V_3_3_PLUS is (installed >= Version("3.3.0"))
    assert compat.TRIGGER_ON_KILL_SUPPORTED is version_compat.AIRFLOW_V_3_3_PLUS


@pytest.mark.parametrize("name", compat.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(compat, name) is not None


def test_base_classes_come_from_the_lines_own_location() -> None:
    if version_compat.AIRFLOW_V_3_0_PLUS:
        import airflow.sdk as sdk

        assert compat.BaseOperator is sdk.BaseOperator
        assert compat.BaseSensorOperator is sdk.BaseSensorOperator
        if hasattr(sdk, "BaseHook"):  # 3.1+
            assert compat.BaseHook is sdk.BaseHook
        else:  # 3.0 keeps the hook base class in core
            assert compat.BaseHook is importlib.import_module("airflow.hooks.base").BaseHook
    else:
        assert compat.BaseOperator is importlib.import_module("airflow.models.baseoperator").BaseOperator
        assert compat.BaseHook is importlib.import_module("airflow.hooks.base").BaseHook


def test_a_masked_secret_is_redacted_and_other_text_is_not() -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    assert compat.redact(f"token {secret} end") == f"token {secret} end"
    compat.mask_secret(secret)
    assert compat.redact(f"token {secret} end") == "token *** end"
    assert compat.redact("nothing secret here") == "nothing secret here"


def test_write_dag_to_db_makes_the_dag_known_to_the_metadata_db(airflow_db: Path) -> None:
    if not version_compat.AIRFLOW_V_3_0_PLUS:
        pytest.skip("Airflow 2 runs dag.test() on an unserialized DAG")
    from airflow.models.dag import DagModel
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    dag_id = f"compat_write_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
        pass
    compat.write_dag_to_db(dag)
    with create_session() as session:
        model = session.get(DagModel, dag_id)
        assert model is not None
        assert SerializedDagModel.has_dag(dag_id, session=session)


def test_mask_secret_masks_even_when_the_supervisor_cannot_be_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trigger on the triggerer's event loop: the sync supervisor channel refuses (3.0-3.1)."""
    if not version_compat.AIRFLOW_V_3_0_PLUS:
        pytest.skip("Airflow 2 has no supervisor channel")
    from airflow.sdk.execution_time import task_runner

    class EventLoopChannel:
        def send(self, msg: object) -> object:
            raise RuntimeError("You cannot use AsyncToSync in the same thread as an async event loop")

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", EventLoopChannel(), raising=False)
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    compat.mask_secret(secret)
    assert compat.redact(f"token {secret}") == "token ***"
