"""The status model: a query's normalised state and one poll's answer (a snapshot)."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueryState(str, enum.Enum):
    """A remote query's state, normalised across platforms."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (QueryState.SUCCEEDED, QueryState.FAILED, QueryState.CANCELLED)


@dataclass(frozen=True)
class StatusSnapshot:
    """One observation of a remote query.

    :param query_id: the platform's id.
    :param state: the normalised state.
    :param remote_status: the platform's own status value (``IN_PROGRESS``, ``2``...).
    :param raw: the platform's object, JSON-able (goes into trigger events and XCom).
    :param message: the platform's error text for failed queries.
    """

    query_id: str
    state: QueryState
    remote_status: Any
    raw: dict[str, Any] = field(default_factory=dict)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form: a trigger event's ``snapshot`` and a task's default XCom value."""
        return {
            "query_id": self.query_id,
            "state": self.state.value,
            "remote_status": self.remote_status,
            "raw": self.raw,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> StatusSnapshot:
        """The snapshot :meth:`to_dict` wrote."""
        return cls(
            query_id=value["query_id"],
            state=QueryState(value["state"]),
            remote_status=value.get("remote_status"),
            raw=value.get("raw") or {},
            message=value.get("message"),
        )
