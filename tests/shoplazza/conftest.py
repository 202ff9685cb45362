from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.operators.shoplazza import ShoplazzaDataTaskOperator
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator
from airflow_provider_querytasks.triggers.shoplazza import ShoplazzaDataTaskTrigger

from ..helpers import FAST_RETRY

DAY = ("2026-11-20T00:00:00", "2026-11-21T00:00:00")


@pytest.fixture
def emulator(shoplazza_emulator: ShoplazzaEmulator) -> ShoplazzaEmulator:
    """The platform's emulator (``tests/conftest.py``), by the name this package's tests use."""
    return shoplazza_emulator


@pytest.fixture
def hook(emulator: ShoplazzaEmulator) -> ShoplazzaHook:
    return ShoplazzaHook(retry=FAST_RETRY)


def export(**kwargs: Any) -> ShoplazzaDataTaskOperator:
    kwargs.setdefault("event", "purchase_product")
    kwargs.setdefault("begin_time", "2026-11-20T00:00:00")
    kwargs.setdefault("end_time", "2026-11-21T00:00:00")
    return ShoplazzaDataTaskOperator(task_id="export", poll_interval=0.05, **kwargs)


def trigger_for(query_id: str) -> ShoplazzaDataTaskTrigger:
    return ShoplazzaDataTaskTrigger(
        conn_id="shoplazza_default",
        query_id=query_id,
        deadline=time.time() + 30,
        poll_schedule={"initial": 0.05, "maximum": 0.1, "proportion": 0.1},
        started=time.time(),
        cancel_on_kill=True,
    )
