"""``execution_timeout`` ends a deferred wait (and cancels the query) as ``timeout`` does."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import QueryTimeoutError
from airflow_provider_querytasks.common.wait.deadline import wait_deadline
from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.testing.dags import run_dag

from ..common.fake_platform import FakeEmulator, FakeHook, FakeQueryOperator, FakeQuerySensor
from ..helpers import run_trigger


class StartedTI:
    """A task instance that started ``ago`` seconds before now."""

    def __init__(self, ago: float) -> None:
        self.try_number = 1
        self.start_date = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=ago)

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def started_context(ago: float) -> Any:
    return {"ti": StartedTI(ago)}


def test_the_earlier_limit_wins() -> None:
    ctx = {"ti": StartedTI(ago=600)}
    now = time.time()
    hour = dt.timedelta(hours=1)
    # try started 10 min ago, execution_timeout 1 h: 50 min left, before the 24 h timeout
    assert wait_deadline(ctx, 24 * 3600, hour, now) == pytest.approx(now + 3000, abs=2)
    # a 5 min timeout comes first
    assert wait_deadline(ctx, 300, hour, now) == pytest.approx(now + 300)
    assert wait_deadline(ctx, None, None, now) is None
    # no start date known: counted from now
    assert wait_deadline({}, None, hour, now) == pytest.approx(now + 3600)


def test_operator_defers_with_the_execution_timeout_deadline(emulator: FakeEmulator) -> None:
    op = FakeQueryOperator(
        task_id="q", sql="select 1", deferrable=True, execution_timeout=dt.timedelta(hours=1)
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(started_context(600))
    deadline = deferred.value.trigger.deadline  # type: ignore[attr-defined]
    assert deadline == pytest.approx(time.time() + 3000, abs=5)  # not the 24 h default timeout
    assert (deferred.value.kwargs or {})["deadline"] == deadline  # a resume keeps it, never recomputes it


def test_deferrable_sensor_defers_with_the_execution_timeout_deadline(emulator: FakeEmulator) -> None:
    query_id = FakeHook().create_query("select 1")
    sensor = FakeQuerySensor(
        task_id="s",
        query_id=query_id,
        deferrable=True,
        timeout=7 * 24 * 3600,
        execution_timeout=dt.timedelta(minutes=30),
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(started_context(60))
    deadline = deferred.value.trigger.deadline  # type: ignore[attr-defined]
    assert deadline == pytest.approx(time.time() + 1740, abs=5)


def test_a_passed_execution_timeout_ends_the_trigger_and_cancels_the_query(emulator: FakeEmulator) -> None:
    emulator.duration = 600
    op = FakeQueryOperator(
        task_id="q",
        sql="select 1",
        deferrable=True,
        poll_interval=0.05,
        timeout=dt.timedelta(seconds=30),  # bounds the test should the fix be missing
        execution_timeout=dt.timedelta(seconds=61),
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(started_context(60))
    started = time.monotonic()
    event = run_trigger(deferred.value.trigger)
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 15  # the try's 1 s left, not the 30 s timeout
    with pytest.raises(QueryTimeoutError):
        op.execute_complete({}, event, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert [q.cancelled for q in emulator.queries.values()] == [True]


def test_a_dag_task_with_a_short_execution_timeout_fails_and_cancels(
    airflow_db: Any, emulator: FakeEmulator
) -> None:
    """Through a real task run on each Airflow line: not the 24 h default ``timeout``."""
    from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import DAG
    else:
        from airflow import DAG

    emulator.duration = 3600
    with DAG(
        "core_execution_timeout", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False
    ) as dag:
        FakeQueryOperator(
            task_id="query",
            sql="select 1",
            deferrable=True,
            poll_interval=0.2,
            timeout=dt.timedelta(seconds=90),  # bounds the test should the fix be missing
            execution_timeout=dt.timedelta(seconds=3),
        )
    started = time.monotonic()
    run = run_dag(dag)
    elapsed = time.monotonic() - started
    state = str(run.get_task_instance("query").state).rsplit(".", 1)[-1].lower()
    assert state == "failed"
    assert elapsed < 60  # ended by the 3 s execution_timeout, not the 90 s timeout
    assert len(emulator.queries) == 1
    assert [q.cancelled for q in emulator.queries.values()] == [True]
