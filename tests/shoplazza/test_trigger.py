"""Shoplazza trigger against the emulator."""

from __future__ import annotations

from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from ..helpers import run_trigger
from .conftest import DAY, trigger_for


def test_trigger_reports_success_with_the_task(emulator: ShoplazzaEmulator, hook: ShoplazzaHook) -> None:
    query_id = hook.create_task("purchase_product", *DAY)
    event = run_trigger(trigger_for(query_id))
    assert event["status"] == "success" and event["query_id"] == query_id
    assert event["snapshot"]["raw"]["query"]["url"].startswith(emulator.urls["storage"])


def test_trigger_reports_an_undocumented_status_as_failed(
    emulator: ShoplazzaEmulator, hook: ShoplazzaHook
) -> None:
    emulator.final_status = 5
    query_id = hook.create_task("purchase_product", *DAY)
    event = run_trigger(trigger_for(query_id))
    assert event["status"] == "failed" and event["snapshot"]["remote_status"] == 5


def test_trigger_serializes_to_its_own_class() -> None:
    path, kwargs = trigger_for("q1").serialize()
    assert path == "airflow_provider_querytasks.triggers.shoplazza.ShoplazzaDataTaskTrigger"
    assert kwargs["query_id"] == "q1"
