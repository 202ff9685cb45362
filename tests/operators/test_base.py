"""The shared operator (operators/base.py): submit and wait, defer, fail, cancel, re-attach on a
retry (``durable``), fail without retry on bad input, chains of queries, ``execution_timeout``;
directly and through ``dag.test()``."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import (
    InvalidInputError,
    PermissionDeniedError,
    QueryCancelledError,
    QueryTimeoutError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.compat import AirflowFailException, BaseOperator, Context, TaskDeferred
from airflow_provider_querytasks.operators.base import (
    STATE_STORE_KEY,
    FailWithoutRetryMixin,
    QueryChain,
    as_failure,
)
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_3_PLUS

from ..common.fake_platform import FakeApi, FakeEmulator, FakeQueryOperator, FakeTrigger
from ..helpers import run_trigger, started_context


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
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx(ti=FakeTI()))  # type: ignore[arg-type]
    after = time.time()
    trigger = deferred.value.trigger
    assert isinstance(trigger, FakeTrigger)
    assert deferred.value.timeout is None  # the trigger owns the deadline
    # 5 min from when execute() ran (between before and after, however long it took).
    assert trigger.deadline is not None and before + 300 <= trigger.deadline <= after + 300
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


# -- durable: re-attach follows Airflow 3.3's ResumableJobMixin (its store key and metrics) ------
@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    counted: list[tuple[str, dict[str, Any]]] = []
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.observability.stats import Stats

        monkeypatch.setattr(
            Stats, "incr", lambda stat, *args, tags=None, **kwargs: counted.append((stat, dict(tags or {})))
        )
    return counted


def test_durable_is_the_parameter_airflow_names_it() -> None:
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk import ResumableJobMixin

        assert "durable" in inspect.signature(ResumableJobMixin.__init__).parameters
        assert ResumableJobMixin.external_id_key  # the attribute the operator also defines
    assert operator().durable is True
    assert operator(durable=False).durable is False
    assert operator().external_id_key == STATE_STORE_KEY


def test_a_retry_reconnects_and_counts_it_on_3_3(
    emulator: FakeEmulator, metrics: list[tuple[str, dict[str, Any]]]
) -> None:
    emulator.duration = 1.0
    store = FakeStore()
    with pytest.raises(TaskDeferred):
        operator(deferrable=True).execute(ctx(ti=FakeTI(1), task_state_store=store))
    result = operator().execute(ctx(ti=FakeTI(2), task_state_store=store))
    assert len(emulator.requests_to("api", "POST")) == 1
    assert result["query_id"] == store[STATE_STORE_KEY]["query_id"]
    if AIRFLOW_V_3_3_PLUS:
        tags = {"operator": "FakeQueryOperator"}
        assert metrics == [
            ("resumable_job.fresh_submit", tags),
            ("resumable_job.reconnect_attempt", tags),
            ("resumable_job.reconnect_success", tags),
        ]
    else:
        assert metrics == []


def test_not_durable_submits_again_on_a_retry(emulator: FakeEmulator) -> None:
    store = FakeStore()
    operator().execute(ctx(ti=FakeTI(1), task_state_store=store))
    operator(durable=False).execute(ctx(ti=FakeTI(2), task_state_store=store))
    assert len(emulator.requests_to("api", "POST")) == 2


# -- bad input and missing rights fail the task once, without using its retries -------------------
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


# -- a chain of queries (Shoplazza windows, Data Kiosk pages) is a loop, in the worker and deferred
#: Longer than the interpreter's recursion limit: a chain that nests a call per query dies.
STEPS = 1_000


class FakeChainOperator(FakeQueryOperator):
    """Runs ``steps`` queries one after another, as a chain (``select 1``, ``select 2``...)."""

    def __init__(self, *, steps: int, **kwargs: Any) -> None:
        super().__init__(sql="select 1", **kwargs)
        self.steps = steps

    def validate_inputs(self) -> None:
        self.resume_state = {}

    def _submit_step(self, step: int) -> str:
        query_id = self.hook.create_query(f"select {step}")  # type: ignore[attr-defined]
        self.chain.submitted(query_id, step=step)
        return str(query_id)

    def submit(self, context: Context) -> str:
        return self._submit_step(len(self.chain.records) + 1)

    def next_query(self, context: Context, snapshot: StatusSnapshot) -> str | None:
        step = self.chain.step_of(snapshot.query_id)["step"]
        done = self.chain.add_record({"query_id": snapshot.query_id, "step": step})
        return self._submit_step(done + 1) if done < self.steps else None

    def on_query_finished(self, context: Context, snapshot: StatusSnapshot) -> Any:
        return {"last": snapshot.query_id, "steps": self.chain.records}


class JsonStore:
    """Airflow 3.3's ``task_state_store`` as a retry sees it: a JSON copy taken at ``set``."""

    def __init__(self) -> None:
        self.saved: dict[str, str] = {}

    def set(self, key: str, value: Any) -> None:
        self.saved[key] = json.dumps(value)

    def get(self, key: str) -> Any:
        return json.loads(self.saved[key]) if key in self.saved else None


@pytest.fixture
def instant(emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch) -> FakeEmulator:
    """Queries done at their first poll, and no client-side rate limit to wait for."""
    emulator.duration = 0
    monkeypatch.setattr(FakeApi, "rate_limits", {})
    return emulator


def chain_operator(steps: int, **kwargs: Any) -> FakeChainOperator:
    return FakeChainOperator(task_id="chain", steps=steps, poll_interval=0.001, **kwargs)


def check_result(result: dict[str, Any], emulator: FakeEmulator, steps: int) -> None:
    assert [record["step"] for record in result["steps"]] == list(range(1, steps + 1))
    # One submission per step, in order, and each step's record names its own query.
    posted = [json.loads(request.body)["sql"] for request in emulator.requests_to("api", "POST")]
    assert posted == [f"select {step}" for step in range(1, steps + 1)]
    assert [record["query_id"] for record in result["steps"]] == list(emulator.queries)
    assert result["last"] == result["steps"][-1]["query_id"]


def test_a_chain_longer_than_the_recursion_limit_runs_in_the_worker(instant: FakeEmulator) -> None:
    assert sys.getrecursionlimit() < STEPS * 2
    result = chain_operator(STEPS).execute({})  # type: ignore[arg-type]
    check_result(result, instant, STEPS)


def test_a_chain_of_a_thousand_steps_runs_deferred(instant: FakeEmulator) -> None:
    op = chain_operator(STEPS, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    for _ in range(STEPS - 1):
        event, kwargs = run_trigger(deferred.value.trigger), deferred.value.kwargs
        # Each step defers again with the chain so far; the next query waits in the triggerer.
        with pytest.raises(TaskDeferred) as deferred:
            op.execute_complete({}, event, **kwargs)  # type: ignore[arg-type]
    result = op.execute_complete({}, run_trigger(deferred.value.trigger), **deferred.value.kwargs)  # type: ignore[arg-type]
    check_result(result, instant, STEPS)


def test_dag_test_style_resume_carries_the_chain_in_the_event(instant: FakeEmulator) -> None:
    # dag.test() resumes with the event alone: the chain travels in the trigger's echo.
    op = chain_operator(3, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    for _ in range(2):
        event = run_trigger(deferred.value.trigger)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute_complete({}, event)  # type: ignore[arg-type]
    result = op.execute_complete({}, run_trigger(deferred.value.trigger))  # type: ignore[arg-type]
    check_result(result, instant, 3)


def test_a_retry_mid_chain_reattaches_and_keeps_the_finished_steps(instant: FakeEmulator) -> None:
    store = JsonStore()
    first_try = chain_operator(5, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        first_try.execute(ctx(ti=FakeTI(1), task_state_store=store))  # type: ignore[arg-type]
    for _ in range(2):
        event, kwargs = run_trigger(deferred.value.trigger), deferred.value.kwargs
        with pytest.raises(TaskDeferred) as deferred:
            first_try.execute_complete(ctx(task_state_store=store), event, **kwargs)  # type: ignore[arg-type]
    # The worker dies while step 3 runs; the retry picks the chain up at step 3.
    assert [r["step"] for r in store.get(STATE_STORE_KEY)["resume_state"]["chain"]["records"]] == [1, 2]
    result = chain_operator(5).execute(ctx(ti=FakeTI(2), task_state_store=store))  # type: ignore[arg-type]
    check_result(result, instant, 5)


def test_a_retry_after_a_failed_step_starts_the_chain_again(instant: FakeEmulator) -> None:
    store = JsonStore()
    first_try = chain_operator(3, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        first_try.execute(ctx(ti=FakeTI(1), task_state_store=store))  # type: ignore[arg-type]
    event = run_trigger(deferred.value.trigger)
    with pytest.raises(TaskDeferred):
        first_try.execute_complete(ctx(task_state_store=store), event)  # type: ignore[arg-type]
    instant.queries[store.get(STATE_STORE_KEY)["query_id"]].outcome = "FAILED"
    result = chain_operator(3).execute(ctx(ti=FakeTI(2), task_state_store=store))  # type: ignore[arg-type]
    # Steps 1 and 2 of the first try, then the whole chain again.
    assert [record["step"] for record in result["steps"]] == [1, 2, 3]
    assert len(instant.requests_to("api", "POST")) == 2 + 3


def test_chain_state_lives_in_the_resume_state() -> None:
    resume_state: dict[str, Any] = {"windows": ["kept"]}
    chain = QueryChain(resume_state)
    chain.submitted("q1", window={"begin": "a"})
    assert chain.step_of("q1") == {"window": {"begin": "a"}} and chain.step_of("q2") == {}
    assert chain.add_record({"query_id": "q1"}) == 1
    assert json.loads(json.dumps(resume_state)) == {
        "windows": ["kept"],
        "chain": {"records": [{"query_id": "q1"}], "current": {"query_id": "q1", "window": {"begin": "a"}}},
    }
    assert QueryChain(resume_state).records == [{"query_id": "q1"}]


# -- execution_timeout ends a deferred wait (and cancels the query) as timeout does -------------
def test_operator_defers_with_the_execution_timeout_deadline(emulator: FakeEmulator) -> None:
    op = FakeQueryOperator(
        task_id="q", sql="select 1", deferrable=True, execution_timeout=dt.timedelta(hours=1)
    )
    context = started_context(600)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    deadline = deferred.value.trigger.deadline  # type: ignore[attr-defined]
    # The try's start + 1 h (50 min from now), not the 24 h default timeout.
    assert deadline == pytest.approx(context["ti"].start_date.timestamp() + 3600)
    assert (deferred.value.kwargs or {})["deadline"] == deadline  # a resume keeps it, never recomputes it


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
    context = started_context(60)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    # The trigger waits until the try's start + 61 s (1 s left), not for the 30 s timeout.
    start = context["ti"].start_date.timestamp()
    assert deferred.value.trigger.deadline == pytest.approx(start + 61)  # type: ignore[attr-defined]
    event = run_trigger(deferred.value.trigger)
    assert event["status"] == "timeout"
    with pytest.raises(QueryTimeoutError):
        op.execute_complete({}, event, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert [q.cancelled for q in emulator.queries.values()] == [True]


def test_a_dag_task_with_a_short_execution_timeout_fails_and_cancels(
    airflow_db: Any, emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a real task run on each Airflow line: not the 24 h default ``timeout``."""
    # What each trigger (run in process by dag.test()) is given: its deadline, and its start.
    given: list[tuple[float | None, float]] = []
    original = FakeTrigger.run

    async def recording_run(self: FakeTrigger) -> AsyncIterator[Any]:
        given.append((self.deadline, self.started))
        async for event in original(self):
            yield event

    monkeypatch.setattr(FakeTrigger, "run", recording_run)
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
    run = run_dag(dag)
    state = str(run.get_task_instance("query").state).rsplit(".", 1)[-1].lower()
    assert state == "failed"
    # Ended by the 3 s execution_timeout (counted from the try's start, before the trigger's),
    # not the 90 s timeout.
    assert len(given) == 1 and given[0][0] is not None and given[0][0] - given[0][1] <= 3.0
    assert len(emulator.queries) == 1
    assert [q.cancelled for q in emulator.queries.values()] == [True]
