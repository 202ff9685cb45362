"""Adobe Query Service trigger against the emulator."""

from __future__ import annotations

import pytest

from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator

from ..helpers import run_trigger
from .conftest import operator


def test_deferred_query_completes_through_the_trigger(emulator: AdobeQueryServiceEmulator) -> None:
    op = operator(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    result = op.execute_complete({}, run_trigger(deferred.value.trigger))  # type: ignore[arg-type]
    assert result["state"] == "SUCCESS" and result["row_count"] == 42
