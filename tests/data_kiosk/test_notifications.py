"""Data Kiosk completion notifications (the amazon extra): the emulator's queue, the decoder, the
operators' and sensor's notification options, the event-driven DAG's path. The SQS reader itself
(notification_sources/amazon_sqs.py) is tested in tests/notification_sources/test_amazon_sqs.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import InvalidInputError, QueryTaskError
from airflow_provider_querytasks.common.api.notifications import Notification
from airflow_provider_querytasks.common.api.status import QueryState
from airflow_provider_querytasks.common.wait.loop import PollSchedule
from airflow_provider_querytasks.compat import PokeReturnValue, TaskDeferred
from airflow_provider_querytasks.notification_sources.amazon_sqs import SqsNotificationSource
from airflow_provider_querytasks.operators.amazon_data_kiosk import (
    DataKioskNotificationOperator,
    DataKioskQueryOperator,
)
from airflow_provider_querytasks.protocols.amazon_data_kiosk import read_notification
from airflow_provider_querytasks.sensors.amazon_data_kiosk import DataKioskQuerySensor
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger

from ..helpers import run_trigger, use_connection
from ..notification_sources.conftest import polls_of, sqs_deleted
from .conftest import QUERY

boto3 = pytest.importorskip("boto3", reason="needs the amazon extra")
pytest.importorskip("airflow.providers.amazon.aws.hooks.sqs", reason="needs the amazon extra")


@pytest.fixture
def aws(emulator: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch) -> SqsNotificationSource:
    use_connection(monkeypatch, emulator.aws_connection())
    return SqsNotificationSource(emulator.notification_queue_url, "aws_default", emulator.account_id)


def sqs_client(emulator: DataKioskEmulator) -> Any:
    conn = emulator.aws_connection()
    return boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=conn["extra"]["endpoint_url"],
        aws_access_key_id=conn["login"],
        aws_secret_access_key=conn["password"],
    )


# -- the emulator's queue ---------------------------------------------------------------------
def test_emulator_queues_one_notification_per_finished_query(emulator: DataKioskEmulator) -> None:
    emulator.duration = 0.0
    done = emulator.add_query(QUERY).query_id
    client = sqs_client(emulator)
    answer = client.receive_message(
        QueueUrl=emulator.notification_queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
    )
    [message] = answer["Messages"]
    notification = read_notification(message["Body"])
    assert notification is not None and notification.query_id == done
    assert (
        notification.snapshot.state is QueryState.SUCCEEDED
        and message["Attributes"]["ApproximateReceiveCount"] == "1"
    )
    # Received and not deleted: hidden for the visibility timeout, then offered again.
    assert "Messages" not in client.receive_message(QueueUrl=emulator.notification_queue_url)
    client.change_message_visibility(
        QueueUrl=emulator.notification_queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    again = client.receive_message(QueueUrl=emulator.notification_queue_url)["Messages"][0]
    assert again["MessageId"] == message["MessageId"] and "Attributes" not in again
    deleted = client.delete_message_batch(
        QueueUrl=emulator.notification_queue_url,
        Entries=[{"Id": "1", "ReceiptHandle": again["ReceiptHandle"]}],
    )
    assert deleted["Successful"] == [{"Id": "1"}] and not emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)


def test_emulator_answers_sqs_errors_as_sqs_does(emulator: DataKioskEmulator) -> None:
    client = sqs_client(emulator)
    with pytest.raises(client.exceptions.QueueDoesNotExist):
        client.receive_message(QueueUrl=emulator.notification_queue_url + "-missing")
    with pytest.raises(client.exceptions.ReceiptHandleIsInvalid):
        client.delete_message(QueueUrl=emulator.notification_queue_url, ReceiptHandle="nope")
    stranger = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=emulator.urls["sqs"],
        aws_access_key_id="AKIASOMEONEELSE",
        aws_secret_access_key="x",
    )
    with pytest.raises(Exception, match="InvalidClientTokenId"):
        stranger.receive_message(QueueUrl=emulator.notification_queue_url)


def test_decoder_ignores_what_is_not_a_data_kiosk_notification(emulator: DataKioskEmulator) -> None:
    emulator.duration = 0.0
    envelope = emulator.notification_for(emulator.add_query(QUERY).query_id)
    assert read_notification("not json") is None
    assert (
        read_notification(json.dumps({**envelope, "notificationType": "REPORT_PROCESSING_FINISHED"})) is None
    )
    notification = read_notification(json.dumps(envelope))
    assert isinstance(notification, Notification)
    source = SqsNotificationSource("https://sqs.example/1/q", account=emulator.account_id)
    assert source.accepts(notification, notification.query_id)
    assert not source.accepts(notification, "another-query")
    assert not SqsNotificationSource("https://sqs.example/1/q", account="A-OTHER").accepts(
        notification, notification.query_id
    )


# -- operators and sensors --------------------------------------------------------------------
def test_operator_refuses_a_bad_queue_before_submitting(emulator: DataKioskEmulator) -> None:
    for url, parameter in [("data-kiosk-notifications", "notification_queue_url"), ("", None)]:
        op = DataKioskQueryOperator(task_id="q", query=QUERY, notification_queue_url=url)
        if parameter is None:
            assert op.notification_source() is None  # empty: poll only
            continue
        with pytest.raises(InvalidInputError, match=parameter):
            op.execute({})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="aws_conn_id"):
        DataKioskQueryOperator(
            task_id="q", query=QUERY, notification_queue_url="https://sqs.example/1/q", aws_conn_id=" "
        ).execute({})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="notification_poll_interval"):
        DataKioskQueryOperator(task_id="q", query=QUERY, notification_poll_interval=0)
    assert not emulator.requests_to("api", "POST")


def test_deferrable_operator_hands_the_queue_to_its_trigger(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 2.0
    op = DataKioskQueryOperator(
        task_id="q",
        query=QUERY,
        deferrable=True,
        notification_queue_url=aws.queue_url,
        notification_poll_interval=900,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, DataKioskQueryTrigger)
    assert trigger.notifications == aws.to_dict()
    assert trigger.poll_schedule == PollSchedule.safety_net(900).to_dict()
    event = run_trigger(trigger)
    result = op.execute_complete({}, event)  # type: ignore[arg-type]
    assert result["status"] == "DONE" and polls_of(emulator, result["query_id"]) == 0


def test_operator_waiting_in_the_worker_listens_to_the_queue(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 2.0
    op = DataKioskQueryOperator(task_id="q", query=QUERY, notification_queue_url=aws.queue_url)
    result = op.execute({})  # type: ignore[arg-type]
    assert result["status"] == "DONE"
    assert polls_of(emulator, result["query_id"]) == 0 and sqs_deleted(emulator) == 1


def test_sensor_poke_takes_the_notification_without_a_status_call(
    emulator: DataKioskEmulator, aws: SqsNotificationSource
) -> None:
    emulator.duration = 0.0
    query_id = emulator.add_query(QUERY).query_id
    sensor = DataKioskQuerySensor(task_id="s", query_id=query_id, notification_queue_url=aws.queue_url)
    done = sensor.poke({})  # type: ignore[arg-type]
    assert isinstance(done, PokeReturnValue) and (done.xcom_value or {})["status"] == "DONE"
    assert polls_of(emulator, query_id) == 0
    # Deferred, the sensor's trigger listens to the same queue.
    emulator.duration = 5.0
    running = emulator.add_query(QUERY).query_id
    with pytest.raises(TaskDeferred) as deferred:
        DataKioskQuerySensor(
            task_id="s", query_id=running, deferrable=True, notification_queue_url=aws.queue_url
        ).execute({})  # type: ignore[arg-type]
    assert deferred.value.trigger.notifications == aws.to_dict()


def test_the_wait_scopes_the_source_to_the_connections_account(emulator: DataKioskEmulator) -> None:
    sensor = DataKioskQuerySensor(
        task_id="s", query_id="q", notification_queue_url="https://sqs.us-east-1.amazonaws.com/1/q"
    )
    source = sensor.notification_source()
    assert source is not None and source.account == emulator.account_id


# -- the event-driven DAG's path: MessageQueueTrigger -> asset event -> operator ---------------
def test_message_queue_trigger_payload_drives_the_notification_operator(
    emulator: DataKioskEmulator, aws: SqsNotificationSource, tmp_path: Any
) -> None:
    msg_queue = pytest.importorskip(
        "airflow.providers.common.messaging.triggers.msg_queue",
        reason="needs the messaging extra (Airflow 3)",
    )
    emulator.duration = 0.0
    query_id = emulator.add_query(QUERY).query_id
    # What the example DAG's AssetWatcher runs in the triggerer.
    trigger = msg_queue.MessageQueueTrigger(scheme="sqs", sqs_queue=aws.queue_url)
    payload = run_trigger(trigger)

    class AssetEvent:
        extra = {"payload": payload}

    context = {"triggering_asset_events": {"data_kiosk_query_finished": [AssetEvent()]}}
    [result] = DataKioskNotificationOperator(task_id="n", destination=str(tmp_path)).execute(context)  # type: ignore[arg-type]
    assert result["query_id"] == query_id and result["fetch"]["rows"] == emulator.rows
    assert not emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)


def test_notification_operator_handles_every_notification_a_run_carries(
    emulator: DataKioskEmulator, tmp_path: Any
) -> None:
    emulator.duration = 0.0
    done = [emulator.add_query(QUERY).query_id for _ in range(2)]
    emulator.outcome = "FATAL"
    fatal = emulator.add_query(QUERY).query_id
    foreign = emulator.notification_for(done[1])
    foreign["payload"]["accountId"] = "A-SOMEONE-ELSE"
    batch = {"status": "success", "message_batch": [{"Body": json.dumps(emulator.notification_for(done[0]))}]}

    class AssetEvent:
        def __init__(self, payload: Any) -> None:
            self.extra = {"payload": payload}

    # Two queued asset events share the run: a batch of one, and a batch of the other two.
    second = {
        "message_batch": [
            {"Body": json.dumps(foreign)},
            {"Body": json.dumps(emulator.notification_for(fatal))},
        ]
    }
    context = {
        "triggering_asset_events": {"data_kiosk_query_finished": [AssetEvent(batch), AssetEvent(second)]}
    }
    with pytest.raises(QueryTaskError, match="startDate is after endDate"):
        DataKioskNotificationOperator(task_id="n", destination=str(tmp_path)).execute(context)  # type: ignore[arg-type]
    # The DONE page was fetched before the FATAL one failed the task; the foreign one was ignored.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{done[0]}.jsonl"]
    with pytest.raises(InvalidInputError, match="no message"):
        DataKioskNotificationOperator(task_id="n", notification={"message_batch": []}).execute({})  # type: ignore[arg-type]


# -- several consumers on one queue ------------------------------------------------------------
def test_emulator_changes_visibility_in_batches_and_redrives_to_a_dead_letter_queue(
    emulator: DataKioskEmulator,
) -> None:
    emulator.sqs.create_queue("q", dead_letter_queue="q-dlq", max_receive_count=2)
    emulator.sqs.send("q", "hello", {"a": {"DataType": "String", "StringValue": "1"}})
    client = sqs_client(emulator)
    url = emulator.sqs.queue_url("q")
    for count in ("1", "2"):
        [message] = client.receive_message(
            QueueUrl=url, AttributeNames=["ApproximateReceiveCount"], MessageAttributeNames=["a"]
        )["Messages"]
        assert message["Attributes"]["ApproximateReceiveCount"] == count
        assert message["MessageAttributes"]["a"]["StringValue"] == "1"
        answer = client.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": "m", "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0},
                {"Id": "x", "ReceiptHandle": "stale", "VisibilityTimeout": 0},
            ],
        )
        assert (
            answer["Successful"] == [{"Id": "m"}] and answer["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
        )
    # Received maxReceiveCount times: the next receive moves it to the dead-letter queue.
    assert "Messages" not in client.receive_message(QueueUrl=url)
    assert [m.body for m in emulator.sqs.messages("q-dlq")] == ["hello"]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 2
