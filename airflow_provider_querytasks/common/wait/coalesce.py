"""Coalesced status polling: the waits on one account in one triggerer share one poller.

Every deferred wait used to cost one status call per poll. Here, the waits of one account (one
:meth:`~.hooks.base.QueryTaskHook.poller_key`) on one event loop register with one
:class:`AccountPoller`. A wait's poll is answered, DataLoader-style, by one list call
(:meth:`~.hooks.base.QueryTaskHook.alist_statuses`) for all the polls of that account that fall due
within a short gather window; a snapshot the poller observed after the wait's previous poll is
returned at once, without a call; a query the list did not show (or a list that cannot answer,
or failed) is polled on its own with ``aget_status`` as before. When a list call shows a query
terminal, every wait on it is woken at once instead of sleeping until its next poll. Where the
list has a budget of its own that cannot answer every poll (Data Kiosk's getQueries), the polls
of a busy account follow its list calls (:data:`SWEEP_FOLLOW_GAP`).

What stays per wait: its :class:`~.wait.loop.WaitLoop` (deadline, schedule, log lines), its hook
(fallback polls, cancel on kill), its trigger's kwargs. Nothing here outlives the waits: the
poller stops and leaves ``process_state`` with its last wait, and several triggerers (or a
restarted one) simply hold several pollers, each serving its own waits.

The ``[querytasks] coalesce_polls`` option (default ``True``) turns this off: every wait then
polls its own query, as before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager, suppress
from typing import Any

from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.transport.process_state import process_state
from airflow_provider_querytasks.hooks.base import QueryTaskHook

log = logging.getLogger(__name__)

CONFIG_SECTION = "querytasks"
CONFIG_OPTION = "coalesce_polls"
#: Seconds the poller gathers due polls of one account before one list call answers them all.
GATHER_WINDOW = 0.5
#: Due polls that make a list call go at once, without waiting for the rest of the window.
MAX_BATCH = 250
#: Registered queries needed before a list call is worth making (alone, a wait polls its own).
MIN_LISTED = 2
#: List rounds in a row that may leave a query out before the poller stops asking the list for
#: it (a query older than the list reaches, or one it never carries): it is polled on its own.
MAX_LIST_MISSES = 3
#: Longest a list call may take before its round falls back to per-query polls.
LIST_TIMEOUT = 60.0
#: While waits' own polls are still pending after this long (queued in a rate limiter: on a busy
#: account a status call may wait minutes for its turn), the poller asks the list again at this
#: pace: a list that could not answer before (its budget) may answer now, and one call then ends
#: every finished wait at once (their own polls are dropped).
LIST_RETRY = 5.0
#: Accounts one event loop coalesces at most; the waits of any further account poll alone.
MAX_POLLERS_PER_LOOP = 4096
#: A list with a tight budget of its own (Data Kiosk's getQueries: one call per 45 s, answering
#: 100 queries) cannot answer every poll. While it has no call to spare, a poll due on a busy
#: account is answered with the query's last snapshot, without a call, when the next list call
#: can go within this many seconds of that snapshot; that list call is then made for all the
#: account's waits. A query finishing meanwhile is seen at most this long after (benchmark 3
#: holds a busy Data Kiosk account to 60 s); with the list out of reach, the wait polls its own
#: query as before.
SWEEP_FOLLOW_GAP = 55.0
#: Fewer waits than this on an account poll their own queries while the list has no call to
#: spare: their own calls fit the platform's per-query plan (Data Kiosk: 10 waits polling every
#: 5 s fill getQuery's 2 per second) and see a change sooner.
SWEEP_FOLLOW_MIN_WAITS = 10
#: Seconds a scheduled list call goes after its budget's computed moment (rounding).
SWEEP_MARGIN = 0.1


def coalesce_polls_enabled() -> bool:
    """``[querytasks] coalesce_polls`` (env ``AIRFLOW__QUERYTASKS__COALESCE_POLLS``), read once
    per process (``process_state.reset()`` forgets it)."""
    if process_state.coalesce_polls is None:
        from airflow_provider_querytasks.compat import conf

        try:
            enabled = conf.getboolean(CONFIG_SECTION, CONFIG_OPTION, fallback=True)
        except Exception:  # an unreadable value must not stop the waits: say so, use the default
            log.warning("[%s] %s is not a boolean; coalescing polls", CONFIG_SECTION, CONFIG_OPTION)
            enabled = True
        process_state.coalesce_polls = bool(enabled)
    return process_state.coalesce_polls


class CoalescedWait:
    """One wait's handle on its account's poller: what its :class:`~.wait.loop.WaitLoop` calls.

    :param poller: the account's poller.
    :param hook: the wait's own hook (its fallback polls go through it).
    :param query_id: the query waited for.
    :param started: wall-clock start of the wait (bounds the list's created-time filter).
    """

    def __init__(
        self, poller: AccountPoller, hook: QueryTaskHook[Any, Any], query_id: str, started: float
    ) -> None:
        self.poller = poller
        self.hook = hook
        self.query_id = query_id
        self.started = started
        #: Monotonic time of what this wait last saw (a poll answer or an observation).
        self.seen_at = -math.inf
        self._terminal: StatusSnapshot | None = None
        self._woken = asyncio.Event()

    async def poll(self) -> StatusSnapshot:
        """The query's state now: observed since the last poll, listed with others, or polled."""
        snapshot = await self.poller.poll(self)
        if snapshot is None:
            snapshot = await self._own_poll()
            self.poller.observe(snapshot, own=self)
        return snapshot

    async def _own_poll(self) -> StatusSnapshot:
        """This query's own status call, ended early when a list call shows the query terminal
        meanwhile: on a busy account the call may wait minutes for its turn in the rate limiter
        (Data Kiosk: getQuery 2 per second for every wait of the account), while one list call
        answers every wait at once."""
        own = asyncio.ensure_future(self.hook.aget_status(self.query_id))
        woken = asyncio.ensure_future(self._woken.wait())
        self.poller.own_poll_started(self)
        try:
            await asyncio.wait((own, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.poller.own_polls.discard(self)
            woken.cancel()
            if not own.done():
                own.cancel()  # leaves its place in the rate limiter's queue to the next caller
                with suppress(asyncio.CancelledError):
                    await own
        if own.done() and not own.cancelled():
            return own.result()
        if self._terminal is None:  # only wake() ends the wait without the call, and it sets this
            raise RuntimeError(f"{self.hook.describe_query(self.query_id)}: woken without a terminal state")
        return self._terminal

    async def listen(self, timeout: float) -> StatusSnapshot | None:
        """Wait up to ``timeout`` seconds for a list call to show the query terminal."""
        if not self._woken.is_set():
            try:
                await asyncio.wait_for(self._woken.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self._terminal

    def wake(self, snapshot: StatusSnapshot) -> None:
        """A list call showed the query terminal: end the current (or next) listen at once."""
        self._terminal = snapshot
        self._woken.set()


class AccountPoller:
    """Serves every wait on one account in one event loop (see the module docstring).

    :param key: what it serves (the hook class and its :meth:`~.hooks.base.QueryTaskHook.poller_key`).
    :param hook: the hook its list calls go through (the first wait's: hooks of one key are
        interchangeable for listing).
    :param gather_window: seconds due polls are gathered before a list call (default
        :data:`GATHER_WINDOW`).
    :param max_batch: due polls that start a list call at once (default :data:`MAX_BATCH`).
    """

    def __init__(
        self,
        key: Hashable,
        hook: QueryTaskHook[Any, Any],
        *,
        gather_window: float | None = None,
        max_batch: int | None = None,
    ) -> None:
        self.key = key
        self.hook = hook
        self.gather_window = GATHER_WINDOW if gather_window is None else gather_window
        self.max_batch = MAX_BATCH if max_batch is None else max_batch
        self.waits: dict[str, list[CoalescedWait]] = {}
        #: query id -> (last snapshot, monotonic time observed).
        self.observed: dict[str, tuple[StatusSnapshot, float]] = {}
        #: query id -> list rounds in a row that left it out.
        self.misses: dict[str, int] = {}
        self._due: dict[str, list[tuple[CoalescedWait, asyncio.Future[StatusSnapshot | None]]]] = {}
        self._batch_full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Waits whose own status call is pending, and the task asking the list again meanwhile.
        self.own_polls: set[CoalescedWait] = set()
        self._retry_task: asyncio.Task[None] | None = None
        #: The list call due when the list's budget allows (see :data:`SWEEP_FOLLOW_GAP`).
        self._sweep_task: asyncio.Task[None] | None = None
        #: One list call at a time (a second would wait for the list's rate budget).
        self._listing = asyncio.Lock()
        self._failing = False
        #: Statistics (logs, tests, benchmarks).
        self.list_calls = 0
        self.list_failures = 0
        self.listed = 0
        self.cached = 0
        self.followed = 0
        self.fallbacks = 0

    # -- waits ---------------------------------------------------------------------------------
    def add(self, wait: CoalescedWait) -> None:
        """Serve ``wait`` too (several waits may share a query)."""
        self.waits.setdefault(wait.query_id, []).append(wait)

    def remove(self, wait: CoalescedWait) -> bool:
        """Forget a wait; ``True`` when it was the last one (the poller is then stopped)."""
        waits = self.waits.get(wait.query_id, [])
        if wait in waits:
            waits.remove(wait)
        if not waits:
            self.waits.pop(wait.query_id, None)
            self.observed.pop(wait.query_id, None)
            self.misses.pop(wait.query_id, None)
        if wait.query_id in self._due:  # a wait cancelled while its poll was due
            self._due[wait.query_id] = [(w, f) for w, f in self._due[wait.query_id] if w is not wait]
            if not self._due[wait.query_id]:
                del self._due[wait.query_id]
        if self.waits:
            return False
        self.stop()
        log.debug(
            "%s: poller done: %d list calls (%d failed); polls answered by a list %d, by an "
            "earlier answer %d, by following the list calls %d, by their own call %d",
            self.hook.hook_name,
            self.list_calls,
            self.list_failures,
            self.listed,
            self.cached,
            self.followed,
            self.fallbacks,
        )
        return True

    def stop(self) -> None:
        """Cancel the poller's tasks (its list rounds, retries and sweeps)."""
        for task in (self._task, self._retry_task, self._sweep_task):
            if task is not None and not task.done():
                task.cancel()
        self._task = self._retry_task = self._sweep_task = None

    def own_poll_started(self, wait: CoalescedWait) -> None:
        """Note that ``wait`` polls its own query, and retry the list call for it in the background."""
        self.own_polls.add(wait)
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_list())

    async def _retry_list(self) -> None:
        """Ask the list again while own polls are pending (see :data:`LIST_RETRY`)."""
        while self.own_polls:
            await asyncio.sleep(LIST_RETRY)
            pending = {wait.query_id for wait in self.own_polls}
            if pending and not self._due and not self._listing.locked():
                await self._list(pending)

    # -- polls ---------------------------------------------------------------------------------
    async def poll(self, wait: CoalescedWait) -> StatusSnapshot | None:
        """A snapshot for ``wait``, or ``None``: the wait polls its query itself."""
        seen = self.observed.get(wait.query_id)
        if seen is not None and seen[1] > wait.seen_at:
            wait.seen_at = seen[1]
            self.cached += 1
            return seen[0]
        if len(self.waits) < MIN_LISTED or self.misses.get(wait.query_id, 0) >= MAX_LIST_MISSES:
            self.fallbacks += 1
            return None
        if seen is not None and (followed := await self._follow_sweep(seen)) is not None:
            self.followed += 1
            return followed
        future: asyncio.Future[StatusSnapshot | None] = asyncio.get_running_loop().create_future()
        self._due.setdefault(wait.query_id, []).append((wait, future))
        if len(self._due) >= self.max_batch:
            self._batch_full.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        snapshot = await future
        if snapshot is None:
            self.fallbacks += 1
        else:
            self.listed += 1
        return snapshot

    async def _follow_sweep(self, seen: tuple[StatusSnapshot, float]) -> StatusSnapshot | None:
        """The last snapshot again, when the list cannot answer now but can soon enough (see
        :data:`SWEEP_FOLLOW_GAP`); the next list call is then scheduled. ``None``: poll."""
        snapshot, seen_at = seen
        if len(self.waits) < SWEEP_FOLLOW_MIN_WAITS or self.misses.get(snapshot.query_id):
            return None
        ready_in = await self.hook.alist_ready_in()
        if ready_in <= 0 or time.monotonic() - seen_at + ready_in > SWEEP_FOLLOW_GAP:
            return None
        if self._sweep_task is None or self._sweep_task.done():
            self._sweep_task = asyncio.get_running_loop().create_task(self._sweep(ready_in))
        return snapshot

    async def _sweep(self, delay: float) -> None:
        """One list call for every registered query once the list's budget allows."""
        await asyncio.sleep(delay + SWEEP_MARGIN)
        if self.waits and not self._listing.locked():
            await self._list(set(self.waits))

    def observe(self, snapshot: StatusSnapshot, own: CoalescedWait | None = None) -> None:
        """Keep what a fallback poll saw, for the other waits on the same query."""
        now = time.monotonic()
        if own is not None:
            own.seen_at = now
        if snapshot.query_id in self.waits:
            self.observed[snapshot.query_id] = (snapshot, now)

    async def _drain(self) -> None:
        while self._due:
            if len(self._due) < self.max_batch:
                self._batch_full.clear()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), self.gather_window)
            due, self._due = self._due, {}
            answers: dict[str, StatusSnapshot] | None = None
            try:
                answers = await self._list(set(due))
            finally:
                # Whatever happened (even a bug), every due poll gets an answer: a snapshot or
                # None (poll it yourself). A wait must never hang on the poller.
                for query_id, entries in due.items():
                    for wait, future in entries:
                        if not future.done():
                            snapshot = answers.get(query_id) if answers else None
                            if snapshot is not None and (seen := self.observed.get(query_id)):
                                wait.seen_at = seen[1]
                            future.set_result(snapshot)

    async def _list(self, due: set[str]) -> dict[str, StatusSnapshot] | None:
        """One list call for every registered query (the due ones and the rest)."""
        wanted: dict[str, float] = {}
        for query_id, waits in self.waits.items():
            if self.misses.get(query_id, 0) < MAX_LIST_MISSES and waits:
                wanted[query_id] = min(wait.started for wait in waits)
        if not due & wanted.keys():
            return None
        self.list_calls += 1
        try:
            async with self._listing:
                answers = await asyncio.wait_for(self.hook.alist_statuses(wanted), LIST_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.list_failures += 1
            if not self._failing:  # once per failing streak: thousands of waits share this poller
                log.warning(
                    "%s: the list call failed (%s: %s); the waits on this account poll one by one "
                    "until it works again",
                    self.hook.hook_name,
                    type(exc).__name__,
                    exc,
                )
            self._failing = True
            return None
        if answers is None:
            return None
        if self._failing:
            log.info("%s: the list call works again", self.hook.hook_name)
        self._failing = False
        now = time.monotonic()
        for query_id in wanted:
            snapshot = answers.get(query_id)
            if snapshot is None:
                self.misses[query_id] = self.misses.get(query_id, 0) + 1
                continue
            self.misses.pop(query_id, None)
            self.observed[query_id] = (snapshot, now)
            if snapshot.state.terminal:
                for wait in self.waits.get(query_id, []):
                    wait.wake(snapshot)
        return {query_id: answers[query_id] for query_id in wanted if query_id in answers}


def _pollers() -> dict[Hashable, AccountPoller]:
    loop = asyncio.get_running_loop()
    pollers = process_state.account_pollers.get(loop)
    if pollers is None:
        pollers = process_state.account_pollers[loop] = {}
    return pollers


@asynccontextmanager
async def coalesced_wait(
    hook: QueryTaskHook[Any, Any], query_id: str, started: float
) -> AsyncIterator[CoalescedWait | None]:
    """Register a wait with its account's poller for as long as the block runs.

    Yields ``None`` when coalescing is off (``[querytasks] coalesce_polls``), the hook has no
    list path (it keeps the default :meth:`~.hooks.base.QueryTaskHook.alist_statuses`) or the loop
    already serves :data:`MAX_POLLERS_PER_LOOP` accounts: the wait then polls its own query.
    """
    if type(hook).alist_statuses is QueryTaskHook.alist_statuses or not coalesce_polls_enabled():
        yield None
        return
    pollers = _pollers()
    key = (type(hook), hook.poller_key())
    poller = pollers.get(key)
    if poller is None:
        if len(pollers) >= MAX_POLLERS_PER_LOOP:
            yield None
            return
        poller = pollers[key] = AccountPoller(key, hook)
    wait = CoalescedWait(poller, hook, query_id, started)
    poller.add(wait)
    try:
        yield wait
    finally:
        if poller.remove(wait) and pollers.get(key) is poller:
            del pollers[key]
