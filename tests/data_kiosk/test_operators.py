"""Data Kiosk operators against the emulator.

Validation, page chains, failures, re-attach, cancel, notifications, the example DAG.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import runpy
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import (
    InvalidInputError,
    QueryCancelledError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.compat import AirflowSkipException, TaskDeferred
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.operators.amazon_data_kiosk import (
    DataKioskCancelQueryOperator,
    DataKioskNotificationOperator,
)
from airflow_provider_querytasks.protocols.amazon_data_kiosk import QueryFinishedNotification, marker_of
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator, echoed_query
from airflow_provider_querytasks.testing.dags import run_dag

from ..helpers import run_trigger
from .conftest import QUERY, operator

#: The notification page of the Amazon docs (a public example; provenance in its folder's README).
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seeds" / "data_kiosk_notification.fr_FR.txt"


EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_data_kiosk.py"


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("   ", "non-empty"),
        ("query {" + " x" * 9000 + "}", "8000"),
        ("query { analytics_salesAndTraffic_2024_04_24 { ", "not valid GraphQL"),
        ("query { analytics_unknown_2020_01_01 { x } }", "shipped schemas know"),
        (QUERY.replace("startDate\n      endDate\n", "startDay\n"), "startDay"),
        (QUERY.replace("      aggregateBy: DAY\n", ""), "aggregateBy"),
    ],
)
def test_bad_queries_are_refused_before_any_request(
    emulator: DataKioskEmulator, query: str, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match) as error:
        operator(query=query).execute({})  # type: ignore[arg-type]
    assert error.value.parameter == "query"
    assert emulator.requests == []


def test_schema_validation_can_be_turned_off_for_newer_datasets(emulator: DataKioskEmulator) -> None:
    newer = "query { analytics_salesAndTraffic_2027_01_01 { salesAndTrafficByDate { startDate } } }"
    result = operator(query=newer, validate_schema=False).execute({})  # type: ignore[arg-type]
    assert result["status"] == "DONE"


# -- operator --------------------------------------------------------------------------------
def test_three_page_chain_in_one_task_fetches_every_page(emulator: DataKioskEmulator, tmp_path: Path) -> None:
    emulator.pages = 3
    result = operator(destination=str(tmp_path / "pages")).execute({})  # type: ignore[arg-type]
    created = [json.loads(r.body) for r in emulator.requests_to("api", "POST", r"/queries$")]
    assert [c.get("paginationToken") is None for c in created] == [True, False, False]
    # The text is kept exactly from page to page (the first page's operation named for the task
    # instance: see tests/data_kiosk/test_readings.py).
    assert created[0]["query"] != QUERY and marker_of(created[0]["query"]) is not None
    # The next pages repeat the text the Query object echoes (the model says so).
    assert created[1]["query"] == created[2]["query"] == echoed_query(created[0]["query"])
    assert [p["next_token"] is None for p in result["pages"]] == [False, False, True]
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == [
        "page-0001.jsonl",
        "page-0002.jsonl",
        "page-0003.jsonl",
    ]
    assert result["rows"] == 15 and result["query_id"] == result["pages"][0]["query_id"]


def test_follow_pagination_off_stops_after_the_first_page(emulator: DataKioskEmulator) -> None:
    emulator.pages = 3
    result = operator(follow_pagination=False).execute({})  # type: ignore[arg-type]
    assert len(result["pages"]) == 1 and result["pages"][0]["next_token"]
    assert len(emulator.queries) == 1


def test_done_without_a_document_is_an_empty_success(emulator: DataKioskEmulator, tmp_path: Path) -> None:
    emulator.outcome = "NO_DATA"
    result = operator(destination=str(tmp_path)).execute({})  # type: ignore[arg-type]
    assert result["status"] == "DONE" and result["rows"] == 0
    assert result["pages"][0]["data_document_id"] is None and list(tmp_path.iterdir()) == []


def test_fatal_puts_the_error_document_message_in_the_exception(emulator: DataKioskEmulator) -> None:
    emulator.outcome = "FATAL"
    with pytest.raises(RemoteQueryFailedError, match="startDate is after endDate"):
        operator().execute({})  # type: ignore[arg-type]


def test_cancelled_fails_unless_accepted(emulator: DataKioskEmulator, hook: DataKioskHook) -> None:
    emulator.duration = 0.5
    op = operator()
    orig = hook.get_status

    def cancel_then_poll(query_id: str) -> Any:
        hook.cancel_query(query_id)
        return orig(query_id)

    op.__dict__["hook"] = hook
    hook.get_status = cancel_then_poll  # type: ignore[method-assign]
    with pytest.raises(QueryCancelledError):
        op.execute({})  # type: ignore[arg-type]
    accepting = operator(accept_cancelled=True)
    accepting.__dict__["hook"] = hook
    assert accepting.execute({})["status"] == "CANCELLED"  # type: ignore[arg-type]


def test_on_kill_cancels_the_current_query(emulator: DataKioskEmulator) -> None:
    emulator.duration = 60.0
    op = operator(deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute({})  # type: ignore[arg-type]
    op.on_kill()
    (query,) = emulator.queries.values()
    assert query.cancelled and emulator.requests_to("api", "DELETE")


def test_retry_reattaches_to_the_live_query_of_this_task_instance(emulator: DataKioskEmulator) -> None:
    # Re-attach by look-up adopts only this task instance's query (tests/data_kiosk/test_readings.py
    # shows the queries it refuses).
    emulator.duration = 0.6
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)

    class TI:
        dag_id, task_id, run_id, map_index = "d", "t", "r", -1

        def __init__(self, try_number: int) -> None:
            self.try_number = try_number

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    class DagRun:
        start_date = started

    first_try: Any = {"ti": TI(1), "dag_run": DagRun()}
    first = operator(wait_for_completion=False).execute(first_try)["query_id"]
    retry: Any = {"ti": TI(2), "dag_run": DagRun()}
    result = operator().execute(retry)
    assert result["query_id"] == first and len(emulator.queries) == 1


def test_deferred_chain_survives_dag_test_style_resume(emulator: DataKioskEmulator, tmp_path: Path) -> None:
    emulator.pages = 2
    op = operator(deferrable=True, destination=str(tmp_path))
    with pytest.raises(TaskDeferred) as first:
        op.execute({})  # type: ignore[arg-type]
    with pytest.raises(TaskDeferred) as second:
        op.execute_complete({}, run_trigger(first.value.trigger))  # type: ignore[arg-type]
    result = op.execute_complete({}, run_trigger(second.value.trigger))  # type: ignore[arg-type]
    assert len(result["pages"]) == 2 and len(list(tmp_path.iterdir())) == 2


def test_cancel_operator(emulator: DataKioskEmulator) -> None:
    emulator.duration = 60.0
    query_id = operator(wait_for_completion=False).execute({})["query_id"]  # type: ignore[arg-type]
    DataKioskCancelQueryOperator(task_id="cancel", query_id=query_id).execute({})  # type: ignore[arg-type]
    assert emulator.queries[query_id].cancelled
    with pytest.raises(InvalidInputError, match="query_id"):
        DataKioskCancelQueryOperator(task_id="c", query_id="").execute({})  # type: ignore[arg-type]


def test_notification_from_the_seed_example_parses() -> None:
    text = SEED.read_text(encoding="utf-8")
    envelope = json.loads(text[text.index("{", text.index("notification :")) : text.rindex("}") + 1])
    notification = QueryFinishedNotification.parse(envelope)
    assert notification.account_id == "amzn1.merchant.o.ABCD0123456789"
    assert notification.query_id == "54517018502" and notification.processing_status == "DONE"
    assert notification.next_token and notification.next_token.startswith("AAMA-")
    assert notification.snapshot().state is QueryState.SUCCEEDED


def test_notification_from_the_emulator_completes_like_a_poll(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    emulator.duration = 0.0
    query_id = hook.create_query(QUERY)
    notification = QueryFinishedNotification.parse(json.dumps(emulator.notification_for(query_id)))
    assert notification.account_id == emulator.notification_account_id
    assert notification.snapshot().raw["dataDocumentId"] == hook.get_query(query_id)["dataDocumentId"]
    for bad, match in [
        (
            {**emulator.notification_for(query_id), "notificationType": "REPORT_PROCESSING_FINISHED"},
            "notificationType",
        ),
        ({**emulator.notification_for(query_id), "payload": {"queryId": "1"}}, "accountId"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            QueryFinishedNotification.parse(bad)


def test_example_dag_runs_end_to_end(
    airflow_db: Any, emulator: DataKioskEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.pages = 2
    monkeypatch.setenv("AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("QUERYTASKS_EXAMPLE_POLL_SECONDS", "0.2")
    namespace = runpy.run_path(str(EXAMPLE), run_name="example_data_kiosk")
    run = run_dag(
        namespace["sales_and_traffic"], logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    )
    assert str(run.state).rsplit(".", 1)[-1].lower() == "success"
    pages = sorted(p.name for p in tmp_path.rglob("*.jsonl"))
    assert pages == ["page-0001.jsonl", "page-0002.jsonl"]
    sent = json.loads(emulator.requests_to("api", "POST", r"/queries$")[0].body)["query"]
    # The template file was rendered with the data interval: one whole day, start = end.
    dates = re.findall(r'(?:startDate|endDate): "(\d{4}-\d{2}-\d{2})"', sent)
    assert len(dates) == 2 and dates[0] == dates[1] and "{{" not in sent


def test_notification_operator_fetches_its_page_and_submits_the_next(
    emulator: DataKioskEmulator, hook: DataKioskHook, tmp_path: Path
) -> None:
    emulator.pages, emulator.duration = 2, 0.2
    first = hook.create_query(QUERY)
    emulator.clock.advance(1)
    sqs_message = {"MessageId": "m1", "Body": json.dumps(emulator.notification_for(first))}
    [result] = DataKioskNotificationOperator(
        task_id="on_notification", notification=sqs_message, destination=str(tmp_path)
    ).execute({})  # type: ignore[arg-type]
    # One page per run: this page is fetched, the next is submitted and not waited for.
    assert result["query_id"] == first and result["fetch"]["rows"] == emulator.rows
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first}.jsonl"]
    follow_up = json.loads(emulator.requests_to("api", "POST", r"/queries$")[-1].body)
    assert follow_up["query"] == echoed_query(QUERY) and follow_up["paginationToken"] == result["next_token"]
    assert not emulator.requests_to("api", "GET", rf"/queries/{result['next_query_id']}$")
    # The next page's own notification ends the chain.
    emulator.clock.advance(1)
    [last] = DataKioskNotificationOperator(
        task_id="on_notification", notification=emulator.notification_for(result["next_query_id"])
    ).execute({})  # type: ignore[arg-type]
    assert last["next_token"] is None and last["next_query_id"] is None
    assert len(emulator.requests_to("api", "POST", r"/queries$")) == 2


def test_notification_operator_retry_reuses_the_next_page_only_from_the_task_state_store(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    emulator.pages, emulator.duration = 2, 5.0
    first = hook.create_query(QUERY)
    emulator.clock.advance(6)
    envelope = emulator.notification_for(first)

    class Store(dict[str, Any]):
        def set(self, key: str, value: Any) -> None:
            self[key] = value

    class Try:
        def __init__(self, number: int) -> None:
            self.try_number = number

    store = Store()
    first_try: Any = {"ti": Try(1), "task_state_store": store}
    [submitted] = DataKioskNotificationOperator(task_id="n", notification=envelope).execute(first_try)
    retry: Any = {"ti": Try(2), "task_state_store": store}
    [again] = DataKioskNotificationOperator(task_id="n", notification=envelope).execute(retry)
    assert again["next_query_id"] == submitted["next_query_id"]
    assert len(emulator.requests_to("api", "POST", r"/queries$")) == 2
    # Without the store nothing tells this task instance's page from another run's: submitted again.
    third_try: Any = {"ti": Try(3)}
    [third] = DataKioskNotificationOperator(task_id="n", notification=envelope).execute(third_try)
    assert third["next_query_id"] != submitted["next_query_id"]


def test_notification_operator_reads_the_triggering_asset_event(
    emulator: DataKioskEmulator, hook: DataKioskHook
) -> None:
    emulator.duration, emulator.outcome = 0.0, "FATAL"
    envelope = emulator.notification_for(hook.create_query(QUERY))

    class Event:
        extra = {"payload": envelope}

    context = {"triggering_asset_events": {"sqs-asset": [Event()]}}
    with pytest.raises(RemoteQueryFailedError, match="startDate is after endDate"):
        DataKioskNotificationOperator(task_id="n").execute(context)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="notification"):
        DataKioskNotificationOperator(task_id="n").execute({})  # type: ignore[arg-type]


def test_notification_of_another_account_skips(emulator: DataKioskEmulator, hook: DataKioskHook) -> None:
    emulator.duration = 0.0
    envelope = emulator.notification_for(hook.create_query(QUERY))
    envelope["payload"]["accountId"] = "A-SOMEONE-ELSE"
    with pytest.raises(AirflowSkipException, match="A-SOMEONE-ELSE"):
        DataKioskNotificationOperator(task_id="n", notification=envelope).execute({})  # type: ignore[arg-type]
