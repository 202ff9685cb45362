"""When a wait must end: the earlier of the wait's ``timeout`` and the task's ``execution_timeout``.

Airflow 3 does not count deferred time against ``execution_timeout`` (and Airflow 2.11 fails a
deferred task that overruns it without cancelling anything remote), so the operators and sensors
turn it into the same absolute wall-clock deadline that carries ``timeout`` to the trigger: when it
passes, the wait ends as on ``timeout`` and the remote query is cancelled where the task owns it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def task_start(context: Any, default: float) -> float:
    """Wall-clock start of the running try (``ti.start_date``), or ``default`` when unknown."""
    ti = context.get("ti") if hasattr(context, "get") else None
    start = getattr(ti, "start_date", None)
    if not isinstance(start, dt.datetime):
        return default
    if start.tzinfo is None:  # Airflow stores UTC
        start = start.replace(tzinfo=dt.timezone.utc)
    return start.timestamp()


def wait_deadline(
    context: Any,
    timeout: float | None,
    execution_timeout: dt.timedelta | float | None,
    now: float,
) -> float | None:
    """The absolute deadline (``time.time()`` seconds) of a wait starting at ``now``, or ``None``.

    :param context: the task context (its ``ti.start_date`` is the try's start).
    :param timeout: the wait's own limit in seconds, counted from ``now`` (``None``: none).
    :param execution_timeout: the task's ``execution_timeout``, counted from the try's start.
    :param now: the current wall-clock time.
    """
    deadlines = []
    if timeout is not None:
        deadlines.append(now + timeout)
    if execution_timeout is not None:
        limit = (
            execution_timeout.total_seconds()
            if isinstance(execution_timeout, dt.timedelta)
            else float(execution_timeout)
        )
        deadlines.append(task_start(context, now) + limit)
    return min(deadlines) if deadlines else None
