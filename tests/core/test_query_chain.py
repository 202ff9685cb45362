"""A chain of queries (Shoplazza windows, Data Kiosk pages) is a loop, in the worker and deferred."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.compat import Context, TaskDeferred
from airflow_provider_querytasks.operators.base import STATE_STORE_KEY, QueryChain

from ..common.fake_platform import FakeApi, FakeEmulator, FakeQueryOperator
from ..helpers import run_trigger

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


class FakeTI:
    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number

    def xcom_push(self, key: str, value: Any) -> None:
        pass


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


def ctx(**items: Any) -> Any:
    """A task context with only what a test needs."""
    return dict(items)


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
