"""The generic wait: normalised states, a poll schedule, an overall deadline, one log line per poll.

Hooks (sync sensors and operators) and triggers (async) run the same :class:`WaitLoop` logic;
only the sleep differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, overload

from airflow_provider_querytasks.common.api.errors import InvalidInputError, QueryTimeoutError
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot

log = logging.getLogger(__name__)


@overload
def to_seconds(value: timedelta | float | None, parameter: str) -> float: ...
@overload
def to_seconds(value: timedelta | float | None, parameter: str, *, allow_none: bool) -> float | None: ...
def to_seconds(value: timedelta | float | None, parameter: str, *, allow_none: bool = False) -> float | None:
    """A duration parameter (``timedelta`` or seconds) in seconds, validated (> 0)."""
    if value is None:
        if allow_none:
            return None
        raise InvalidInputError(parameter, "is required: a timedelta or a number of seconds > 0")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidInputError(parameter, f"must be a timedelta or a number of seconds, got {value!r}")
    if not seconds > 0 or seconds == float("inf"):
        raise InvalidInputError(parameter, f"must be > 0 seconds, got {value!r}")
    return seconds


@dataclass(frozen=True)
class PollSchedule:
    """When to poll next: start short, grow with the elapsed time, never above a maximum.

    The interval after ``elapsed`` seconds is ``clamp(proportion * elapsed, initial, maximum)``,
    so a query finishing after ``t`` seconds is seen at most about ``proportion * t`` late (and at
    most ``maximum`` late), while a long query costs few calls.

    :param initial: first interval, seconds.
    :param maximum: largest interval, seconds (the operator's ``poll_interval``).
    :param proportion: interval as a fraction of the elapsed time.
    """

    initial: float = 5.0
    maximum: float = 60.0
    proportion: float = 0.1

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum <= 0:
            raise InvalidInputError("poll_interval", "must be > 0 seconds")

    @classmethod
    def from_poll_interval(cls, poll_interval: float, initial: float | None = None) -> PollSchedule:
        """The operators' schedule: first polls after 5 s (or ``poll_interval`` if smaller), then up to
        ``poll_interval``.
        """
        first = min(poll_interval, 5.0) if initial is None else initial
        return cls(initial=first, maximum=poll_interval)

    @classmethod
    def safety_net(cls, poll_interval: float) -> PollSchedule:
        """Polls behind a completion notification: rarer, and growing faster, than plain polling.

        The first comes after at most a minute (a notification lost, or taken by another
        consumer, costs little); later ones back off to ``poll_interval``.
        """
        return cls(initial=min(poll_interval, 60.0), maximum=poll_interval, proportion=0.5)

    def next_interval(self, elapsed: float) -> float:
        """Seconds to the next poll, ``elapsed`` seconds into the wait: in proportion to it, within the
        bounds.
        """
        return max(self.initial, min(self.maximum, self.proportion * elapsed))

    def to_dict(self) -> dict[str, float]:
        """The schedule as trigger kwargs (JSON-able)."""
        return {"initial": self.initial, "maximum": self.maximum, "proportion": self.proportion}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> PollSchedule:
        """The schedule from :meth:`to_dict`'s output."""
        return cls(**data)


class WaitLoop:
    """Polls until a terminal state or the deadline.

    :param describe: what is waited for, for log lines (``Data Kiosk query abc``).
    :param schedule: the poll schedule.
    :param deadline: absolute wall-clock deadline (``time.time()`` seconds), or ``None``.
    :param started: wall-clock start of the wait (kept across deferrals for the schedule).
    :param logger: where the per-poll line goes.
    :param clock: wall clock (for tests).
    """

    def __init__(
        self,
        describe: str,
        schedule: PollSchedule,
        deadline: float | None,
        started: float | None = None,
        logger: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.describe = describe
        self.schedule = schedule
        self.deadline = deadline
        self.clock = clock
        self.started = clock() if started is None else started
        self.log = logger or log
        self.polls = 0
        #: (state, remote status, when) of the last poll logged at info level.
        self._logged: tuple[QueryState, Any, float] | None = None
        #: Info lines decided by :meth:`_next_sleep`, written by :meth:`_step` or :meth:`_astep`.
        self._lines: list[tuple[str, tuple[Any, ...]]] = []

    def _next_sleep(self, snapshot: StatusSnapshot, notified: bool = False) -> float | None:
        """Seconds to sleep before the next poll; ``None`` when the snapshot is terminal.

        :param notified: the snapshot came from a completion notification, not a poll.
        """
        self.polls += not notified
        now = self.clock()
        elapsed = now - self.started
        if snapshot.state.terminal:
            self._lines.append(
                (
                    "%s: %s (%s) after %.0f s, %d polls%s",
                    (
                        self.describe,
                        snapshot.state.value,
                        snapshot.remote_status,
                        elapsed,
                        self.polls,
                        ", then notified" if notified else "",
                    ),
                )
            )
            return None
        if self.deadline is not None and now >= self.deadline:
            raise self.timeout_error(snapshot)
        interval = self.schedule.next_interval(elapsed)
        if self.deadline is not None:
            interval = min(interval, max(0.0, self.deadline - now))
        # Info when the status changes, and every few minutes as a heartbeat; debug otherwise
        # (a busy triggerer logs thousands of unchanged polls).
        line = "%s: %s (%s), elapsed %.0f s, next poll in %.0f s"
        args = (self.describe, snapshot.state.value, snapshot.remote_status, elapsed, interval)
        logged = self._logged
        if logged is None or logged[:2] != (snapshot.state, snapshot.remote_status) or now - logged[2] >= 300:
            self._logged = (snapshot.state, snapshot.remote_status, now)
            self._lines.append((line, args))
        else:
            self.log.debug(line, *args)
        return interval

    def _write_lines(self) -> None:
        lines, self._lines = self._lines, []
        for line, args in lines:
            self.log.info(line, *args)

    def _step(self, snapshot: StatusSnapshot, notified: bool = False) -> float | None:
        """:meth:`_next_sleep`, its info line written here (blocking code)."""
        interval = self._next_sleep(snapshot, notified)
        self._write_lines()
        return interval

    async def _astep(self, snapshot: StatusSnapshot, notified: bool = False) -> float | None:
        """:meth:`_next_sleep`, its info line written from a thread, off the event loop.

        In Airflow 3's triggerer a log line is a blocking write to the triggerer's supervisor,
        which reads none while it loads triggers or sends the runner a reply. Written on the loop,
        a burst of lines (one list call answering a hundred waits) stalls every trigger, and can
        deadlock the two processes (benchmark 7). ``to_thread`` keeps the trigger's log context.
        """
        interval = self._next_sleep(snapshot, notified)
        if self._lines:
            await asyncio.to_thread(self._write_lines)
        return interval

    def _first_interval(self) -> float:
        """How long a listening wait listens before its first poll."""
        interval = self.schedule.next_interval(self.clock() - self.started)
        if self.deadline is not None:
            interval = min(interval, max(0.0, self.deadline - self.clock()))
        return interval

    def timeout_error(self, snapshot: StatusSnapshot | None) -> QueryTimeoutError:
        """The error a wait past its deadline raises, with the elapsed time and the last state seen."""
        state = f"; last state {snapshot.state.value} ({snapshot.remote_status})" if snapshot else ""
        return QueryTimeoutError(
            f"{self.describe} did not finish before the timeout "
            f"({self.clock() - self.started:.0f} s elapsed{state})"
        )

    def run(
        self,
        poll: Callable[[], StatusSnapshot],
        sleep: Callable[[float], None] = time.sleep,
        listen: Callable[[float], StatusSnapshot | None] | None = None,
    ) -> StatusSnapshot:
        """Poll (blocking) until terminal; raise :class:`QueryTimeoutError` at the deadline.

        :param listen: wait up to that long for a completion notification instead of sleeping,
            and before the first poll too (a notification already queued ends the wait at once,
            with no status call); a snapshot it returns ends the wait like a poll's.
        """
        if listen is None:
            snapshot = poll()
            while (interval := self._step(snapshot)) is not None:
                sleep(interval)
                snapshot = poll()
            return snapshot
        interval = self._first_interval()
        while True:
            pushed = listen(interval)
            snapshot, notified = (pushed, True) if pushed else (poll(), False)
            if (interval := self._step(snapshot, notified)) is None:
                return snapshot

    async def run_async(
        self,
        poll: Callable[[], Awaitable[StatusSnapshot]],
        listen: Callable[[float], Awaitable[StatusSnapshot | None]] | None = None,
        *,
        poll_first: bool = False,
    ) -> StatusSnapshot:
        """Poll (async) until terminal; raise :class:`QueryTimeoutError` at the deadline.

        :param listen: as for :meth:`run`.
        :param poll_first: with ``listen``, poll at once and listen only between polls (a
            listener that is only woken by other waits' polls has nothing to say at first).
        """
        # A snapshot is let go before sleeping: thousands of waits keeping their last answer
        # through every sleep feed the cyclic GC's oldest generation, whose full collections
        # stall the triggerer's loop.
        if listen is None:
            snapshot = await poll()
            while (interval := await self._astep(snapshot)) is not None:
                del snapshot
                await asyncio.sleep(interval)
                snapshot = await poll()
            return snapshot
        if poll_first:
            snapshot = await poll()
            if (interval := await self._astep(snapshot)) is None:
                return snapshot
            del snapshot
        else:
            interval = self._first_interval()
        while True:
            pushed = await listen(interval)
            snapshot, notified = (pushed, True) if pushed else (await poll(), False)
            if (interval := await self._astep(snapshot, notified)) is None:
                return snapshot
            del pushed, snapshot
