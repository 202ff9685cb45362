"""SQS batch calls report per-entry ``Failed`` results (issue 28): never silently lost.

A claimed notification whose delete failed at SQS's fault is deleted by a second batch call; one
that still fails is logged with what becomes of the message. Also the account warning of a
notification no wait takes because of its account, through the queue.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from airflow_provider_querytasks.common.wait.loop import PollSchedule
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.notification_sources.amazon_sqs import SqsNotificationSource
from airflow_provider_querytasks.protocols.amazon_data_kiosk import read_notification
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger

from ..data_kiosk.conftest import QUERY
from ..helpers import FAST_RETRY, run_trigger, use_connection

pytest.importorskip("boto3", reason="needs the amazon extra")
pytest.importorskip("airflow.providers.amazon.aws.hooks.sqs", reason="needs the amazon extra")


@pytest.fixture
def emulator(data_kiosk_emulator: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch) -> DataKioskEmulator:
    use_connection(monkeypatch, data_kiosk_emulator.aws_connection())
    return data_kiosk_emulator


def source(emulator: DataKioskEmulator) -> SqsNotificationSource:
    account = DataKioskHook(retry=FAST_RETRY).notification_account()
    return SqsNotificationSource(emulator.notification_queue_url, "aws_default", account)


def batch_calls(emulator: DataKioskEmulator, action: str) -> list[list[dict[str, Any]]]:
    return [
        json.loads(r.body)["Entries"]
        for r in emulator.requests_to("sqs")
        if r.header("X-Amz-Target") == f"AmazonSQS.{action}"
    ]


def trigger(query_id: str, queue: SqsNotificationSource) -> DataKioskQueryTrigger:
    """A wait whose first safety-net poll is ten minutes away: only the notification ends it."""
    return DataKioskQueryTrigger(
        conn_id="amazon_sp_api_default",
        query_id=query_id,
        deadline=time.time() + 30,
        poll_schedule=PollSchedule(initial=600, maximum=600).to_dict(),
        started=time.time(),
        notifications=queue.to_dict(),
    )


@pytest.mark.parametrize("path", ["worker", "triggerer"])
def test_a_delete_failed_at_sqs_fault_is_sent_again(emulator: DataKioskEmulator, path: str) -> None:
    emulator.duration = 2.0
    mine = emulator.add_query(QUERY).query_id
    emulator.sqs.fail_entries(1)  # the first delete entry fails: InternalError, not the sender's fault
    queue = source(emulator)
    if path == "worker":
        snapshot = queue.listen(read_notification, mine, timeout=10)
        assert snapshot is not None and snapshot.query_id == mine
    else:
        assert run_trigger(trigger(mine, queue))["status"] == "success"
    deletes = batch_calls(emulator, "DeleteMessageBatch")
    assert len(deletes) == 2 and deletes[0] == deletes[1]  # the failed entry, once more
    assert emulator.sqs.messages(emulator.NOTIFICATION_QUEUE) == []  # not left to be dead-lettered


def test_a_delete_that_fails_twice_is_logged_with_the_messages_fate(
    emulator: DataKioskEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.duration = 2.0
    mine = emulator.add_query(QUERY).query_id
    emulator.sqs.fail_entries(2)
    with caplog.at_level(logging.WARNING):
        assert source(emulator).listen(read_notification, mine, timeout=10) is not None
    [left] = emulator.sqs.messages(emulator.NOTIFICATION_QUEUE)
    [warning] = [r.getMessage() for r in caplog.records if "delete_message_batch" in r.getMessage()]
    assert left.message_id in warning and "InternalError" in warning and "dead-letter" in warning


def test_a_notification_of_another_account_warns_once_through_the_queue(
    emulator: DataKioskEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.duration = 0.0
    emulator.account_prefix = "amzn1.merchant.o."
    mine = emulator.add_query(QUERY).query_id
    emulator.account_id = "A3SOMEBODYELSE"  # the notification is another seller's
    emulator.publish_notifications()
    with caplog.at_level(logging.WARNING):
        queue = SqsNotificationSource(emulator.notification_queue_url, "aws_default", "A3EMULATORSP")
        assert queue.listen(read_notification, mine, timeout=3) is None
    warnings = [r.getMessage() for r in caplog.records if "not this connection's account" in r.getMessage()]
    assert len(warnings) == 1
    assert "amzn1.merchant.o.A3SOMEBODYELSE" in warnings[0] and "A3EMULATORSP" in warnings[0]
