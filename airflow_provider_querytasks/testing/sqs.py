"""An Amazon SQS host (JSON protocol, as botocore and aiobotocore speak it), for notifications.

The SP-API delivers ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` notifications to an SQS queue only.
This site answers the operations a consumer uses (``ReceiveMessage`` with long polling,
visibility timeouts and receive counts, ``DeleteMessage[Batch]``,
``ChangeMessageVisibility[Batch]``, ``SendMessage`` with message attributes, ``GetQueueUrl``,
``GetQueueAttributes``) with SQS's error shapes (``__type`` + ``x-amzn-query-error``). A queue
may have a redrive policy: a message received more than ``maxReceiveCount`` times moves to its
dead-letter queue at the next receive, as on SQS. Requests must carry a SigV4 ``Authorization``
header naming the access key the site was given; the signature itself is not verified (a
stand-in, not an IAM).

Batch calls answer per entry (``Successful`` / ``Failed``), as SQS does: besides the entries that
fail at the sender's fault (an invalid receipt handle), :meth:`SqsSite.fail_entries` makes the
next entries fail at SQS's fault (``SenderFault: false``, ``InternalError``), which SQS may
answer at any time (the API reference does not say when): a consumer must not take a 200 batch
answer as every entry done.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: (``__type`` suffix, ``x-amzn-query-error`` code) of the errors this site answers.
ERRORS = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "ReceiptHandleIsInvalid": "ReceiptHandleIsInvalid",
    "InvalidParameterValue": "InvalidParameterValue",
    "InvalidAction": "InvalidAction",
    "InvalidClientTokenId": "InvalidClientTokenId",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    # IAM refusal (e.g. no sqs:SendMessage); the query protocol's code for AccessDeniedException.
    "AccessDeniedException": "AccessDenied",
}


@dataclass
class QueuedMessage:
    """One message in an emulated queue."""

    message_id: str
    body: str
    sent: float
    visible_at: float = 0.0
    receive_count: int = 0
    receipt_handle: str | None = None
    #: ``MessageAttributes`` as sent (name -> ``{"DataType", "StringValue"}``).
    attributes: dict[str, Any] = field(default_factory=dict)
    first_received: float | None = None

    @property
    def md5_of_body(self) -> str:
        return hashlib.md5(self.body.encode()).hexdigest()  # noqa: S324 - SQS's own checksum


class SqsError(Exception):
    """An SQS error answer."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class SqsSite:
    """SQS queues on one host; queue URLs are ``<base_url>/<account>/<name>``.

    :param access_key_id: the AWS access key id requests must be signed with.
    :param account: the AWS account id in queue URLs.
    :param default_visibility_timeout: seconds a received message stays hidden (SQS: 30).
    :param before_receive: called before every receive attempt (publishes due messages).
    """

    def __init__(
        self,
        *,
        access_key_id: str = "AKIAEMULATORSQS00000",
        account: str = "123456789012",
        default_visibility_timeout: float = 30.0,
        before_receive: Callable[[], None] | None = None,
    ) -> None:
        self.access_key_id = access_key_id
        self.account = account
        self.default_visibility_timeout = default_visibility_timeout
        self.before_receive = before_receive
        #: Set by the emulator once the port is bound.
        self.base_url = "http://127.0.0.1"
        self.queues: dict[str, list[QueuedMessage]] = {}
        #: queue name -> (dead-letter queue name, maxReceiveCount).
        self.redrive: dict[str, tuple[str, int]] = {}
        #: Batch entries still to fail at SQS's fault (see :meth:`fail_entries`).
        self.failing_entries = 0

    # -- for tests and emulators --------------------------------------------------------------
    def fail_entries(self, count: int) -> None:
        """The next ``count`` entries of batch calls fail with ``InternalError`` (not the
        sender's fault: worth sending again), leaving their messages as they were."""
        self.failing_entries = count

    def _internal_failure(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        if self.failing_entries <= 0:
            return None
        self.failing_entries -= 1
        return {
            "Id": entry.get("Id"),
            "SenderFault": False,
            "Code": "InternalError",
            "Message": "We encountered an internal error. Please try again.",
        }

    def create_queue(
        self, name: str, dead_letter_queue: str | None = None, max_receive_count: int = 10
    ) -> str:
        """Create a queue (idempotent) and return its name; with ``dead_letter_queue``, a redrive
        policy moving messages received more than ``max_receive_count`` times there."""
        self.queues.setdefault(name, [])
        if dead_letter_queue is not None:
            self.queues.setdefault(dead_letter_queue, [])
            self.redrive[name] = (dead_letter_queue, max_receive_count)
        return name

    def queue_url(self, name: str) -> str:
        """The URL of queue ``name`` on this host."""
        return f"{self.base_url}/{self.account}/{name}"

    def send(
        self, name: str, body: str | dict[str, Any], attributes: dict[str, Any] | None = None
    ) -> QueuedMessage:
        """Put a message on a queue (what a publisher's SendMessage does)."""
        text = body if isinstance(body, str) else json.dumps(body)
        message = QueuedMessage(
            message_id=str(uuid.uuid4()), body=text, sent=time.time(), attributes=dict(attributes or {})
        )
        self.queues[name].append(message)
        return message

    def messages(self, name: str) -> list[QueuedMessage]:
        """The messages still on a queue (visible or in flight)."""
        return list(self.queues.get(name, []))

    # -- the site -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The SQS host's ``aiohttp`` application (the JSON protocol botocore speaks)."""
        app = web.Application()
        app.router.add_post("/", self._handle)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        try:
            self._authorise(request)
            service, _, action = target.partition(".")
            handler = getattr(self, f"_op_{action}", None)
            if service != "AmazonSQS" or handler is None:
                raise SqsError(
                    "InvalidAction", f"The action {target or '(none)'} is not valid for this endpoint."
                )
            try:
                params = json.loads(await request.read() or b"{}")
            except ValueError:
                raise SqsError("InvalidParameterValue", "The request body is not JSON.") from None
            body = await handler(params) if action == "ReceiveMessage" else handler(params)
        except SqsError as error:
            return web.json_response(
                {"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message},
                status=error.status,
                content_type="application/x-amz-json-1.0",
                headers={
                    "x-amzn-RequestId": str(uuid.uuid4()),
                    "x-amzn-query-error": f"{ERRORS[error.code]};Sender",
                },
            )
        return web.json_response(
            body, content_type="application/x-amz-json-1.0", headers={"x-amzn-RequestId": str(uuid.uuid4())}
        )

    def _authorise(self, request: web.Request) -> None:
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith(f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/"):
            raise SqsError(
                "InvalidClientTokenId", "The security token included in the request is invalid.", 403
            )

    def _queue_name(self, params: dict[str, Any]) -> str:
        url = str(params.get("QueueUrl") or "")
        prefix = f"{self.base_url}/{self.account}/"
        name = url[len(prefix) :] if url.startswith(prefix) else None
        if name is None or name not in self.queues:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return name

    def _queue(self, params: dict[str, Any]) -> list[QueuedMessage]:
        return self.queues[self._queue_name(params)]

    @staticmethod
    def _entries(params: dict[str, Any]) -> list[dict[str, Any]]:
        entries = params.get("Entries") or []
        if not entries:
            raise SqsError("EmptyBatchRequest", "There should be at least one entry in the request.")
        if len(entries) > 10:
            raise SqsError(
                "TooManyEntriesInBatchRequest",
                f"Maximum number of entries per request are 10. You have sent {len(entries)}.",
            )
        return list(entries)

    def _redrive(self, name: str, now: float) -> None:
        """Move visible messages received ``maxReceiveCount`` times to the dead-letter queue."""
        if name not in self.redrive:
            return
        target, limit = self.redrive[name]
        queue = self.queues[name]
        for message in [m for m in queue if m.visible_at <= now and m.receive_count >= limit]:
            queue.remove(message)
            message.visible_at, message.receipt_handle = 0.0, None
            self.queues[target].append(message)

    @staticmethod
    def _number(params: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
        value = params.get(name, default)
        if not isinstance(value, int | float) or not low <= value <= high:
            raise SqsError(
                "InvalidParameterValue",
                f"Value {value} for parameter {name} is invalid. Must be {low}-{high}.",
            )
        return float(value)

    def _find(self, queue: list[QueuedMessage], receipt_handle: Any) -> QueuedMessage:
        for message in queue:
            if receipt_handle and message.receipt_handle == receipt_handle:
                return message
        raise SqsError("ReceiptHandleIsInvalid", f'The input receipt handle "{receipt_handle}" is not valid.')

    # -- operations ---------------------------------------------------------------------------
    async def _op_ReceiveMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        name = self._queue_name(params)
        queue = self.queues[name]
        limit = int(self._number(params, "MaxNumberOfMessages", 1, 1, 10))
        wait = self._number(params, "WaitTimeSeconds", 0, 0, 20)
        hide = self._number(params, "VisibilityTimeout", self.default_visibility_timeout, 0, 43200)
        wanted = {*(params.get("AttributeNames") or []), *(params.get("MessageSystemAttributeNames") or [])}
        wanted_attributes = set(params.get("MessageAttributeNames") or [])
        until = time.monotonic() + wait
        while True:
            if self.before_receive is not None:
                self.before_receive()
            now = time.monotonic()
            self._redrive(name, now)
            ready = [m for m in queue if m.visible_at <= now][:limit]
            if ready or now >= until:
                break
            await asyncio.sleep(min(0.05, until - now))  # long polling: answer as soon as one arrives
        messages = []
        for message in ready:
            message.visible_at = now + hide
            message.receive_count += 1
            if message.first_received is None:
                message.first_received = time.time()
            message.receipt_handle = f"{message.message_id}#{uuid.uuid4().hex}"
            answer: dict[str, Any] = {
                "MessageId": message.message_id,
                "ReceiptHandle": message.receipt_handle,
                "MD5OfBody": message.md5_of_body,
                "Body": message.body,
            }
            attributes = {
                "ApproximateReceiveCount": str(message.receive_count),
                "SentTimestamp": str(int(message.sent * 1000)),
                "ApproximateFirstReceiveTimestamp": str(int((message.first_received or 0) * 1000)),
            }
            chosen = {k: v for k, v in attributes.items() if "All" in wanted or k in wanted}
            if chosen:  # SQS returns attributes only when asked for
                answer["Attributes"] = chosen
            custom = {
                k: v
                for k, v in message.attributes.items()
                if "All" in wanted_attributes or ".*" in wanted_attributes or k in wanted_attributes
            }
            if custom:
                answer["MessageAttributes"] = custom
            messages.append(answer)
        return {"Messages": messages} if messages else {}

    def _op_DeleteMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(params)
        queue.remove(self._find(queue, params.get("ReceiptHandle")))
        return {}

    def _op_DeleteMessageBatch(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(params)
        return self._batch(params, lambda entry: queue.remove(self._find(queue, entry.get("ReceiptHandle"))))

    def _batch(self, params: dict[str, Any], apply: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """A batch action: ``apply`` to each entry, each succeeding or failing on its own."""
        successful, failed = [], []
        for entry in self._entries(params):
            try:
                internal = self._internal_failure(entry)
                if internal is not None:
                    failed.append(internal)
                    continue
                apply(entry)
                successful.append({"Id": entry.get("Id")})
            except SqsError as error:
                failed.append(
                    {"Id": entry.get("Id"), "SenderFault": True, "Code": error.code, "Message": error.message}
                )
        return {"Successful": successful, "Failed": failed}

    def _change_visibility(self, queue: list[QueuedMessage], entry: dict[str, Any]) -> None:
        message = self._find(queue, entry.get("ReceiptHandle"))
        seconds = self._number(entry, "VisibilityTimeout", 0, 0, 43200)
        now = time.monotonic()
        if message.visible_at <= now:
            raise SqsError("MessageNotInflight", "The message referred to isn't in flight.")
        message.visible_at = now + seconds

    def _op_ChangeMessageVisibility(self, params: dict[str, Any]) -> dict[str, Any]:
        self._change_visibility(self._queue(params), params)
        return {}

    def _op_ChangeMessageVisibilityBatch(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(params)
        return self._batch(params, lambda entry: self._change_visibility(queue, entry))

    def _op_SendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        self._queue(params)
        body = params.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise SqsError("InvalidParameterValue", "The request must contain the parameter MessageBody.")
        name = str(params["QueueUrl"]).rsplit("/", 1)[-1]
        message = self.send(name, body, params.get("MessageAttributes"))
        return {"MessageId": message.message_id, "MD5OfMessageBody": message.md5_of_body}

    def _op_GetQueueUrl(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("QueueName")
        if name not in self.queues:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return {"QueueUrl": self.queue_url(str(name))}

    def _op_GetQueueAttributes(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(params)
        now = time.monotonic()
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(sum(m.visible_at <= now for m in queue)),
                "ApproximateNumberOfMessagesNotVisible": str(sum(m.visible_at > now for m in queue)),
                "VisibilityTimeout": str(int(self.default_visibility_timeout)),
                **self._redrive_attribute(self._queue_name(params)),
            }
        }

    def _redrive_attribute(self, name: str) -> dict[str, str]:
        if name not in self.redrive:
            return {}
        target, limit = self.redrive[name]
        arn = f"arn:aws:sqs:us-east-1:{self.account}:{target}"
        return {"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": limit})}
