from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.operators.adobe_query_service import AdobeQueryOperator
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator

from ..helpers import FAST_RETRY


@pytest.fixture
def emulator(adobe_emulator: AdobeQueryServiceEmulator) -> AdobeQueryServiceEmulator:
    """The platform's emulator (``tests/conftest.py``), by the name this package's tests use."""
    return adobe_emulator


@pytest.fixture
def hook(emulator: AdobeQueryServiceEmulator) -> AdobeQueryServiceHook:
    return AdobeQueryServiceHook(retry=FAST_RETRY)


def operator(**kwargs: Any) -> AdobeQueryOperator:
    if "template_id" not in kwargs:
        kwargs.setdefault("sql", "SELECT 1")
    return AdobeQueryOperator(task_id="q", poll_interval=0.05, **kwargs)
