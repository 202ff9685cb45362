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
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from airflow_provider_querytasks.common.api.errors import QueryTaskError
from airflow_provider_querytasks.common.api.notifications import Decoder, Notification
from airflow_provider_querytasks.common.api.status import StatusSnapshot

#: The key of a serialised source that names its class (``module.Class``).
CLASSPATH_KEY = "classpath"


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
    """What a blocking :class:`~.wait.loop.WaitLoop` listens with between polls (``None``: it sleeps)."""
    if source is None or decode is None:
        return None
    return lambda timeout: source.listen(decode, query_id, timeout)
