"""Data Kiosk where the specs are silent (issue 28): each test fails on the provider before it.

Re-attach adopts only this task instance's query; notifications match the account in every
documented form; a 403 is retried once with a fresh token and then names both causes; the length
check refuses only what is surely too long.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import InvalidInputError, PermissionDeniedError
from airflow_provider_querytasks.common.api.notifications import Notification
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.compat import AirflowSkipException
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.notification_sources.amazon_sqs import SqsNotificationSource
from airflow_provider_querytasks.operators.amazon_data_kiosk import DataKioskNotificationOperator
from airflow_provider_querytasks.operators.base import task_instance_name
from airflow_provider_querytasks.protocols.amazon_data_kiosk import (
    MAX_QUERY_LENGTH,
    account_key,
    mark_query,
    marker_of,
    minimal_query_length,
    query_marker,
    read_notification,
    validate_query,
)
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator, echoed_query

from .conftest import QUERY, operator


class TI:
    """A task instance as the context carries it."""

    def __init__(self, try_number: int, *, run_id: str = "r", task_id: str = "query") -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "d", task_id, run_id, -1
        self.try_number = try_number

    def xcom_push(self, key: str, value: Any) -> None:
        pass


class DagRun:
    def __init__(self, start: dt.datetime) -> None:
        self.start_date = start


def context(try_number: int, started: dt.datetime, **ti: Any) -> Any:
    return {"ti": TI(try_number, **ti), "dag_run": DagRun(started)}


def posts(emulator: DataKioskEmulator) -> int:
    return len(emulator.requests_to("api", "POST", r"/queries$"))


# -- 1. re-attach adopts only what this task instance submitted --------------------------------
def test_retry_does_not_adopt_another_runs_query_of_the_same_text(emulator: DataKioskEmulator) -> None:
    emulator.duration = 0.6
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    text = echoed_query(QUERY)  # the same text, whichever way Amazon echoes it
    other = emulator.add_query(text)  # another run's (or another DAG's) query
    result = operator(query=text).execute(context(2, started))
    assert result["query_id"] != other.query_id and posts(emulator) == 1
    marked = operator(query=text, wait_for_completion=False).execute(
        context(1, started, run_id="another-run")
    )
    result = operator(query=text).execute(context(2, started))
    assert result["query_id"] != marked["query_id"]


def test_retry_does_not_adopt_a_query_from_before_the_run_started(emulator: DataKioskEmulator) -> None:
    emulator.duration = 30.0
    # The same task instance's query of an earlier clear: created before the run (re)started.
    earlier = emulator.add_query(mark_query(QUERY, query_marker("airflow:d:query:r:-1")) or "")
    started = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    found = operator().find_submitted_query(context(2, started))
    assert found is None and earlier.query_id in emulator.queries


def test_retry_adopts_its_own_query_wherever_the_list_shows_it(emulator: DataKioskEmulator) -> None:
    emulator.duration = 30.0
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    for run in range(150):  # other runs' queries: two getQueries pages in an order of its own
        emulator.add_query(mark_query(QUERY, query_marker(f"airflow:d:query:other-{run}:-1")) or "")
    own = operator(wait_for_completion=False).execute(context(1, started))["query_id"]
    assert operator().find_submitted_query(context(2, started)) == own
    lists = emulator.requests_to("api", "GET", r"/queries$")
    assert len(lists) == 2
    for request in lists:  # every page repeats every filter
        assert request.query.get("createdSince") and request.query.get("processingStatuses")
        assert request.query.get("pageSize") == ["100"]


def test_the_look_up_stops_at_its_page_cap_and_submits_again(
    emulator: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.duration = 30.0
    monkeypatch.setattr(DataKioskHook, "FIND_PAGES", 1)
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    own = operator(wait_for_completion=False).execute(context(1, started))["query_id"]
    for run in range(120):
        emulator.add_query(f"query q{run} {{ a }}")
    assert operator().find_submitted_query(context(2, started)) is None
    assert len(emulator.requests_to("api", "GET", r"/queries$")) == 1 and own in emulator.queries


def test_the_marker_is_the_operation_name_and_survives_the_echo() -> None:
    marker = query_marker(task_instance_name({"ti": TI(1)}))  # type: ignore[typeddict-item]
    assert marker == query_marker("airflow:d:query:r:-1")
    assert marker != query_marker("airflow:d:query:r:0")  # the map index counts
    marked = mark_query(QUERY, marker)
    assert marked is not None and marker_of(marked) == marker
    assert marked.replace(f"_{marker}", "") == QUERY  # nothing else changes
    assert marker_of(" ".join(marked.split())) == marker
    assert marker_of(mark_query("{ a }", marker) or "") == marker
    assert mark_query("{ a } { b }", marker) is None  # two operations: no marker, no look-up


# -- 2. notifications match the account in every documented form -------------------------------
@pytest.mark.parametrize(
    ("sent", "configured"),
    [
        ("amzn1.merchant.o.A21CXK3C4ERTY8", "A21CXK3C4ERTY8"),
        ("amzn1.merchant.o.A21CXK3C4ERTY8", "amzn1.merchant.o.A21CXK3C4ERTY8"),
        ("A21CXK3C4ERTY8", "amzn1.merchant.o.a21cxk3c4erty8"),
        ("amzn1.vg.6213651", "6213651"),
    ],
)
def test_accounts_match_in_every_documented_form(sent: str, configured: str) -> None:
    assert account_key(sent) == account_key(configured)
    assert account_key("amzn1.merchant.o.A21CXK3C4ERTY8") != account_key("A21CXK3C4ERTY9")


def snapshot(query_id: str) -> StatusSnapshot:
    return StatusSnapshot(query_id, QueryState.SUCCEEDED, "DONE")


def test_a_prefixed_notification_ends_the_wait_of_a_bare_merchant_token(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    query_id = hook.create_query(QUERY)
    emulator.clock.advance(emulator.duration + 1)
    envelope = emulator.notification_for(query_id)
    assert envelope["payload"]["accountId"] == f"amzn1.merchant.o.{emulator.account_id}"
    source = SqsNotificationSource("https://sqs.example/1/q", account=hook.notification_account())
    notification = read_notification(json.dumps(envelope))
    assert notification is not None and source.accepts(notification, query_id)


def test_a_notification_refused_for_its_account_warns_once_naming_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    process_state.refused_accounts.clear()
    source = SqsNotificationSource("https://sqs.example/1/q", account=account_key("A3MINE"))
    theirs = Notification(
        "42", account_key("amzn1.merchant.o.A3THEIRS"), snapshot("42"), "amzn1.merchant.o.A3THEIRS"
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # handed back and received again
            assert not source.claims(theirs, "42")
        assert not source.claims(theirs, "43")  # not a wait's query: no warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "amzn1.merchant.o.A3THEIRS" in warnings[0] and "A3MINE" in warnings[0]


def test_the_notification_operator_handles_the_prefixed_account(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    emulator.duration = 0.0
    envelope = emulator.notification_for(hook.create_query(QUERY))
    [record] = DataKioskNotificationOperator(task_id="n", notification=envelope).execute({})  # type: ignore[arg-type]
    assert record["status"] == "DONE"
    with pytest.raises(AirflowSkipException, match="A3SOMEBODYELSE"):
        DataKioskNotificationOperator(
            task_id="n", notification=envelope, account_id="A3SOMEBODYELSE"
        ).execute({})  # type: ignore[arg-type]


# -- 4. a 403 is retried once with a fresh token, then names both causes -------------------------
def test_a_403_is_retried_with_a_fresh_token_then_names_both_causes(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    emulator.missing_role = True
    with pytest.raises(PermissionDeniedError) as raised:
        hook.check_connection()
    message = str(raised.value)
    assert "Brand Analytics" in message and "revoked" in message and "refresh_token" in message
    assert len(emulator.requests_to("lwa", "POST", r"/auth/o2/token$")) == 2  # a fresh token
    assert len(emulator.requests_to("api", "GET", r"/queries$")) == 2  # tried again once


def test_a_revoked_authorisation_says_to_authorise_again(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    hook.check_connection()
    emulator.revoke()
    with pytest.raises(Exception, match="authorise the app again") as raised:
        hook.check_connection()
    assert emulator.refresh_token not in str(raised.value)


def test_a_token_dying_before_its_expiry_is_refreshed_and_the_call_succeeds(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    hook.check_connection()
    emulator.expire_tokens()  # dead before expires_in says
    hook.check_connection()
    assert len(emulator.requests_to("lwa", "POST", r"/auth/o2/token$")) == 2


# -- 4. the length check refuses only what is surely too long -----------------------------------
def test_a_query_whose_minimal_form_fits_is_sent(emulator: DataKioskEmulator, hook: DataKioskHook) -> None:
    # Collapsing runs of whitespace leaves "a, a, ..." (over 8,000); GraphQL needs only "a a ...".
    query = "query {" + ", ".join(["a"] * 3000) + "}"
    assert minimal_query_length(query) <= MAX_QUERY_LENGTH < len(" ".join(query.split()))
    assert validate_query(query, validate_schema=False) == query
    commented = "# " + "x" * 9000 + "\n" + QUERY
    assert validate_query(commented) == commented
    with pytest.raises(InvalidInputError, match="8000"):
        validate_query("query {" + " ".join(["a"] * 4001) + "}", validate_schema=False)


# -- 4. x-amzn-RateLimit-Limit above the default plan raises the ceiling (bounded) ------------------
def test_a_reported_rate_above_the_plan_raises_the_ceiling_up_to_ten_times() -> None:
    from airflow_provider_querytasks.common.transport.ratelimit import AdaptiveTokenBucket

    now = [0.0]
    bucket = AdaptiveTokenBucket(2.0 * 0.9, 15 * 0.9, server_rate=2.0, server_burst=15, clock=lambda: now[0])
    bucket.record_answer(0.0, False, limit=5.0)  # this account was granted 5 requests a second
    assert bucket.ceiling == pytest.approx(5.0 * 0.9) and bucket.burst == pytest.approx(15 * 0.9)
    now[0] = 600.0
    assert bucket.current_rate() == pytest.approx(5.0 * 0.9)
    bucket.record_answer(600.0, False, limit=1000.0)  # garbled: at most ten times the plan
    assert bucket.ceiling == pytest.approx(20.0 * 0.9)
    bucket.record_answer(600.0, False, limit=1.0)  # and lower again when the platform says so
    assert bucket.ceiling == pytest.approx(0.9) and bucket.burst < 15 * 0.9
