"""Contract tests: what the clients send and the emulators answer, against the published specs.

Every test using an emulator fixture has its exchanges checked when it ends (``check.py``,
called from ``tests/helpers.py``). The tests here check the checker (it refuses what the specs
refuse), and that every operation a hook calls (listed from the protocol modules) had at least
one exchange that was checked and found valid.
"""

from __future__ import annotations

import ast
import inspect
import json
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.protocols import adobe_query_service, amazon_data_kiosk
from airflow_provider_querytasks.protocols.adobe_query_service import AdobeQueryDefinition
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.server import RecordedRequest

from ..data_kiosk.conftest import QUERY as DATA_KIOSK_QUERY
from ..helpers import FAST_RETRY
from .check import KNOWN, check_exchange, contract_problems, notification_problems
from .openapi import SPECS, Spec

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one

BUILDERS = ("ApiRequest", "_json")


def protocol_operations(module: Any) -> set[str]:
    """The operation names a protocol module gives its requests (the third argument of each
    ``ApiRequest(...)`` it builds, where a literal): what its hook calls."""
    tree = ast.parse(inspect.getsource(module))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in BUILDERS and len(node.args) >= 3:
            name = node.args[2]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.add(name.value)
    return found


def valid_operations(platform: str, exchanges: list[RecordedRequest]) -> set[str]:
    """Operations with at least one answered exchange found valid."""
    valid = set()
    for exchange in exchanges:
        operation, problems = check_exchange(platform, exchange)
        if operation and not problems and exchange.status:
            valid.add(operation)
    return valid


# -- the checker refuses what the specs refuse -------------------------------------------------
def exchange(method: str, path: str, **kwargs: Any) -> RecordedRequest:
    headers = {
        "Authorization": "Bearer t",
        "x-api-key": "k",
        "x-gw-ims-org-id": "O@AdobeOrg",
        "x-sandbox-name": "prod",
        "Content-Type": "application/json",
    }
    defaults: dict[str, Any] = {"site": "api", "query": {}, "headers": headers, "body": b"", "status": 200}
    return RecordedRequest(method=method, path=path, **{**defaults, **kwargs})


QS = "/data/foundation/query"


@pytest.mark.parametrize(
    ("recorded", "problem"),
    [
        (exchange("GET", f"{QS}/nowhere"), "no operation"),
        (exchange("GET", f"{QS}/queries", query={"limit": ["ten"]}), "limit='ten' is not an integer"),
        (exchange("GET", f"{QS}/queries", query={"name": ["x"]}), "does not declare: name"),
        (exchange("GET", f"{QS}/queries", headers={}), "required header 'Authorization' is missing"),
        (
            exchange("PATCH", f"{QS}/queries/q1", body=b'{"op": "delete"}', status=202),
            "'delete' is not one of",
        ),
        (
            exchange(
                "GET",
                f"{QS}/queries/q1",
                response_headers={"Content-Type": "application/json"},
                response_body=b'{"id": "q1", "state": "DONE"}',
            ),
            "state: 'DONE' is not one of",
        ),
        (exchange("GET", f"{QS}/queries/q1", status=201), "status 201 is not declared"),
        (
            exchange(
                "GET",
                f"{QS}/schedules/s1/runs",
                response_headers={"Content-Type": "application/json"},
                response_body=b'{"runsSchedules": [{"id": "r", "externalTrigger": "true"}]}',
            ),
            "externalTrigger: 'true' is not of type 'boolean'",
        ),
    ],
)
def test_the_checker_refuses_what_the_spec_refuses(recorded: RecordedRequest, problem: str) -> None:
    _, problems = check_exchange("adobe", recorded)
    assert any(problem in p for p in problems), problems


def test_the_checker_accepts_the_documented_examples() -> None:
    """The seed's documented listQueries answer (seed 003) and a documented createQuery body."""
    listed = {
        "queries": [{"id": "9957bd7f", "state": "SUCCESS", "created": "2019-12-06T22:00:17.362Z"}],
        "_page": {
            "orderby": "-created",
            "start": "2019-12-06T22:00:17.362Z",
            "next": "2019-08-01T00:14:21.748Z",
            "count": 1,
        },
        "_links": {
            "next": {
                "href": "https://platform.adobe.io/data/foundation/query/queries?orderby=-created&start=2019-08-01T00:14:21.748Z"
            }
        },
        "version": 1,
    }
    body = json.dumps(listed).encode()
    ok = exchange(
        "GET", f"{QS}/queries", response_headers={"Content-Type": "application/json"}, response_body=body
    )
    assert check_exchange("adobe", ok) == ("listQueries", [])
    created = exchange(
        "POST", f"{QS}/queries", body=b'{"dbName": "prod:all", "sql": "SELECT 1", "name": "n"}', status=202
    )
    assert check_exchange("adobe", created) == ("createQuery", [])


def test_the_data_kiosk_checker_refuses_a_bad_page_size_and_notification() -> None:
    bad = RecordedRequest(
        site="api",
        method="GET",
        path="/dataKiosk/2023-11-15/queries",
        query={"pageSize": ["1000"], "processingStatuses": ["DONE,LOST"]},
        headers={},
        body=b"",
        status=200,
    )
    _, problems = check_exchange("data_kiosk", bad)
    assert any("pageSize" in p for p in problems) and any("'LOST' is not one of" in p for p in problems)

    class Broken:
        queries = {"1": None}

        def notification_for(self, query_id: str) -> dict[str, Any]:
            return {"notificationType": "DATA_KIOSK_QUERY_PROCESSING_FINISHED", "payload": {}}

    assert notification_problems(Broken())


def test_the_vendored_specs_are_the_shared_ones_with_their_licenses() -> None:
    names = {p.name for p in SPECS.iterdir()}
    assert {
        "LICENSE-AdobeDocs-experience-platform-apis.txt",
        "NOTICE-amzn-selling-partner-api-models.txt",
    } <= names
    shared = Path(__file__).resolve().parents[3] / "shared" / "specs"
    if not shared.is_dir():
        pytest.skip("no ../shared/specs beside this checkout")
    for name in names - {"README.md"}:
        assert (SPECS / name).read_bytes() == (shared / name).read_bytes(), name


# -- every operation the hooks call ------------------------------------------------------------
def test_every_adobe_operation_the_hook_calls_has_a_valid_exchange(
    adobe_emulator: AdobeQueryServiceEmulator, tmp_path: Path
) -> None:
    emulator = adobe_emulator
    hook = AdobeQueryServiceHook(retry=FAST_RETRY)
    hook.check_connection()
    query = hook.create_query(AdobeQueryDefinition(sql="SELECT 1", ctas_parameters={"datasetName": "out"}))
    deadline = time.monotonic() + 10
    while not hook.get_status(query["id"]).state.terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    list(hook.iter_queries(limit=1))
    emulator.duration = 60.0
    running = hook.create_query(sql="SELECT 2")["id"]
    hook.cancel_query(running)
    hook.soft_delete_query(running)
    template = hook.create_template("SELECT $x", "t", {"x": "1"})
    hook.get_template(template["id"])
    list(hook.list_templates())
    schedule = hook.create_schedule(
        AdobeQueryDefinition(sql="SELECT 3"), {"schedule": "@daily", "startDate": "2026-11-01T00:00:00Z"}
    )["id"]
    hook.get_schedule(schedule)
    list(hook.list_schedules())
    hook.set_schedule_enabled(schedule, False)
    run_id = hook.trigger_run(schedule, poll=0.05)
    hook.get_run_status(schedule, run_id)
    hook.cancel_run(schedule, run_id)
    dataset_id = hook.find_dataset_id("out")
    assert dataset_id
    hook.get_dataset(dataset_id)
    batch = hook.wait_for_batch(dataset_id, timeout=5, poll=0.05)
    assert hook.export_batch(str(batch["id"]), tmp_path)

    called = protocol_operations(adobe_query_service)
    assert len(called) >= 20, called  # the listing itself works
    unknown, known = contract_problems(emulator)
    assert unknown == [] and known == []
    assert called - valid_operations("adobe", emulator.requests_to()) == set()


def test_every_data_kiosk_operation_the_hook_calls_has_a_valid_exchange(
    data_kiosk_emulator: DataKioskEmulator,
) -> None:
    emulator = data_kiosk_emulator
    hook = DataKioskHook(retry=FAST_RETRY)
    hook.check_connection()
    query = DATA_KIOSK_QUERY
    query_id = hook.create_query(query)
    deadline = time.monotonic() + 10
    while not hook.get_status(query_id).state.terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    list(hook.iter_queries(page_size=1))
    document_id = hook.get_query(query_id).get("dataDocumentId")
    assert document_id
    hook.get_document(document_id)
    emulator.duration = 60.0
    hook.cancel_query(hook.create_query(query))

    called = protocol_operations(amazon_data_kiosk)
    assert {"createQuery", "getQuery", "getQueries", "cancelQuery", "getDocument"} <= called
    unknown, _ = contract_problems(emulator)
    assert unknown == []
    assert called - valid_operations("data_kiosk", emulator.requests_to()) == set()


def test_known_discrepancies_name_their_reason() -> None:
    for known in KNOWN:
        assert known.reason and known.pattern


def test_every_spec_loads_and_lists_its_operations() -> None:
    for file, base in (
        ("query-service.yaml", QS),
        ("catalog.yaml", "/data/foundation/catalog"),
        ("data-access.yaml", "/data/foundation/export"),
        ("dataKiosk_2023-11-15.json", ""),
    ):
        assert Spec(file, base).operations, file
