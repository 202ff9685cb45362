"""Completion notifications read from an Amazon SQS queue, as an alternative to status polls.

A wait with a :class:`NotificationSource` still polls the query's status, but rarely (a safety
net: a notification may be lost, or may have been sent before the wait began), and ends as soon
as a notification for its query arrives. What a message means is the platform protocol's
:data:`Decoder`; this module is only the transport, through the amazon provider's ``SqsHook``
(optional extra ``amazon``): boto3 in workers, aiobotocore in the triggerer.

In the triggerer, every wait on one queue shares a single long-polling reader per event loop, so
1,000 deferred queries cost one ``ReceiveMessage`` call at a time, not 1,000. A message for a
query being waited for is deleted once handed over; any other message is left alone and comes
back after its visibility timeout for the consumer it belongs to (give the queue a redrive policy
so that messages nobody claims end in a dead-letter queue).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from airflow_provider_querytasks.common.errors import InvalidInputError, QueryTaskError
from airflow_provider_querytasks.common.wait import StatusSnapshot

#: SQS long-poll limit (``WaitTimeSeconds``), messages per receive, and how long a received message
#: that belongs to somebody else stays hidden before it is offered again.
LONG_POLL_SECONDS = 20
BATCH_SIZE = 10
VISIBILITY_TIMEOUT = 30

#: The ``aws`` connection used when none is named (the amazon provider's default).
DEFAULT_AWS_CONN_ID = "aws_default"


@dataclass(frozen=True)
class Notification:
    """What a queue message announces: a query of an account reached a final state.

    :param query_id: the platform's query id.
    :param account: the account the query belongs to (ids are unique only per account), if known.
    :param snapshot: the final status, as a poll would have returned it.
    """

    query_id: str
    account: str | None
    snapshot: StatusSnapshot


#: A platform's reading of a message body: the notification it carries, or ``None`` for a message
#: that is not one (left on the queue for whoever it is for).
Decoder = Callable[[str], Notification | None]


@dataclass(frozen=True)
class NotificationSource:
    """Where a wait listens for its completion notification.

    :param queue_url: the SQS queue URL (``https://sqs.<region>.amazonaws.com/<account>/<name>``).
    :param aws_conn_id: the amazon provider's ``aws`` connection with access to the queue.
    :param account: accept only notifications of this account (``None``: any account).
    """

    queue_url: str
    aws_conn_id: str = DEFAULT_AWS_CONN_ID
    account: str | None = None

    @classmethod
    def checked(cls, queue_url: Any, aws_conn_id: Any, account: str | None = None) -> NotificationSource:
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

    def to_dict(self) -> dict[str, Any]:
        return {"queue_url": self.queue_url, "aws_conn_id": self.aws_conn_id, "account": self.account}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NotificationSource:
        return cls(**data)

    def accepts(self, notification: Notification, query_id: str) -> bool:
        """Whether ``notification`` ends the wait for ``query_id``."""
        return notification.query_id == query_id and (
            self.account is None or notification.account in (None, self.account)
        )

    def sqs_hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        return SqsHook(aws_conn_id=self.aws_conn_id)

    def error(self, exc: BaseException) -> QueryTaskError:
        return QueryTaskError(
            f"Could not read notifications from SQS queue {self.queue_url}: {type(exc).__name__}: {exc}"
        )


def _receive_kwargs(source: NotificationSource, wait_seconds: float) -> dict[str, Any]:
    return {
        "QueueUrl": source.queue_url,
        "MaxNumberOfMessages": BATCH_SIZE,
        "WaitTimeSeconds": max(0, min(LONG_POLL_SECONDS, int(wait_seconds))),
        "VisibilityTimeout": VISIBILITY_TIMEOUT,
    }


def _decode_all(messages: list[dict[str, Any]], decode: Decoder) -> list[tuple[dict[str, Any], Notification]]:
    decoded = []
    for message in messages:
        notification = decode(str(message.get("Body") or ""))
        if notification is not None:
            decoded.append((message, notification))
    return decoded


# -- workers: blocking ------------------------------------------------------------------------
def wait_for_notification(
    source: NotificationSource, decode: Decoder, query_id: str, timeout: float
) -> StatusSnapshot | None:
    """Long-poll the queue (blocking) for up to ``timeout`` seconds for ``query_id``'s notification.

    Returns its snapshot (the message is deleted), or ``None`` when none came in time.
    """
    client = source.sqs_hook().get_conn()
    until = time.monotonic() + timeout
    while True:
        remaining = until - time.monotonic()
        try:
            answer = client.receive_message(**_receive_kwargs(source, remaining))
            for message, notification in _decode_all(answer.get("Messages") or [], decode):
                if source.accepts(notification, query_id):
                    client.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
                    return notification.snapshot
        except Exception as exc:
            raise source.error(exc) from exc
        if until - time.monotonic() < 1:
            return None


def notification_listener(
    decode: Decoder | None, source: NotificationSource | None, query_id: str
) -> Callable[[float], StatusSnapshot | None] | None:
    """What a blocking :class:`~.wait.WaitLoop` listens with between polls (``None``: it sleeps)."""
    if source is None or decode is None:
        return None
    return lambda timeout: wait_for_notification(source, decode, query_id, timeout)


# -- the triggerer: one reader per queue and event loop ----------------------------------------
class _QueueReader:
    """Long-polls one queue while any wait of this event loop listens to it, and hands each
    notification to its waiter."""

    def __init__(self, source: NotificationSource, decode: Decoder) -> None:
        self.source = source
        self.decode = decode
        #: query id -> (the waiting source, the future its notification resolves).
        self.waiters: dict[str, list[tuple[NotificationSource, asyncio.Future[StatusSnapshot]]]] = {}
        self.task: asyncio.Task[None] | None = None

    def subscribe(self, source: NotificationSource, query_id: str) -> asyncio.Future[StatusSnapshot]:
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
        try:
            async with await self.source.sqs_hook().get_async_conn() as client:
                while self.waiters:
                    answer = await client.receive_message(**_receive_kwargs(self.source, LONG_POLL_SECONDS))
                    for message, notification in _decode_all(answer.get("Messages") or [], self.decode):
                        await self._deliver(client, message, notification)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every waiter fails with the reason (a wrong URL, no access...)
            error = self.source.error(exc)
            for waiters in self.waiters.values():
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(error)

    async def _deliver(self, client: Any, message: dict[str, Any], notification: Notification) -> None:
        claimed = [
            future
            for source, future in self.waiters.get(notification.query_id, [])
            if source.accepts(notification, notification.query_id) and not future.done()
        ]
        if not claimed:
            return  # somebody else's: it comes back after the visibility timeout
        await client.delete_message(QueueUrl=self.source.queue_url, ReceiptHandle=message["ReceiptHandle"])
        for future in claimed:
            future.set_result(notification.snapshot)


_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _QueueReader]] = (
    weakref.WeakKeyDictionary()
)


class NotificationSubscription:
    """A wait's place in its queue's shared reader (see :func:`subscribe`)."""

    def __init__(self, future: asyncio.Future[StatusSnapshot]) -> None:
        self.future = future

    async def wait(self, timeout: float) -> StatusSnapshot | None:
        """The notified final snapshot, or ``None`` when none came within ``timeout`` seconds."""
        done, _ = await asyncio.wait({self.future}, timeout=timeout)
        return self.future.result() if done else None


@asynccontextmanager
async def subscribe(
    source: NotificationSource, decode: Decoder, query_id: str
) -> AsyncIterator[NotificationSubscription]:
    """Listen for ``query_id``'s notification for as long as the block runs.

    Subscribed for the whole wait (not only between polls), so a notification arriving while a
    status poll is in flight is not missed.
    """
    loop = asyncio.get_running_loop()
    readers = _readers.setdefault(loop, {})
    key = (source.aws_conn_id, source.queue_url, decode)
    reader = readers.get(key)
    if reader is None:
        reader = readers[key] = _QueueReader(source, decode)
    future = reader.subscribe(source, query_id)
    try:
        yield NotificationSubscription(future)
    finally:
        reader.unsubscribe(query_id, future)
