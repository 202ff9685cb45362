"""The Adobe query link: its URL form, its registration, and what a finished task shows."""

from __future__ import annotations

import datetime as dt
import runpy
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.get_provider_info import get_provider_info
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.links.adobe_query_service import AdobeQueryLink, AdobeScheduledQueryLink
from airflow_provider_querytasks.operators.adobe_query_service import (
    AdobeExportDatasetOperator,
    AdobeQueryOperator,
)
from airflow_provider_querytasks.protocols.adobe_query_service import ui_query_url, ui_schedule_url
from airflow_provider_querytasks.sensors.adobe_query_service import (
    AdobeQuerySensor,
    AdobeScheduledQueryRunSensor,
)
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_adobe_query_service.py"


def test_page_urls_name_the_org_the_sandbox_and_the_id() -> None:
    assert (
        ui_query_url("ABC123@AdobeOrg", "prod", "4d64cd49-cf8f-463a-a182-54bccb9954fc")
        == "https://experience.adobe.com/#/@ABC123@AdobeOrg/sname:prod/platform/query/log/"
        "4d64cd49-cf8f-463a-a182-54bccb9954fc"
    )
    assert ui_schedule_url("ABC123@AdobeOrg", "dev-1", "a/b") == (
        "https://experience.adobe.com/#/@ABC123@AdobeOrg/sname:dev-1/platform/query/scheduled-queries/a%2Fb"
    )


def test_links_are_registered_and_attached() -> None:
    registered = get_provider_info()["extra-links"]
    for link_class in (AdobeQueryLink, AdobeScheduledQueryLink):
        assert f"{link_class.__module__}.{link_class.__qualname__}" in registered
    assert [type(link) for link in AdobeQueryOperator.operator_extra_links] == [AdobeQueryLink]
    assert [type(link) for link in AdobeQuerySensor.operator_extra_links] == [AdobeQueryLink]
    assert [type(link) for link in AdobeScheduledQueryRunSensor.operator_extra_links] == [
        AdobeScheduledQueryLink
    ]
    assert not AdobeExportDatasetOperator.operator_extra_links  # no page of its own


def extra_links(dag: Any, run_id: str, task_id: str) -> dict[str, str | None]:
    """What the UI is given for a task instance: the REST API (3.x) or the webserver's call on
    the serialized task (2.x, where deserializing needs the link registered by the provider)."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        with TestClient(create_app("core")) as client:
            answer = client.get(f"/api/v2/dags/{dag.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")
        assert answer.status_code == 200, answer.text
        return dict(answer.json()["extra_links"])
    from airflow.models import DagRun
    from airflow.serialization.serialized_objects import SerializedDAG

    ti = DagRun.find(dag_id=dag.dag_id, run_id=run_id)[0].get_task_instance(task_id)
    task = SerializedDAG.from_dict(SerializedDAG.to_dict(dag)).get_task(task_id)  # type: ignore[attr-defined]
    return {name: task.get_extra_links(ti, name) for name in task.extra_links}


def test_a_finished_query_task_links_to_its_query_page(
    airflow_db: Any, emulator: AdobeQueryServiceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("QUERYTASKS_EXAMPLE_POLL_SECONDS", "0.2")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    namespace = runpy.run_path(str(EXAMPLE), run_name="example_adobe")
    dag = namespace["daily_ctas"]
    run = run_dag(dag, logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
    assert str(run.state).rsplit(".", 1)[-1].lower() == "success"
    (query_id,) = emulator.queries  # the one query the task submitted
    settings = AdobeQueryServiceHook().settings
    links = extra_links(dag, run.run_id, "daily_page_views")
    assert links == {"Adobe Query": ui_query_url(settings.org_id, settings.sandbox, query_id)}
    assert (links["Adobe Query"] or "").startswith(
        f"https://experience.adobe.com/#/@{settings.org_id}/sname:{settings.sandbox}/platform/query/"
    )
    assert extra_links(dag, run.run_id, "export_page_views") == {}
