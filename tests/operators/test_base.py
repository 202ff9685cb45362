"""The shared submit-and-wait operator and sensor, directly and through ``dag.test()``."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import (
    InvalidInputError,
    QueryCancelledError,
    QueryTimeoutError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.operators.base import STATE_STORE_KEY
from airflow_provider_querytasks.testing.dags import run_dag

from ..common.fake_platform import FakeEmulator, FakeHook, FakeQueryOperator, FakeQuerySensor, FakeTrigger
from ..helpers import run_trigger


class FakeTI:
    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class FakeStore(dict):  # type: ignore[type-arg]
    def set(self, key: str, value: Any) -> None:
        self[key] = value


def ctx(**items: Any) -> Any:
    """A task context with only what a test needs."""
    return dict(items)


def operator(**kwargs: Any) -> FakeQueryOperator:
    return FakeQueryOperator(task_id="q", sql=kwargs.pop("sql", "select 1"), poll_interval=0.05, **kwargs)


def test_sync_wait_returns_the_subclass_record(emulator: FakeEmulator) -> None:
    ti = FakeTI()
    result = operator().execute(ctx(ti=ti))  # type: ignore[arg-type]
    assert result == {"query_id": ti.xcom["query_id"], "state": "DONE"}
    assert len(emulator.requests_to("api", "POST")) == 1


def test_deferrable_defers_with_an_absolute_deadline_then_completes(emulator: FakeEmulator) -> None:
    op = operator(deferrable=True, timeout=dt.timedelta(minutes=5))
    before = dt.datetime.now().timestamp()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx(ti=FakeTI()))  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, FakeTrigger)
    assert deferred.value.timeout is None  # the trigger owns the deadline
    assert before + 299 <= trigger.deadline <= before + 301  # type: ignore[operator]
    event = run_trigger(trigger)
    result = op.execute_complete({}, event, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert result["state"] == "DONE"


def test_failed_query_fails_the_task_with_the_remote_text(emulator: FakeEmulator) -> None:
    emulator.outcome = "FAILED"
    with pytest.raises(RemoteQueryFailedError, match="ended FAILED: Table users_2 does not exist"):
        operator().execute({})  # type: ignore[arg-type]


def test_failed_query_through_the_trigger_fails_the_same_way(emulator: FakeEmulator) -> None:
    emulator.outcome = "FAILED"
    op = operator(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    with pytest.raises(RemoteQueryFailedError, match="Table users_2 does not exist"):
        op.execute_complete({}, run_trigger(deferred.value.trigger), **deferred.value.kwargs)  # type: ignore[arg-type]


def test_cancelled_query_fails_unless_accepted(emulator: FakeEmulator) -> None:
    emulator.outcome = "CANCELLED"
    with pytest.raises(QueryCancelledError):
        operator().execute({})  # type: ignore[arg-type]


def test_timeout_raises_and_cancels_the_remote_query(emulator: FakeEmulator) -> None:
    emulator.duration = 60
    op = operator(timeout=0.3)
    with pytest.raises(QueryTimeoutError):
        op.execute({})  # type: ignore[arg-type]
    assert all(q.cancelled for q in emulator.queries.values())


def test_timeout_event_cancels_too(emulator: FakeEmulator) -> None:
    emulator.duration = 60
    op = operator(deferrable=True, timeout=0.3)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    event = run_trigger(deferred.value.trigger)
    assert event["status"] == "timeout"
    with pytest.raises(QueryTimeoutError):
        op.execute_complete({}, event, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert all(q.cancelled for q in emulator.queries.values())


def test_missing_event_is_a_clear_error(emulator: FakeEmulator) -> None:
    with pytest.raises(Exception, match="no event"):
        operator().execute_complete({}, None)  # type: ignore[arg-type]


def test_on_kill_cancels_the_current_query(emulator: FakeEmulator) -> None:
    emulator.duration = 60
    op = operator(deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute({})  # type: ignore[arg-type]
    op.on_kill()
    assert [q.cancelled for q in emulator.queries.values()] == [True]


def test_invalid_input_is_refused_before_any_call(emulator: FakeEmulator) -> None:
    with pytest.raises(InvalidInputError, match="sql"):
        operator(sql="   ").execute({})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="poll_interval"):
        FakeQueryOperator(task_id="x", sql="select 1", poll_interval=0)
    assert emulator.requests == []


def test_retry_reattaches_to_the_stored_live_query(emulator: FakeEmulator) -> None:
    emulator.duration = 1.0
    store = FakeStore()
    op = operator(deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(ctx(ti=FakeTI(1), task_state_store=store))  # type: ignore[arg-type]
    first_id = store[STATE_STORE_KEY]["query_id"]
    # The worker died; the retry finds the stored id and waits for the same query.
    result = operator().execute(ctx(ti=FakeTI(2), task_state_store=store))  # type: ignore[arg-type]
    assert result["query_id"] == first_id
    assert len(emulator.requests_to("api", "POST")) == 1


def test_retry_resubmits_when_the_stored_query_failed(emulator: FakeEmulator) -> None:
    emulator.outcome = "FAILED"
    store = FakeStore()
    with pytest.raises(RemoteQueryFailedError):
        operator().execute(ctx(ti=FakeTI(1), task_state_store=store))  # type: ignore[arg-type]
    emulator.outcome = "DONE"
    result = operator().execute(ctx(ti=FakeTI(2), task_state_store=store))  # type: ignore[arg-type]
    assert result["state"] == "DONE"
    assert len(emulator.requests_to("api", "POST")) == 2


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
