"""The SQS reader is tested on the Data Kiosk emulator: it serves the SQS queue its completion
notifications go to, and a Data Kiosk trigger is the wait that listens to it."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_querytasks.common.wait.loop import PollSchedule
from airflow_provider_querytasks.notification_sources.amazon_sqs import SqsNotificationSource
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger

from ..helpers import use_connection

#: A wait whose first safety-net poll is ten minutes away: only the notification can end it soon.
RARE_POLLS = PollSchedule(initial=600, maximum=600).to_dict()


@pytest.fixture
def emulator(data_kiosk_emulator: DataKioskEmulator) -> DataKioskEmulator:
    """The Data Kiosk emulator (``tests/conftest.py``), with its SQS queue."""
    return data_kiosk_emulator


@pytest.fixture
def aws(emulator: DataKioskEmulator, monkeypatch: pytest.MonkeyPatch) -> SqsNotificationSource:
    use_connection(monkeypatch, emulator.aws_connection())
    return SqsNotificationSource(emulator.notification_queue_url, "aws_default", emulator.account_id)


def notified_trigger(
    query_id: str, source: SqsNotificationSource, deadline: float = 30.0
) -> DataKioskQueryTrigger:
    return DataKioskQueryTrigger(
        conn_id="amazon_sp_api_default",
        query_id=query_id,
        deadline=time.time() + deadline,
        poll_schedule=RARE_POLLS,
        started=time.time(),
        notifications=source.to_dict(),
    )


def polls_of(emulator: DataKioskEmulator, query_id: str) -> int:
    return len(emulator.requests_to("api", "GET", rf"/queries/{query_id}$"))


def sqs_calls(emulator: DataKioskEmulator, action: str) -> int:
    return sum(r.header("X-Amz-Target") == f"AmazonSQS.{action}" for r in emulator.requests_to("sqs"))


def sqs_deleted(emulator: DataKioskEmulator) -> int:
    """Messages deleted, one by one or in batches."""
    return sqs_calls(emulator, "DeleteMessage") + sum(
        len(json.loads(r.body)["Entries"])
        for r in emulator.requests_to("sqs")
        if r.header("X-Amz-Target") == "AmazonSQS.DeleteMessageBatch"
    )
