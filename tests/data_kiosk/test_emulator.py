"""The Data Kiosk emulator's getQueries, checked against the published model (dataKiosk_2023-11-15.json).

Raw HTTP, not the hook: the emulator is checked against the platform's documented behaviour, so
a client that agreed with a wrong emulator could not hide it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one

PATH = "/dataKiosk/2023-11-15/queries"


@pytest.fixture
def server() -> Iterator[DataKioskEmulator]:
    emulator = DataKioskEmulator(duration=30.0, enforce_rate_limits=False)
    emulator.start()
    yield emulator
    emulator.stop()


def token(server: DataKioskEmulator) -> str:
    answer = requests.post(
        f"{server.urls['lwa']}/auth/o2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": server.refresh_token,
            "client_id": server.client_id,
            "client_secret": server.client_secret,
        },
        timeout=10,
    )
    return str(answer.json()["access_token"])


def list_queries(server: DataKioskEmulator, access: str, **params: Any) -> requests.Response:
    return requests.get(
        f"{server.urls['api']}{PATH}",
        params=params,
        headers={"x-amz-access-token": access},
        timeout=10,
    )


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def test_page_size_defaults_to_10_and_is_bounded_1_to_100(server: DataKioskEmulator) -> None:
    for _ in range(12):
        server.add_query("query { a }")
    access = token(server)
    first = list_queries(server, access)
    assert first.status_code == 200
    assert len(first.json()["queries"]) == 10 and first.json()["pagination"]["nextToken"]
    assert len(list_queries(server, access, pageSize=100).json()["queries"]) == 12
    assert "pagination" not in list_queries(server, access, pageSize=100).json()
    for size in (0, 101, "ten"):
        refused = list_queries(server, access, pageSize=size)
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["code"] == "InvalidInput"


def test_processing_statuses_filter_and_enum(server: DataKioskEmulator) -> None:
    running = server.add_query("query { a }")
    done = server.add_query("query { b }")
    done.duration = 0.0
    cancelled = server.add_query("query { c }")
    cancelled.cancelled = True
    access = token(server)

    def ids(**params: Any) -> set[str]:
        answer = list_queries(server, access, pageSize=100, **params)
        assert answer.status_code == 200, answer.text
        return {q["queryId"] for q in answer.json()["queries"]}

    assert ids() == {running.query_id, done.query_id, cancelled.query_id}  # not given: every status
    assert ids(processingStatuses="IN_QUEUE") == {running.query_id}
    assert ids(processingStatuses="DONE,CANCELLED") == {done.query_id, cancelled.query_id}
    # The model's sandbox example: an unknown status is a 400 naming the allowed values.
    wrong = list_queries(server, access, processingStatuses="INVALID_STATUS")
    assert wrong.status_code == 400
    message = wrong.json()["errors"][0]["message"]
    assert "INVALID_STATUS" in message and "IN_QUEUE" in message
    assert list_queries(server, access, processingStatuses="").status_code == 400  # minItems 1


def test_done_entries_carry_their_documents(server: DataKioskEmulator) -> None:
    done = server.add_query("query { a }")
    done.duration = 0.0
    access = token(server)
    [entry] = list_queries(server, access, processingStatuses="DONE").json()["queries"]
    assert entry["queryId"] == done.query_id and entry["dataDocumentId"]
    for name in ("queryId", "query", "createdTime", "processingStatus"):  # Query's required fields
        assert name in entry


def test_created_since_defaults_to_90_days_and_until_to_now(server: DataKioskEmulator) -> None:
    old = server.add_query("query { old }")
    old.created_wall = time.time() - 91 * 86400
    recent = server.add_query("query { recent }")
    recent.created_wall = time.time() - 89 * 86400
    future = server.add_query("query { future }")
    future.created_wall = time.time() + 3600  # created "after now": beyond the default until
    access = token(server)

    def ids(**params: Any) -> set[str]:
        return {q["queryId"] for q in list_queries(server, access, pageSize=100, **params).json()["queries"]}

    assert ids() == {recent.query_id}
    assert ids(createdSince=iso(time.time() - 100 * 86400)) == {old.query_id, recent.query_id}
    assert ids(createdUntil=iso(time.time() + 7200)) == {recent.query_id, future.query_id}
    window = ids(createdSince=iso(time.time() - 90 * 86400), createdUntil=iso(time.time() - 88 * 86400))
    assert window == {recent.query_id}
    assert list_queries(server, access, createdSince="yesterday").status_code == 400


def test_next_token_pages_every_query_once_and_requires_the_same_parameters(
    server: DataKioskEmulator,
) -> None:
    created = [server.add_query(f"query {{ q{i} }}") for i in range(5)]
    for i, query in enumerate(created):
        query.created_wall = time.time() - 100 + i  # distinct creation times
    access = token(server)
    filters = {"processingStatuses": "IN_QUEUE,IN_PROGRESS", "createdSince": iso(time.time() - 3600)}
    first = list_queries(server, access, pageSize=2, **filters).json()
    seen = [q["queryId"] for q in first["queries"]]
    next_token = first["pagination"]["nextToken"]
    # pageSize may change between pages; every other parameter must be repeated as sent.
    second = list_queries(server, access, pageSize=3, paginationToken=next_token, **filters).json()
    seen += [q["queryId"] for q in second["queries"]]
    assert "pagination" not in second
    # The order is the emulator's own (the model does not say): every query once.
    assert sorted(seen) == sorted(q.query_id for q in created) and len(seen) == len(created)
    for changed in (
        {"processingStatuses": "IN_QUEUE"},
        {"createdSince": iso(time.time() - 7200)},
        {"createdUntil": iso(time.time())},
    ):
        refused = list_queries(
            server, access, pageSize=2, paginationToken=next_token, **{**filters, **changed}
        )
        assert refused.status_code == 400
    assert list_queries(server, access, paginationToken="made-up").status_code == 400


def test_get_queries_has_its_own_usage_plan_and_429_body() -> None:
    emulator = DataKioskEmulator()  # usage plans enforced
    emulator.start()
    try:
        access = token(emulator)
        answers = [list_queries(emulator, access) for _ in range(11)]
        # Burst 10, then 0.0222 per second: the 11th call within a second is refused.
        assert [a.status_code for a in answers] == [200] * 10 + [429]
        assert answers[0].headers["x-amzn-RateLimit-Limit"] == "0.0222"
        assert "x-amzn-RateLimit-Limit" not in answers[-1].headers  # not on 429 (the model)
        assert answers[-1].json()["errors"][0]["code"] == "QuotaExceeded"
        assert answers[-1].headers["x-amzn-RequestId"]
        # getQuery's plan is another bucket: still open.
        query = emulator.add_query("query { a }")
        one = requests.get(
            f"{emulator.urls['api']}{PATH}/{query.query_id}",
            headers={"x-amz-access-token": access},
            timeout=10,
        )
        assert one.status_code == 200
    finally:
        emulator.stop()
