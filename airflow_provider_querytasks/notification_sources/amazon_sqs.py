"""Completion notifications read from an Amazon SQS queue: the SQS notification source.

It lives beside the Data Kiosk hook, in the hook layer, because it is a client of an external
service (the amazon provider's ``SqsHook``, optional extra ``amazon``: boto3 in workers,
aiobotocore in the triggerer), as a hook is; not in a ``notifications/`` package, which in
Airflow's by-kind provider layout holds *notifiers* (``BaseNotifier`` classes that send alerts,
listed under ``notifications`` in the provider metadata). ``common/`` keeps only the
platform-neutral interface; what a message means is the Data Kiosk protocol's decoder.

In the triggerer, every wait on one queue shares a single long-polling reader per event loop, so
1,000 deferred queries cost one ``ReceiveMessage`` call at a time, not 1,000. A message for a
query being waited for is deleted once handed over. Any other message is *handed back*
(``ChangeMessageVisibilityBatch``), not hidden for the visibility timeout: with several
triggerers (or a worker waiting beside them) it is probably another one's, and that one's own
long poll takes it within moments; the reader that handed it back pauses a moment before its next
receive, so as not to take it again. Handed back at once its first two receives, then hidden 1,
2, 4... up to 30 s: a message nobody claims does not keep every reader busy. Each receive counts
towards the queue's ``maxReceiveCount``, so a notification received
:data:`REQUEUE_AT_RECEIVE_COUNT` times and still unclaimed is sent again as a fresh message (its
receive count starts over; its first send time and receives so far travel in message attributes)
and the old one deleted, for up to :data:`REQUEUE_FOR_SECONDS` after it was first sent: no
notification reaches the dead-letter queue while its wait may still be starting or moving
between triggerers. Past that, and for messages that are not notifications, the queue's redrive
policy applies (see docs/data_kiosk.md for the ``maxReceiveCount`` to use).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from airflow_provider_querytasks.common.api.errors import InvalidInputError, QueryTaskError
from airflow_provider_querytasks.common.api.notifications import Decoder, Notification
from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.common.wait.loop import PollSchedule
from airflow_provider_querytasks.common.wait.mixin import HookT, QueryWaitMixin
from airflow_provider_querytasks.common.wait.notifications import (
    BaseNotificationSource,
    NotificationSubscription,
)

#: SQS long-poll limit (``WaitTimeSeconds``), messages per receive, and how long a received message
#: that belongs to somebody else stays hidden before it is offered again.
LONG_POLL_SECONDS = 20
BATCH_SIZE = 10
VISIBILITY_TIMEOUT = 30

#: The ``aws`` connection used when none is named (the amazon provider's default).
DEFAULT_AWS_CONN_ID = "aws_default"

#: Seconds a reader waits before its next receive after handing messages back (jittered), so
#: that another consumer's long poll takes them rather than this reader again.
HAND_BACK_PAUSE = 0.5
#: An unclaimed notification received this many times is sent again as a fresh message...
REQUEUE_AT_RECEIVE_COUNT = 5
#: ... for this long after it was first sent (then the redrive policy applies).
REQUEUE_FOR_SECONDS = 900.0
#: The message attributes carrying a re-sent notification's first send time (epoch ms) and
#: how many times it was received before.
FIRST_SENT_ATTRIBUTE = "querytasks-first-sent"
RECEIVES_ATTRIBUTE = "querytasks-receives"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SqsNotificationSource(BaseNotificationSource):
    """An Amazon SQS queue a wait listens on for its completion notification.

    :param queue_url: the SQS queue URL (``https://sqs.<region>.amazonaws.com/<account>/<name>``).
    :param aws_conn_id: the amazon provider's ``aws`` connection with access to the queue.
    :param account: accept only notifications of this account (``None``: any account).
    """

    queue_url: str
    aws_conn_id: str = DEFAULT_AWS_CONN_ID
    account: str | None = None

    @classmethod
    def checked(cls, queue_url: Any, aws_conn_id: Any, account: str | None = None) -> SqsNotificationSource:
        """Validate the operator's parameters (before any call) and the amazon extra."""
        if not isinstance(queue_url, str) or not queue_url.startswith(("https://", "http://")):
            raise InvalidInputError(
                "notification_queue_url",
                "must be an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>), "
                f"got {queue_url!r}",
            )
        if not isinstance(aws_conn_id, str) or not aws_conn_id.strip():
            raise InvalidInputError("aws_conn_id", f"must name an aws connection, got {aws_conn_id!r}")
        try:
            import airflow.providers.amazon.aws.hooks.sqs  # noqa: F401
        except ImportError:
            raise InvalidInputError(
                "notification_queue_url",
                "needs the amazon provider: pip install 'airflow-provider-querytasks[amazon]'",
            ) from None
        return cls(queue_url=queue_url, aws_conn_id=aws_conn_id, account=account)

    def accepts(self, notification: Notification, query_id: str) -> bool:
        """Whether ``notification`` ends the wait for ``query_id`` (both accounts are in the
        platform decoder's normalised form: see the hook's ``notification_account``)."""
        return notification.query_id == query_id and (
            self.account is None or notification.account in (None, self.account)
        )

    def claims(self, notification: Notification, query_id: str) -> bool:
        """:meth:`accepts`; a notification for ``query_id`` refused only for its account logs one
        warning naming both accounts (a wrong ``selling_partner_id`` would otherwise leave every
        wait to its safety-net polls, with nothing saying why)."""
        if self.accepts(notification, query_id):
            return True
        if notification.query_id == query_id:
            warn_account_refused(self, notification)
        return False

    def sqs_hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        return SqsHook(aws_conn_id=self.aws_conn_id)

    def error(self, exc: BaseException) -> QueryTaskError:
        return QueryTaskError(
            f"Could not read notifications from SQS queue {self.queue_url}: {type(exc).__name__}: {exc}"
        )

    def listen(self, decode: Decoder, query_id: str, timeout: float) -> StatusSnapshot | None:
        """Long-poll the queue (blocking) for up to ``timeout`` seconds for ``query_id``'s
        notification: its snapshot (the message is deleted), or ``None`` when none came in time.
        Other messages are handed back at once (see the module docstring)."""
        client = self.sqs_hook().get_conn()
        until = time.monotonic() + timeout
        may_requeue = True
        while True:
            remaining = until - time.monotonic()
            try:
                answer = client.receive_message(**_receive_kwargs(self, remaining))
                settlement = _settle(
                    answer.get("Messages") or [],
                    decode,
                    lambda n: self.claims(n, query_id),
                    may_requeue,
                )
                calls = _settlement_calls(self, settlement, may_requeue)
                try:
                    call = next(calls)
                    while True:
                        try:
                            outcome: Any = getattr(client, call[0])(**call[1])
                        except Exception as exc:
                            outcome = _refused_outcome(call, exc)
                        call = calls.send(outcome)
                except StopIteration as done:
                    may_requeue = done.value
            except Exception as exc:
                raise self.error(exc) from exc
            if settlement.claimed:
                return settlement.claimed[0][1].snapshot
            if settlement.hand_back and until - time.monotonic() > 1:
                time.sleep(_pause())
            if until - time.monotonic() < 1:
                return None

    @asynccontextmanager
    async def subscribe(self, decode: Decoder, query_id: str) -> AsyncIterator[NotificationSubscription]:
        """Listen through the queue's one reader of this event loop while the block runs."""
        loop = asyncio.get_running_loop()
        readers = process_state.queue_readers.setdefault(loop, {})
        key = (self.aws_conn_id, self.queue_url, decode)
        reader = readers.get(key)
        if reader is None:
            reader = readers[key] = _QueueReader(self, decode)
        future = reader.subscribe(self, query_id)
        try:
            yield NotificationSubscription(future)
        finally:
            reader.unsubscribe(query_id, future)


def warn_account_refused(source: SqsNotificationSource, notification: Notification) -> None:
    """One warning per notification refused for its account (see :meth:`SqsNotificationSource.claims`)."""
    key = (source.queue_url, notification.query_id, notification.account, source.account)
    if key in process_state.refused_accounts:
        return
    process_state.refused_accounts[key] = True
    log.warning(
        "Notification for query %s on %s is for account %s, not this connection's account %s: "
        "no wait takes it (the wait goes on polling). If it is the same seller, set the "
        "connection's selling_partner_id to the merchant token Seller Central shows (Settings > "
        "Account Info > Business Information > Merchant Token)",
        notification.query_id,
        source.queue_url,
        notification.account_as_sent or notification.account,
        source.account,
    )


def _receive_kwargs(source: SqsNotificationSource, wait_seconds: float) -> dict[str, Any]:
    return {
        "QueueUrl": source.queue_url,
        "MaxNumberOfMessages": BATCH_SIZE,
        "WaitTimeSeconds": max(0, min(LONG_POLL_SECONDS, int(wait_seconds))),
        "VisibilityTimeout": VISIBILITY_TIMEOUT,
        "AttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        "MessageAttributeNames": [FIRST_SENT_ATTRIBUTE, RECEIVES_ATTRIBUTE],
    }


@dataclass
class _Returned:
    """A received message that is not this reader's: how often it was received in all (copies
    included) and when it was first sent (epoch ms)."""

    message: dict[str, Any]
    receives: int
    first_sent: int

    @classmethod
    def of(cls, message: dict[str, Any]) -> _Returned:
        custom = message.get("MessageAttributes") or {}
        system = message.get("Attributes") or {}

        def number(value: Any, default: int) -> int:
            try:
                return int(value)
            except (TypeError, ValueError):
                return default

        count = number(system.get("ApproximateReceiveCount"), 1)
        before = number((custom.get(RECEIVES_ATTRIBUTE) or {}).get("StringValue"), 0)
        sent = number(system.get("SentTimestamp"), int(time.time() * 1000))
        first = number((custom.get(FIRST_SENT_ATTRIBUTE) or {}).get("StringValue"), sent)
        return cls(message, before + count, first)

    @property
    def hidden_for(self) -> int:
        """Seconds it stays hidden when handed back: none for the first two receives (probably
        another triggerer's, whose long poll takes it at once), then doubling up to the
        visibility timeout (a message nobody claims must not keep every reader busy)."""
        return 0 if self.receives <= 2 else min(2 ** (self.receives - 2), VISIBILITY_TIMEOUT)


@dataclass
class _Settlement:
    """What to do with one received batch: delete what was claimed, re-send and delete the
    notifications received too often, hand back the rest."""

    claimed: list[tuple[dict[str, Any], Notification]]
    requeue: list[_Returned]
    hand_back: list[_Returned]

    def delete_entries(self) -> list[dict[str, Any]]:
        messages = [m for m, _ in self.claimed] + [r.message for r in self.requeue]
        return [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]

    def hand_back_entries(self) -> list[dict[str, Any]]:
        return [
            {"Id": str(i), "ReceiptHandle": r.message["ReceiptHandle"], "VisibilityTimeout": r.hidden_for}
            for i, r in enumerate(self.hand_back)
        ]

    def requeue_refused(self, returned: _Returned) -> None:
        self.requeue.remove(returned)
        self.hand_back.append(returned)


def _settle(
    messages: list[dict[str, Any]], decode: Decoder, claims: Callable[[Notification], bool], may_requeue: bool
) -> _Settlement:
    settlement = _Settlement([], [], [])
    now_ms = time.time() * 1000
    for message in messages:
        notification = decode(str(message.get("Body") or ""))
        if notification is not None and claims(notification):
            settlement.claimed.append((message, notification))
            continue
        returned = _Returned.of(message)
        count = int((message.get("Attributes") or {}).get("ApproximateReceiveCount") or 1)
        if (
            notification is not None
            and may_requeue
            and count >= REQUEUE_AT_RECEIVE_COUNT
            and now_ms - returned.first_sent < REQUEUE_FOR_SECONDS * 1000
        ):
            settlement.requeue.append(returned)
        else:
            settlement.hand_back.append(returned)
    return settlement


def _requeue_kwargs(source: SqsNotificationSource, returned: _Returned) -> dict[str, Any]:
    return {
        "QueueUrl": source.queue_url,
        "MessageBody": returned.message["Body"],
        "MessageAttributes": {
            FIRST_SENT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(returned.first_sent)},
            RECEIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": str(returned.receives)},
        },
    }


#: One SQS call: the client method's name and its keyword arguments.
_SqsCall = tuple[str, dict[str, Any]]


def _settlement_calls(
    source: SqsNotificationSource, settlement: _Settlement, may_requeue: bool
) -> Generator[_SqsCall, Any, bool]:
    """The calls that settle one receive (re-send, delete, hand back: one batch call each), for the
    sync and the async client alike: yields each call, is sent its answer (a refused re-send as
    its exception); returns whether re-sending is still allowed (``False`` once SQS refused it)."""
    for returned in list(settlement.requeue):
        outcome = yield "send_message", _requeue_kwargs(source, returned)
        if isinstance(outcome, Exception):  # no sqs:SendMessage: hand it back instead
            _requeue_refused(source, outcome)
            may_requeue = False
            settlement.requeue_refused(returned)
    if settlement.claimed or settlement.requeue:
        messages = [m for m, _ in settlement.claimed] + [r.message for r in settlement.requeue]
        yield from _batch_call(source, "delete_message_batch", settlement.delete_entries(), messages)
    if settlement.hand_back:
        messages = [r.message for r in settlement.hand_back]
        yield from _batch_call(
            source, "change_message_visibility_batch", settlement.hand_back_entries(), messages
        )
    return may_requeue


#: What becomes of a message whose entry of a batch call failed (for the warning).
_FAILED_ENTRY_OUTCOME = {
    "delete_message_batch": "it stays on the queue and is received again after its visibility "
    "timeout; its wait has already ended with it, so no wait claims it again and the queue's "
    "redrive policy moves it to the dead-letter queue (a re-sent copy's original likewise)",
    "change_message_visibility_batch": "it stays hidden for the rest of the receive's "
    f"{VISIBILITY_TIMEOUT} s visibility timeout before another consumer can take it (late, not lost)",
}


def _batch_call(
    source: SqsNotificationSource, method: str, entries: list[dict[str, Any]], messages: list[dict[str, Any]]
) -> Generator[_SqsCall, Any, None]:
    """One batch call; its ``Failed`` entries not at the sender's fault are sent once more, and
    what still failed is logged with what becomes of the message (never dropped silently)."""
    outcome = yield method, {"QueueUrl": source.queue_url, "Entries": entries}
    failed = _failed(outcome, entries)
    again = [entry for entry, failure in failed if not failure.get("SenderFault")]
    if again:
        outcome = yield method, {"QueueUrl": source.queue_url, "Entries": again}
        failed = [(e, f) for e, f in failed if f.get("SenderFault")] + _failed(outcome, again)
    if failed:
        ids = {str(i): str(m.get("MessageId") or "?") for i, m in enumerate(messages)}
        log.warning(
            "SQS %s failed on %s for %s: %s",
            method,
            source.queue_url,
            ", ".join(
                f"message {ids.get(str(entry['Id']), '?')} ({failure.get('Code')}: {failure.get('Message')})"
                for entry, failure in failed
            ),
            _FAILED_ENTRY_OUTCOME[method],
        )


def _failed(outcome: Any, entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The entries a batch call's answer lists under ``Failed``, each with its failure."""
    failures = (outcome or {}).get("Failed") or [] if isinstance(outcome, dict) else []
    by_id = {str(f.get("Id")): f for f in failures if isinstance(f, dict)}
    return [(entry, by_id[str(entry["Id"])]) for entry in entries if str(entry["Id"]) in by_id]


def _refused_outcome(call: _SqsCall, exc: Exception) -> Exception:
    """A failed re-send is an answer (the message is handed back instead); any other failure raises."""
    if call[0] != "send_message":
        raise exc
    return exc


def _pause() -> float:
    return HAND_BACK_PAUSE * random.uniform(0.5, 1.5)  # noqa: S311 - spreading, not security


def _requeue_refused(source: SqsNotificationSource, exc: Exception) -> None:
    log.warning(
        "Cannot re-send notifications on %s (%s: %s); a notification received %d times is then "
        "left to the queue's redrive policy: grant sqs:SendMessage, or set maxReceiveCount high "
        "(docs/data_kiosk.md)",
        source.queue_url,
        type(exc).__name__,
        exc,
        REQUEUE_AT_RECEIVE_COUNT,
    )


# -- the triggerer: one reader per queue and event loop ----------------------------------------
class _QueueReader:
    """Long-polls one queue while any wait of this event loop listens to it, and hands each
    notification to its waiter."""

    def __init__(self, source: SqsNotificationSource, decode: Decoder) -> None:
        self.source = source
        self.decode = decode
        #: query id -> (the waiting source, the future its notification resolves).
        self.waiters: dict[str, list[tuple[SqsNotificationSource, asyncio.Future[StatusSnapshot]]]] = {}
        self.task: asyncio.Task[None] | None = None

    def subscribe(self, source: SqsNotificationSource, query_id: str) -> asyncio.Future[StatusSnapshot]:
        future: asyncio.Future[StatusSnapshot] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(query_id, []).append((source, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._read(), name="querytasks-sqs-reader")
        return future

    def unsubscribe(self, query_id: str, future: asyncio.Future[StatusSnapshot]) -> None:
        remaining = [w for w in self.waiters.get(query_id, []) if w[1] is not future]
        if remaining:
            self.waiters[query_id] = remaining
        else:
            self.waiters.pop(query_id, None)
        if not self.waiters and self.task is not None:
            self.task.cancel()  # nobody listens: stop long-polling
            self.task = None

    async def _read(self) -> None:
        may_requeue = True
        try:
            async with await self.source.sqs_hook().get_async_conn() as client:
                while self.waiters:
                    answer = await client.receive_message(**_receive_kwargs(self.source, LONG_POLL_SECONDS))
                    settlement = _settle(answer.get("Messages") or [], self.decode, self._claims, may_requeue)
                    may_requeue = await self._settle(client, settlement, may_requeue)
                    if settlement.hand_back:
                        await asyncio.sleep(_pause())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every waiter fails with the reason (a wrong URL, no access...)
            error = self.source.error(exc)
            for waiters in self.waiters.values():
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(error)

    def _claims(self, notification: Notification) -> bool:
        waiters = self.waiters.get(notification.query_id, [])
        if any(source.accepts(notification, notification.query_id) and not f.done() for source, f in waiters):
            return True
        for source, _ in waiters:  # refused: warns when it is for the account
            source.claims(notification, notification.query_id)
        return False

    async def _settle(self, client: Any, settlement: _Settlement, may_requeue: bool) -> bool:
        """Re-send, delete and hand back (one batch call each); then resolve the claimed waits.

        Returns whether re-sending is still allowed (``False`` once SQS refused it).
        """
        calls = _settlement_calls(self.source, settlement, may_requeue)
        try:
            call = next(calls)
            while True:
                try:
                    outcome: Any = await getattr(client, call[0])(**call[1])
                except Exception as exc:
                    outcome = _refused_outcome(call, exc)
                call = calls.send(outcome)
        except StopIteration as done:
            may_requeue = done.value
        for _, notification in settlement.claimed:
            for source, future in self.waiters.get(notification.query_id, []):
                if source.accepts(notification, notification.query_id) and not future.done():
                    future.set_result(notification.snapshot)
        return may_requeue


class SqsNotificationWaitMixin(QueryWaitMixin[HookT]):
    """The wait of an operator or sensor that may end on a completion notification read from an
    SQS queue: the ``notification_queue_url``, ``aws_conn_id`` and ``notification_poll_interval``
    parameters (set by each class's constructor) and the schedule of safety-net polls. Only the
    notifications of the hook's :meth:`~.hooks.base.QueryTaskHook.notification_account` count."""

    notification_queue_url: str | None
    aws_conn_id: str
    notification_poll_interval: float

    def notification_source(self) -> SqsNotificationSource | None:
        if not self.notification_queue_url:
            return None
        return SqsNotificationSource.checked(
            self.notification_queue_url, self.aws_conn_id, account=self.hook.notification_account()
        )

    def poll_schedule(self) -> PollSchedule:
        if self.notification_queue_url:
            return PollSchedule.safety_net(self.notification_poll_interval)
        return super().poll_schedule()
