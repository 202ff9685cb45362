"""The Amazon SQS reader (notification_sources/amazon_sqs.py) that ends waits on completion
notifications: the shared long-poll reader, hand-back and re-send, errors, the source as trigger
kwargs. On the Data Kiosk emulator's queue, with the amazon extra."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import QueryTaskError
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
from airflow_provider_querytasks.common.wait.loop import PollSchedule
from airflow_provider_querytasks.common.wait.notifications import BaseNotificationSource
from airflow_provider_querytasks.notification_sources.amazon_sqs import SqsNotificationSource
from airflow_provider_querytasks.protocols.amazon_data_kiosk import read_notification
from airflow_provider_querytasks.sensors.amazon_data_kiosk import DataKioskQuerySensor
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.sqs import SqsError

from ..data_kiosk.conftest import QUERY
from ..helpers import run_trigger, use_connection
from .conftest import notified_trigger, polls_of, sqs_calls, sqs_deleted

boto3 = pytest.importorskip("boto3", reason="needs the amazon extra")
pytest.importorskip("airflow.providers.amazon.aws.hooks.sqs", reason="needs the amazon extra")


# -- the deferred wait ------------------------------------------------------------------------
def test_trigger_ends_on_the_notification_without_a_status_poll(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 2.0
    query_id = emulator.add_query(QUERY).query_id
    event = run_trigger(notified_trigger(query_id, aws))
    assert event["status"] == "success", event
    assert event["snapshot"]["raw"]["dataDocumentId"]
    assert polls_of(emulator, query_id) == 0  # the wait listens first: getQuery is the safety net
    assert not emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)  # claimed and deleted


def test_a_notification_queued_before_the_wait_ends_it_at_once(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 0.0
    query_id = emulator.add_query(QUERY).query_id
    emulator.publish_notifications()  # delivered before anybody waits
    event = run_trigger(notified_trigger(query_id, aws))
    assert event["status"] == "success" and polls_of(emulator, query_id) == 0


def test_fifty_waits_share_one_queue_reader(emulator: DataKioskEmulator, aws: SqsNotificationSource) -> None:
    emulator.duration = 3.0
    emulator.enforce_rate_limits = False  # this test is about SQS, not the getQuery plan
    ids = [emulator.add_query(QUERY).query_id for _ in range(50)]

    async def wait_all() -> list[dict[str, Any]]:
        async def first(query_id: str) -> dict[str, Any]:
            async for event in notified_trigger(query_id, aws).run():
                return dict(event.payload)
            raise AssertionError("no event")

        try:
            return await asyncio.gather(*(first(q) for q in ids))
        finally:
            await close_shared_client_session()

    events = asyncio.run(wait_all())
    assert [e["status"] for e in events] == ["success"] * 50
    assert [e["query_id"] for e in events] == ids
    assert sum(polls_of(emulator, q) for q in ids) == 0
    # One long-polling reader, ten messages a call: far fewer receives than waits.
    assert sqs_calls(emulator, "ReceiveMessage") <= 20
    assert sqs_deleted(emulator) == 50 and sqs_calls(emulator, "DeleteMessageBatch") < 50


def test_other_consumers_messages_are_left_on_the_queue(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 0.0
    unrelated = emulator.add_query(QUERY).query_id
    emulator.sqs.send(emulator.NOTIFICATION_QUEUE, {"some": "other message"})
    emulator.duration = 2.0
    mine = emulator.add_query(QUERY).query_id
    assert run_trigger(notified_trigger(mine, aws))["status"] == "success"
    left = [json.loads(m.body) for m in emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)]
    assert {"some": "other message"} in left
    assert [m["payload"]["queryId"] for m in left if "payload" in m] == [unrelated]


def test_lost_notification_still_ends_by_the_safety_net_poll(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration, emulator.notify = 0.5, False
    query_id = emulator.add_query(QUERY).query_id
    trigger = notified_trigger(query_id, aws)
    trigger.poll_schedule = PollSchedule(initial=1.0, maximum=1.0).to_dict()
    assert run_trigger(trigger)["status"] == "success"
    assert polls_of(emulator, query_id) == 1


def test_unreadable_queue_ends_the_wait_with_its_url(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 60.0
    query_id = emulator.add_query(QUERY).query_id
    wrong = SqsNotificationSource(aws.queue_url + "-typo", aws.aws_conn_id, aws.account)
    event = run_trigger(notified_trigger(query_id, wrong))
    assert event["status"] == "error"
    assert wrong.queue_url in event["message"] and "NonExistentQueue" in event["message"]
    assert emulator.aws_secret_access_key not in event["message"]


# -- serialised triggers ---------------------------------------------------------------------
def test_the_sqs_source_travels_as_a_dict_naming_its_class() -> None:
    source = SqsNotificationSource("https://sqs.example/1/q", "aws_other", "A-1")
    data = source.to_dict()
    assert data == {
        "classpath": "airflow_provider_querytasks.notification_sources.amazon_sqs.SqsNotificationSource",
        "queue_url": "https://sqs.example/1/q",
        "aws_conn_id": "aws_other",
        "account": "A-1",
    }
    assert BaseNotificationSource.from_dict(json.loads(json.dumps(data))) == source


def test_a_trigger_serialised_before_sources_named_their_class_still_listens_on_sqs(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    """A task deferred by an earlier build survives the provider upgrade: its kwargs'
    ``notifications`` (queue_url, aws_conn_id, account; no class) rebuild to the SQS source."""
    emulator.duration = 2.0
    query_id = emulator.add_query(QUERY).query_id
    classpath, kwargs = notified_trigger(query_id, aws).serialize()
    kwargs["notifications"] = {
        "queue_url": aws.queue_url,
        "aws_conn_id": aws.aws_conn_id,
        "account": aws.account,
    }
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    event = run_trigger(rebuilt)
    assert event["status"] == "success", event
    assert polls_of(emulator, query_id) == 0  # ended by the notification (the next poll is 10 min away)
    assert not emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)


# -- errors -----------------------------------------------------------------------------------
def test_secrets_stay_out_of_errors(emulator: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = emulator.aws_connection()
    conn["password"] = "wrong-" + emulator.aws_secret_access_key
    conn["login"] = "AKIAWRONGKEY"
    use_connection(monkeypatch, conn)
    source = SqsNotificationSource(emulator.notification_queue_url)
    with pytest.raises(QueryTaskError) as raised:
        DataKioskQuerySensor(task_id="s", query_id="1", notification_queue_url=source.queue_url).poke({})  # type: ignore[arg-type]
    assert "InvalidClientTokenId" in str(raised.value)
    assert emulator.aws_secret_access_key not in str(raised.value)


# -- several consumers on one queue ------------------------------------------------------------
def test_a_notification_for_another_consumer_is_handed_back_at_once(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 0.0
    theirs = emulator.add_query(QUERY).query_id  # another triggerer waits for this one
    emulator.publish_notifications()
    emulator.duration = 2.0
    mine = emulator.add_query(QUERY).query_id
    assert run_trigger(notified_trigger(mine, aws))["status"] == "success"
    [left] = emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)
    assert json.loads(left.body)["payload"]["queryId"] == theirs
    # Handed back at once, not hidden for the 30 s visibility timeout (from the third receive
    # on, for a second or two: a message nobody claims must not keep the reader busy).
    batches = [
        json.loads(r.body)["Entries"]
        for r in emulator.requests_to("sqs")
        if r.header("X-Amz-Target") == "AmazonSQS.ChangeMessageVisibilityBatch"
    ]
    assert batches and batches[0][0]["VisibilityTimeout"] == 0
    # The hand-back in effect (each receive was handed back) hides it for a few seconds at most.
    assert left.receive_count == len(batches) and batches[-1][0]["VisibilityTimeout"] < 5


def test_a_notification_received_too_often_is_sent_again_not_dead_lettered(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.sqs.create_queue(emulator.NOTIFICATION_QUEUE, dead_letter_queue="dlq", max_receive_count=5)
    emulator.duration = 0.0
    theirs = emulator.add_query(QUERY).query_id
    emulator.publish_notifications()
    [message] = emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)
    message.receive_count = 4  # other triggerers handed it back four times already
    emulator.duration = 2.0
    mine = emulator.add_query(QUERY).query_id
    assert run_trigger(notified_trigger(mine, aws))["status"] == "success"
    [fresh] = emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)
    assert json.loads(fresh.body)["payload"]["queryId"] == theirs and fresh.message_id != message.message_id
    assert fresh.receive_count <= 1 and int(fresh.attributes["querytasks-receives"]["StringValue"]) >= 5
    assert int(fresh.attributes["querytasks-first-sent"]["StringValue"]) == int(message.sent * 1000)
    assert not emulator.sqs.messages("dlq")


@pytest.mark.parametrize("path", ["worker", "triggerer"])
def test_a_refused_re_send_hands_the_notification_back_instead(
    emulator: DataKioskEmulator, aws: SqsNotificationSource, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    def refuse(params: dict[str, Any]) -> dict[str, Any]:
        raise SqsError("AccessDeniedException", "not authorized to perform: sqs:SendMessage", 403)

    monkeypatch.setattr(emulator.sqs, "_op_SendMessage", refuse)
    emulator.duration = 0.0
    theirs = emulator.add_query(QUERY).query_id
    emulator.publish_notifications()
    [message] = emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)
    message.receive_count = 4  # due for a re-send at this receive
    emulator.duration = 2.0
    mine = emulator.add_query(QUERY).query_id
    if path == "worker":
        snapshot = aws.listen(read_notification, mine, timeout=10)
        assert snapshot is not None and snapshot.query_id == mine
    else:
        assert run_trigger(notified_trigger(mine, aws))["status"] == "success"
    assert sqs_calls(emulator, "SendMessage") >= 1  # tried, refused
    [left] = emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)
    assert left.message_id == message.message_id and json.loads(left.body)["payload"]["queryId"] == theirs
