"""Bad input and missing rights fail the task once, without using its retries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import (
    InvalidInputError,
    PermissionDeniedError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.compat import AirflowFailException, BaseOperator, Context
from airflow_provider_querytasks.operators.base import FailWithoutRetryMixin, as_failure
from airflow_provider_querytasks.testing.dags import run_dag

from ..common.fake_platform import FakeEmulator, FakeQueryOperator


def test_invalid_input_is_an_airflow_fail_exception_and_still_an_invalid_input_error(
    emulator: FakeEmulator,
) -> None:
    op = FakeQueryOperator(task_id="q", sql="   ", poll_interval=0.05)
    with pytest.raises(AirflowFailException) as raised:
        op.execute({})  # type: ignore[arg-type]
    assert isinstance(raised.value, InvalidInputError)
    assert raised.value.parameter == "sql"
    assert "Invalid 'sql'" in str(raised.value)
    assert emulator.requests == []


def test_permission_denied_by_an_api_operation_does_not_retry_but_a_storage_403_does() -> None:
    api = PermissionDeniedError("createQuery failed with HTTP 403", operation="createQuery", status=403)
    failure = as_failure(api)
    assert isinstance(failure, AirflowFailException) and isinstance(failure, PermissionDeniedError)
    assert failure.status == 403 and failure.operation == "createQuery"
    # A presigned result URL refused by the storage host: a new try fetches a fresh URL.
    assert as_failure(PermissionDeniedError("Download failed with HTTP 403", status=403)) is None
    assert as_failure(RemoteQueryFailedError("query ended FAILED")) is None


def test_every_subclass_method_is_wrapped_even_when_overridden() -> None:
    class Standalone(FailWithoutRetryMixin, BaseOperator):
        def execute(self, context: Context) -> Any:
            raise InvalidInputError("path", "must be absolute")

    class Child(Standalone):
        def execute(self, context: Context) -> Any:
            return super().execute(context)

    for cls in (Standalone, Child):
        with pytest.raises(AirflowFailException, match="'path'"):
            cls(task_id=f"t_{cls.__name__}").execute({})  # type: ignore[arg-type]


# -- through a real task run: dag.test() applies retries as the scheduler would ---------------

TRIES: list[str] = []


class CountingOperator(FakeQueryOperator):
    def validate_inputs(self) -> None:
        TRIES.append(self.task_id)
        super().validate_inputs()


def _run(sql: str, retries: int) -> tuple[str, list[str]]:
    from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import DAG
    else:
        from airflow import DAG

    TRIES.clear()
    with DAG(
        f"no_retry_{retries}_{abs(hash(sql))}",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        catchup=False,
    ) as dag:
        CountingOperator(
            task_id="query",
            sql=sql,
            poll_interval=0.05,
            retries=retries,
            retry_delay=dt.timedelta(0),
        )
    run = run_dag(dag)
    state = str(run.get_task_instance("query").state)
    return state.rsplit(".", 1)[-1].lower(), list(TRIES)


def test_a_wrong_parameter_fails_once_with_three_retries(airflow_db: Any, emulator: FakeEmulator) -> None:
    state, tries = _run("   ", retries=3)
    assert state == "failed"
    assert tries == ["query"]
    assert emulator.requests == []


def test_a_failed_query_still_uses_its_retries(airflow_db: Any, emulator: FakeEmulator) -> None:
    # The same harness retries what a retry can fix: this is what the test above would see too
    # if bad input were retried.
    emulator.outcome = "FAILED"
    state, tries = _run("select 1", retries=2)
    assert state == "failed"
    assert tries == ["query"] * 3
