"""Faults at submission, during the wait and during the fetch, for each platform.

Every run goes through the platform's operator with a destination (submit -> wait -> fetch).
Transient faults must be absorbed; a fault that leaves a submission's outcome unknown must fail
the task without sending it again; nothing may be left under a final file name by a failed fetch;
and no query is ever submitted twice.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import AmbiguousSubmissionError, QueryTaskError
from airflow_provider_querytasks.common.transport.clients import RetryPolicy
from airflow_provider_querytasks.compat import TaskDeferred
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.operators.adobe_query_service import (
    AdobeExportDatasetOperator,
    AdobeQueryOperator,
)
from airflow_provider_querytasks.operators.amazon_data_kiosk import DataKioskQueryOperator
from airflow_provider_querytasks.operators.shoplazza import ShoplazzaDataTaskOperator
from airflow_provider_querytasks.testing import EmulatorServer, Fault
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator
from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger
from airflow_provider_querytasks.triggers.shoplazza import ShoplazzaDataTaskTrigger

from ..data_kiosk.conftest import QUERY
from ..helpers import fast_forward_rate_limits, run_trigger, use_connection

RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.1, jitter=0.0)
#: (connect, read) seconds: short, so a delayed answer is a read timeout.
TIMEOUT = (2.0, 0.5)


@dataclass(frozen=True)
class Platform:
    """How to run one platform's submit -> wait -> fetch, and where its phases are on the wire."""

    name: str
    emulator: Callable[[], EmulatorServer]
    #: phase -> (site, method, path regex)
    phases: dict[str, tuple[str, str, str]]
    run: Callable[[Path], Any]
    submissions: Callable[[Any], int]


def _hook(operator: Any, hook: Any) -> Any:
    operator.__dict__["hook"] = hook  # the cached hook, with test timeouts and retries
    return operator


def run_shoplazza(folder: Path) -> Any:
    op = ShoplazzaDataTaskOperator(
        task_id="export",
        event="purchase_product",
        begin_time="2026-11-20T00:00:00",
        end_time="2026-11-21T00:00:00",
        destination=f"{folder}/",
        poll_interval=0.05,
    )
    return _hook(op, ShoplazzaHook(retry=RETRY, timeout=TIMEOUT)).execute({})


def run_data_kiosk(folder: Path) -> Any:
    op = DataKioskQueryOperator(task_id="query", query=QUERY, destination=str(folder), poll_interval=0.05)
    return _hook(op, DataKioskHook(retry=RETRY, timeout=TIMEOUT)).execute({})


def run_adobe(folder: Path) -> Any:
    hook = AdobeQueryServiceHook(retry=RETRY, timeout=TIMEOUT)
    query = AdobeQueryOperator(
        task_id="ctas", sql="SELECT 1", ctas_parameters={"datasetName": "out"}, poll_interval=0.05
    )
    result = _hook(query, hook).execute({})
    export = AdobeExportDatasetOperator(
        task_id="export", query_id=result["query_id"], destination=str(folder), batch_poll_interval=0.05
    )
    # The export builds its hook from the connection: give the whole process the short timeouts.
    return export.execute({})


PLATFORMS = [
    Platform(
        "shoplazza",
        lambda: ShoplazzaEmulator(duration=0.2, rows=20),
        {
            "submit": ("api", "GET", r"/data/query$"),
            "wait": ("api", "GET", r"/data/task$"),
            "fetch": ("storage", "GET", r"\.csv$"),
        },
        run_shoplazza,
        lambda e: len(e.requests_to("api", "GET", r"/data/query$")),
    ),
    Platform(
        "data_kiosk",
        lambda: DataKioskEmulator(duration=0.2, rows=5),
        {
            "submit": ("api", "POST", r"/queries$"),
            "wait": ("api", "GET", r"/queries/\d+$"),
            "fetch": ("storage", "GET", r"\.jsonl$"),
        },
        run_data_kiosk,
        lambda e: len(e.requests_to("api", "POST", r"/queries$")),
    ),
    Platform(
        "adobe",
        lambda: AdobeQueryServiceEmulator(duration=0.2, file_size=5000),
        {
            "submit": ("api", "POST", r"/queries$"),
            "wait": ("api", "GET", r"/queries/[0-9a-f-]{36}$"),
            "fetch": ("api", "GET", r"/export/files/[^/]+$"),
        },
        run_adobe,
        lambda e: len(e.requests_to("api", "POST", r"/queries$")),
    ),
]

#: fault name -> Fault keyword arguments (site, method, path and times are added per phase).
FAULTS: dict[str, dict[str, Any]] = {
    "429 with Retry-After": {
        "action": "status",
        "status": 429,
        "body": {"errors": ["slow down"]},
        "headers": {"Retry-After": "0"},
    },
    "429 without Retry-After": {"action": "status", "status": 429, "body": {"errors": ["slow down"]}},
    "500": {"action": "status", "status": 500, "body": "internal error"},
    "502": {"action": "status", "status": 502, "body": "<html>bad gateway</html>"},
    "503": {"action": "status", "status": 503, "body": ""},
    "connection reset": {"action": "drop"},
    "read timeout": {"action": "delay", "seconds": 1.5},
}


@pytest.fixture(params=PLATFORMS, ids=lambda p: p.name)
def platform(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Platform, Any]]:
    spec: Platform = request.param
    emulator = spec.emulator()
    emulator.start()
    use_connection(monkeypatch, emulator.connection())
    yield spec, emulator
    emulator.stop()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("phase", ["submit", "wait", "fetch"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(
    platform: tuple[Platform, Any],
    fault: str,
    phase: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, emulator = platform
    request.node.add_marker(pytest.mark.scenario(f"{fault} at {phase}", spec.name))
    site, method, path = spec.phases[phase]
    injected = emulator.inject(Fault(site=site, method=method, path=path, times=1, **FAULTS[fault]))
    folder = tmp_path / "out"
    rejected_for_sure = fault.startswith("429")
    if phase == "submit" and not rejected_for_sure:
        # Sent, outcome unknown: never re-sent, the task fails and says so.
        with pytest.raises(AmbiguousSubmissionError):
            spec.run(folder)
        assert spec.submissions(emulator) == 1 and injected.hits == 1
        assert _files(folder) == []
        return
    if phase == "submit":
        # The refused submission is sent again once the submit plan allows (Data Kiosk's
        # createQuery: 1 a minute): on a clock that skips that wait.
        fast_forward_rate_limits(monkeypatch)
    spec.run(folder)
    assert injected.hits == 1  # the fault did happen
    assert spec.submissions(emulator) == (2 if phase == "submit" else 1)  # a 429 was refused, then sent again
    files = _files(folder)
    assert files and not any(name.endswith(".part") or name.startswith(".") for name in files)


def test_download_cut_every_time_leaves_no_file(
    platform: tuple[Platform, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec, emulator = platform
    request.node.add_marker(pytest.mark.scenario("download cut on every try", spec.name))
    site, method, path = spec.phases["fetch"]
    emulator.inject(Fault(action="truncate", site=site, method=method, path=path, times=None))
    folder = tmp_path / "out"
    with pytest.raises(QueryTaskError):
        spec.run(folder)
    assert _files(folder) == []
    assert spec.submissions(emulator) == 1


def test_token_expired_mid_wait(
    platform: tuple[Platform, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec, emulator = platform
    request.node.add_marker(pytest.mark.scenario("token expired mid-wait", spec.name))
    if spec.name == "shoplazza":  # the private-app token does not expire: use the OAuth connection
        use_connection(request.getfixturevalue("monkeypatch"), emulator.connection(oauth=True))
    site, method, path = spec.phases["wait"]
    injected = emulator.inject(Fault(action="expire_token", site=site, method=method, path=path, times=1))
    spec.run(tmp_path / "out")
    assert injected.hits == 1
    assert spec.submissions(emulator) == 1 and _files(tmp_path / "out")


def test_triggerer_restart_resumes_the_same_query(
    platform: tuple[Platform, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec, emulator = platform
    request.node.add_marker(pytest.mark.scenario("triggerer restarted mid-wait", spec.name))
    emulator.duration = 0.6
    op: Any = {
        "shoplazza": lambda: ShoplazzaDataTaskOperator(
            task_id="t", event="pageview", begin_time="2026-11-20", end_time="2026-11-21", deferrable=True
        ),
        "data_kiosk": lambda: DataKioskQueryOperator(task_id="t", query=QUERY, deferrable=True),
        "adobe": lambda: AdobeQueryOperator(task_id="t", sql="SELECT 1", deferrable=True),
    }[spec.name]()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    first = deferred.value.trigger
    classpath, kwargs = first.serialize()
    # The triggerer holding it dies; another rebuilds the trigger from its serialised row.
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.query_id == first.query_id
    result = op.execute_complete({}, run_trigger(rebuilt))
    assert result["query_id"] == first.query_id
    assert spec.submissions(emulator) == 1


@pytest.mark.parametrize(
    "body", [b"<html><body>Gateway maintenance</body></html>", b"", b'{"truncated": ', b"[1, 2]"]
)
def test_malformed_answers_are_clear_errors(
    platform: tuple[Platform, Any], body: bytes, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec, emulator = platform
    request.node.add_marker(pytest.mark.scenario("malformed 200 answer while waiting", spec.name))
    site, method, path = spec.phases["wait"]
    emulator.inject(
        Fault(action="status", status=200, body=body, site=site, method=method, path=path, times=None)
    )
    with pytest.raises(QueryTaskError, match=r"(?i)json|queryId|query_id|expected|answered"):
        spec.run(tmp_path / "out")
    assert spec.submissions(emulator) == 1


def test_oversized_answer_is_refused_not_read(
    platform: tuple[Platform, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec, emulator = platform
    request.node.add_marker(pytest.mark.scenario("oversized answer while waiting", spec.name))
    site, method, path = spec.phases["wait"]
    huge = b'{"padding": "' + b"x" * (17 * 2**20) + b'"}'
    emulator.inject(
        Fault(action="status", status=200, body=huge, site=site, method=method, path=path, times=None)
    )
    with pytest.raises(QueryTaskError, match="more than 16 MiB"):
        spec.run(tmp_path / "out")
    # The async path (the trigger) refuses it the same way.
    query_id = next(iter(getattr(emulator, "tasks", None) or getattr(emulator, "queries", {})))
    trigger_class = {
        "shoplazza": ShoplazzaDataTaskTrigger,
        "data_kiosk": DataKioskQueryTrigger,
        "adobe": AdobeQueryTrigger,
    }[spec.name]
    event = run_trigger(trigger_class(conn_id=emulator.connection()["conn_id"], query_id=query_id))
    assert event["status"] == "error" and "more than 16 MiB" in event["message"]


@pytest.mark.parametrize(
    "spec", [p for p in PLATFORMS if p.phases["fetch"][0] == "storage"], ids=lambda p: p.name
)
def test_expired_result_url_is_replaced(
    spec: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    request.node.add_marker(pytest.mark.scenario("result URL expired at fetch (403 from storage)", spec.name))
    emulator = spec.emulator()
    emulator.start()
    try:
        use_connection(monkeypatch, emulator.connection())
        site, method, path = spec.phases["fetch"]
        expired = emulator.inject(
            Fault(
                action="status",
                status=403,
                body=b"<Error><Code>AccessDenied</Code></Error>",
                site=site,
                method=method,
                path=path,
            )
        )
        spec.run(tmp_path / "out")
        assert expired.hits == 1 and _files(tmp_path / "out")
        assert spec.submissions(emulator) == 1
    finally:
        emulator.stop()
