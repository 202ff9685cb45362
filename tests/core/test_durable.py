"""Re-attach follows Airflow 3.3's ResumableJobMixin: ``durable``, its store key and metrics."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.operators.base import STATE_STORE_KEY
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_3_PLUS

from ..common.fake_platform import FakeEmulator, FakeQueryOperator
from ..operators.test_base import FakeStore, FakeTI


def ctx(ti: FakeTI, store: FakeStore) -> Any:
    return {"ti": ti, "task_state_store": store}


def operator(**kwargs: Any) -> FakeQueryOperator:
    return FakeQueryOperator(task_id="q", sql="select 1", poll_interval=0.05, **kwargs)


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
        operator(deferrable=True).execute(ctx(FakeTI(1), store))
    result = operator().execute(ctx(FakeTI(2), store))
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
    operator().execute(ctx(FakeTI(1), store))
    operator(durable=False).execute(ctx(FakeTI(2), store))
    assert len(emulator.requests_to("api", "POST")) == 2
