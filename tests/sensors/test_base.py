"""The shared sensor (sensors/base.py): poke, defer, ``execution_timeout``, and a DAG of an operator
and a deferrable sensor."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.testing.dags import run_dag

from ..common.fake_platform import FakeEmulator, FakeHook, FakeQueryOperator, FakeQuerySensor, FakeTrigger
from ..helpers import run_trigger, started_context


def test_sensor_pokes_until_done(emulator: FakeEmulator) -> None:
    query_id = FakeHook().create_query("select 1")
    sensor = FakeQuerySensor(task_id="s", query_id=query_id, poll_interval=0.05)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    emulator.clock.advance(10)
    done = sensor.poke({})  # type: ignore[arg-type]
    assert not isinstance(done, bool)
    assert done.xcom_value["remote_status"] == "DONE"  # type: ignore[index]


def test_deferrable_sensor_defers_without_cancelling_on_kill(emulator: FakeEmulator) -> None:
    query_id = FakeHook().create_query("select 1")
    sensor = FakeQuerySensor(task_id="s", query_id=query_id, deferrable=True, poll_interval=0.05, timeout=60)
    emulator.clock.advance(10)  # already finished: the worker still makes no status call
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]
    assert emulator.requests_to("api", "GET", r"/queries/") == []
    assert deferred.value.trigger.cancel_on_kill is False  # type: ignore[attr-defined]
    event = run_trigger(deferred.value.trigger)  # type: ignore[arg-type]
    assert sensor.execute_complete({}, event)["remote_status"] == "DONE"  # type: ignore[arg-type]


def test_sensor_refuses_an_empty_query_id(emulator: FakeEmulator) -> None:
    with pytest.raises(InvalidInputError, match="query_id"):
        FakeQuerySensor(task_id="s", query_id=" ").poke({})  # type: ignore[arg-type]


@pytest.fixture
def trigger_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every trigger run (dag.test() runs triggers in process)."""
    runs: list[str] = []
    original = FakeTrigger.run

    async def recording_run(self: FakeTrigger) -> AsyncIterator[Any]:
        runs.append(self.query_id)
        async for event in original(self):
            yield event

    monkeypatch.setattr(FakeTrigger, "run", recording_run)
    return runs


def test_dag_submit_then_deferrable_sensor(
    airflow_db: Any, emulator: FakeEmulator, trigger_runs: list[str]
) -> None:
    from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import DAG
    else:
        from airflow import DAG

    with DAG("core_fake", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
        submit = FakeQueryOperator(
            task_id="submit", sql="select {{ 40 + 2 }}", deferrable=True, poll_interval=0.05
        )
        wait = FakeQuerySensor(
            task_id="wait",
            query_id="{{ ti.xcom_pull('submit', key='query_id') }}",
            deferrable=True,
            poll_interval=0.05,
        )
        submit >> wait
    run = run_dag(dag)
    assert str(run.state) in ("success", "DagRunState.SUCCESS")
    # Both tasks waited through the trigger, on the one query that was submitted.
    assert len(emulator.requests_to("api", "POST")) == 1
    assert emulator.requests_to("api", "POST")[0].body == b'{"sql": "select 42"}'
    assert len(trigger_runs) >= 1 and set(trigger_runs) == set(emulator.queries)


def test_deferrable_sensor_defers_with_the_execution_timeout_deadline(emulator: FakeEmulator) -> None:
    query_id = FakeHook().create_query("select 1")
    sensor = FakeQuerySensor(
        task_id="s",
        query_id=query_id,
        deferrable=True,
        timeout=7 * 24 * 3600,
        execution_timeout=dt.timedelta(minutes=30),
    )
    context = started_context(60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    deadline = deferred.value.trigger.deadline  # type: ignore[attr-defined]
    # The try's start + 30 min (29 min from now), not the 7-day timeout.
    assert deadline == pytest.approx(context["ti"].start_date.timestamp() + 1800)
