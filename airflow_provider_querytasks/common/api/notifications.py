"""What a completion notification announces, and the type of a platform's reading of one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from airflow_provider_querytasks.common.api.status import StatusSnapshot


@dataclass(frozen=True)
class Notification:
    """What a message announces: a query of an account reached a final state.

    :param query_id: the platform's query id.
    :param account: the account the query belongs to (ids are unique only per account), if known.
    :param snapshot: the final status, as a poll would have returned it.
    :param account_as_sent: the account as the message spelled it, when ``account`` is a
        normalised form of it (for log lines).
    """

    query_id: str
    account: str | None
    snapshot: StatusSnapshot
    account_as_sent: str | None = None


#: A platform's reading of a message body: the notification it carries, or ``None`` for a message
#: that is not one (left for whoever it is for).
Decoder = Callable[[str], Notification | None]
