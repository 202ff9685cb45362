"""Completion notifications, as an alternative to status polls: the platform-neutral interface.

A wait with a notification source still polls the query's status, but rarely (a safety net: a
notification may be lost, or may have been sent before the wait began), and ends as soon as a
notification for its query arrives. What a message means is the platform protocol's
:data:`Decoder`; where messages come from and how they are read is a
:class:`BaseNotificationSource` subclass (Amazon SQS: ``hooks/amazon_sqs.py``). A wait uses only
this interface: a blocking :meth:`~BaseNotificationSource.listen` in workers, an async
:meth:`~BaseNotificationSource.subscribe` in the triggerer, and the source travels in the
trigger's kwargs as :meth:`~BaseNotificationSource.to_dict`, rebuilt by
:meth:`~BaseNotificationSource.from_dict`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from airflow_provider_querytasks.common.errors import QueryTaskError
from airflow_provider_querytasks.common.wait import StatusSnapshot

#: The key of a serialised source that names its class (``module.Class``).
CLASSPATH_KEY = "classpath"


@dataclass(frozen=True)
class Notification:
    """What a message announces: a query of an account reached a final state.

    :param query_id: the platform's query id.
    :param account: the account the query belongs to (ids are unique only per account), if known.
    :param snapshot: the final status, as a poll would have returned it.
    """

    query_id: str
    account: str | None
    snapshot: StatusSnapshot


#: A platform's reading of a message body: the notification it carries, or ``None`` for a message
#: that is not one (left for whoever it is for).
Decoder = Callable[[str], Notification | None]


class NotificationSubscription:
    """A wait's place in a source's shared reader (see :meth:`BaseNotificationSource.subscribe`).

    :param future: resolved with the query's final snapshot when its notification arrives (or
        with the reader's error).
    """

    def __init__(self, future: asyncio.Future[StatusSnapshot]) -> None:
        self.future = future

    async def wait(self, timeout: float) -> StatusSnapshot | None:
        """The notified final snapshot, or ``None`` when none came within ``timeout`` seconds."""
        done, _ = await asyncio.wait({self.future}, timeout=timeout)
        return self.future.result() if done else None


@dataclass(frozen=True)
class BaseNotificationSource(ABC):
    """Where a wait listens for its query's completion notification.

    Subclasses are frozen dataclasses of JSON-able fields (the trigger's kwargs carry them).
    """

    @abstractmethod
    def accepts(self, notification: Notification, query_id: str) -> bool:
        """Whether ``notification`` ends the wait for ``query_id``."""

    @abstractmethod
    def listen(self, decode: Decoder, query_id: str, timeout: float) -> StatusSnapshot | None:
        """Block for up to ``timeout`` seconds for ``query_id``'s notification (workers): its
        snapshot, or ``None`` when none came in time."""

    @abstractmethod
    def subscribe(
        self, decode: Decoder, query_id: str
    ) -> AbstractAsyncContextManager[NotificationSubscription]:
        """Listen for ``query_id``'s notification on the running event loop for as long as the
        block runs (the triggerer; a whole wait, so none arriving during a poll is missed)."""

    def to_dict(self) -> dict[str, Any]:
        """The source as plain JSON: its class path and its fields."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {CLASSPATH_KEY: f"{type(self).__module__}.{type(self).__qualname__}", **fields}

    @staticmethod
    def from_dict(
        data: dict[str, Any], default_class: type[BaseNotificationSource] | None = None
    ) -> BaseNotificationSource:
        """Rebuild a source from :meth:`to_dict`'s output.

        :param default_class: the class of a dict that names none (serialised before sources
            named their class).
        :raises QueryTaskError: when the class is missing, cannot be imported or is not a source.
        """
        fields = dict(data)
        classpath = fields.pop(CLASSPATH_KEY, None)
        if classpath is None:
            if default_class is None:
                raise QueryTaskError(f"A notification source names no class: {sorted(data)}")
            return default_class(**fields)
        module_name, _, class_name = str(classpath).rpartition(".")
        try:
            source_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise QueryTaskError(f"Cannot import notification source class {classpath!r}: {exc}") from exc
        if not (isinstance(source_class, type) and issubclass(source_class, BaseNotificationSource)):
            raise QueryTaskError(f"{classpath!r} is not a notification source class")
        return source_class(**fields)


def notification_listener(
    decode: Decoder | None, source: BaseNotificationSource | None, query_id: str
) -> Callable[[float], StatusSnapshot | None] | None:
    """What a blocking :class:`~.wait.WaitLoop` listens with between polls (``None``: it sleeps)."""
    if source is None or decode is None:
        return None
    return lambda timeout: source.listen(decode, query_id, timeout)


#: Names that lived here while the Amazon SQS reader did (before 0.1.0), now in ``hooks.amazon_sqs``.
_MOVED_TO_AMAZON_SQS = {
    "NotificationSource": "SqsNotificationSource",
    **{
        name: name
        for name in (
            "DEFAULT_AWS_CONN_ID",
            "LONG_POLL_SECONDS",
            "BATCH_SIZE",
            "VISIBILITY_TIMEOUT",
            "HAND_BACK_PAUSE",
            "REQUEUE_AT_RECEIVE_COUNT",
            "REQUEUE_FOR_SECONDS",
            "FIRST_SENT_ATTRIBUTE",
            "RECEIVES_ATTRIBUTE",
        )
    },
}


def __getattr__(name: str) -> Any:
    """The SQS names' old import path: still served, with a warning, and imported only on use."""
    if name in _MOVED_TO_AMAZON_SQS:
        new_name = _MOVED_TO_AMAZON_SQS[name]
        warnings.warn(
            f"Import {new_name} from airflow_provider_querytasks.hooks.amazon_sqs; importing {name} "
            f"from {__name__} is deprecated",
            DeprecationWarning,
            stacklevel=2,
        )
        from airflow_provider_querytasks.hooks import amazon_sqs

        return getattr(amazon_sqs, new_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
