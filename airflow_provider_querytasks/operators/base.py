"""The submit-and-wait operator, written once for every platform.

A platform operator subclasses :class:`QueryTaskOperator`, sets ``hook_class`` and
``trigger_class``, and implements :meth:`~QueryTaskOperator.validate_inputs`,
:meth:`~QueryTaskOperator.submit` and usually :meth:`~QueryTaskOperator.on_query_finished`; a
task that runs a chain of queries (windows, pages) implements
:meth:`~QueryTaskOperator.next_query` too. The base runs the flow: validate -> re-attach or
submit -> wait (in the worker, or deferred to the triggerer with an absolute deadline) -> check
the final state -> the next query of the chain, waited for the same way, until there is none ->
the subclass's result.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, TypeVar

from airflow_provider_querytasks.common.api.errors import (
    InvalidInputError,
    PermissionDeniedError,
    QueryTaskError,
    QueryTimeoutError,
)
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.wait.deadline import wait_deadline
from airflow_provider_querytasks.common.wait.loop import WaitLoop, to_seconds
from airflow_provider_querytasks.common.wait.mixin import (
    HookT,
    QueryWaitMixin,
    default_deferrable,
    snapshot_from_event,
)
from airflow_provider_querytasks.compat import (
    AirflowFailException,
    BaseOperator,
    Context,
    count_resumable_job,
)

# -- errors a retry cannot fix fail the task at once, without using its retries

F = TypeVar("F", bound=Callable[..., Any])


class InvalidInputFailure(AirflowFailException, InvalidInputError):
    """An :class:`InvalidInputError` that fails the task without retries."""


class PermissionDeniedFailure(AirflowFailException, PermissionDeniedError):
    """A :class:`PermissionDeniedError` of an API operation that fails the task without retries."""


def as_failure(error: BaseException) -> BaseException | None:
    """The no-retry twin of ``error``, or ``None`` when a retry might help."""
    if isinstance(error, AirflowFailException):
        return None
    if isinstance(error, InvalidInputError):
        cls: type[BaseException] = InvalidInputFailure
    elif isinstance(error, PermissionDeniedError) and error.operation is not None:
        cls = PermissionDeniedFailure
    else:
        return None
    # Same message and attributes without re-running the keyword-only __init__ chains.
    failure = cls.__new__(cls)
    Exception.__init__(failure, *error.args)
    failure.__dict__.update(error.__dict__)
    return failure


def fail_without_retry(method: F) -> F:
    """Decorate a task method: bad input and missing rights raise ``AirflowFailException``."""
    if getattr(method, "__fails_without_retry__", False):
        return method

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as error:
            failure = as_failure(error)
            if failure is None:
                raise
            raise failure from error

    wrapper.__fails_without_retry__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class FailWithoutRetryMixin:
    """Put first in an operator's or sensor's bases: its task methods fail without retries.

    Every class below it gets the methods named in :attr:`task_methods` wrapped with
    :func:`fail_without_retry` as it is defined, so a subclass cannot forget it.
    """

    task_methods: ClassVar[tuple[str, ...]] = ("execute", "execute_complete", "poke")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.task_methods:
            method = cls.__dict__.get(name)
            if callable(method):
                setattr(cls, name, fail_without_retry(method))


# -- the chain of queries one task runs (Shoplazza windows, Data Kiosk pages)

#: Key of the chain's state in the operator's ``resume_state``.
CHAIN_KEY = "chain"


class QueryChain:
    """A view over ``resume_state["chain"]``: the records of the queries that finished, and the
    query being waited for with what it was submitted for (a window, a page token...).

    :param resume_state: the operator's ``resume_state``; the chain's state is created in it
        when missing, and every change is made in it.
    """

    def __init__(self, resume_state: dict[str, Any]) -> None:
        state = resume_state.get(CHAIN_KEY)
        if not isinstance(state, dict):
            state = resume_state[CHAIN_KEY] = {"records": [], "current": None}
        self._state = state

    @property
    def records(self) -> list[dict[str, Any]]:
        """One record per finished query, in order (what the task's XCom lists)."""
        records: list[dict[str, Any]] = self._state["records"]
        return records

    def add_record(self, record: dict[str, Any]) -> int:
        """Append a finished query's record; return how many queries have finished."""
        self.records.append(record)
        return len(self.records)

    def submitted(self, query_id: str, **step: Any) -> None:
        """Note the query just submitted and what it is for (JSON-able values)."""
        self._state["current"] = {"query_id": query_id, **step}

    def step_of(self, query_id: str) -> dict[str, Any]:
        """What ``query_id`` was submitted for, when it is the current query (else ``{}``)."""
        current = self._state.get("current") or {}
        if current.get("query_id") != query_id:
            return {}
        return {key: value for key, value in current.items() if key != "query_id"}


# -- the operator

#: Key under which the current query id is kept in Airflow 3.3's ``task_state_store``.
STATE_STORE_KEY = "querytasks_query"


class QueryTaskOperator(FailWithoutRetryMixin, QueryWaitMixin[HookT], BaseOperator):
    """Submit a remote query, wait for it, and return a JSON-able record.

    :param conn_id: the Airflow connection id (the hook's default when omitted).
    :param wait_for_completion: wait for the query to finish (else return right after submitting).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval: longest time between two status polls (``timedelta`` or seconds);
        polls start more often and back off to it.
    :param timeout: how long to wait in total, deferred time included (``timedelta`` or seconds;
        ``None`` for no limit). On timeout the remote query is cancelled when ``cancel_on_kill``.
        The task's ``execution_timeout``, counted from the try's start, ends the wait the same
        way when it comes first (deferred time included).
    :param cancel_on_kill: cancel the remote query when the task is killed or times out.
    :param durable: on a task retry, re-attach to the query the previous try started (when it
        still runs or has succeeded) instead of submitting a duplicate: from Airflow 3.3's
        ``task_state_store``, else by a remote look-up where the platform allows one. The name,
        the store key (:attr:`external_id_key`) and the ``resumable_job.*`` metrics (3.3+) follow
        Airflow's ``ResumableJobMixin``.
    """

    #: ``task_state_store`` key of the current query (``ResumableJobMixin``'s attribute name).
    external_id_key: str = STATE_STORE_KEY

    template_fields: Sequence[str] = ("conn_id",)

    def __init__(
        self,
        *,
        conn_id: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = default_deferrable(),
        poll_interval: timedelta | float = timedelta(seconds=60),
        timeout: timedelta | float | None = timedelta(hours=24),
        cancel_on_kill: bool = True,
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.hook_class.default_conn_name
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = to_seconds(poll_interval, "poll_interval")
        self.timeout = to_seconds(timeout, "timeout", allow_none=True)
        self.cancel_on_kill = cancel_on_kill
        self.durable = durable
        #: The query being waited for (what ``on_kill`` cancels).
        self.query_id: str | None = None
        #: What a subclass keeps across deferrals and retries (JSON-able): the chain's state
        #: (:attr:`chain`), the windows to export...
        self.resume_state: dict[str, Any] = {}
        self._deadline: float | None = None
        self._started: float | None = None

    @property
    def chain(self) -> QueryChain:
        """The chain of queries this task runs (kept in :attr:`resume_state`)."""
        return QueryChain(self.resume_state)

    # -- to implement -------------------------------------------------------------------------
    def validate_inputs(self) -> None:
        """Check the (rendered) parameters; raise :class:`InvalidInputError` before any call."""

    def submit(self, context: Context) -> str:
        """Submit the remote query and return its id."""
        raise NotImplementedError

    def find_submitted_query(self, context: Context) -> str | None:
        """On a retry without a stored id: a live query the previous try submitted, if any."""
        return None

    def next_query(self, context: Context, snapshot: StatusSnapshot) -> str | None:
        """After a query of the chain finished (succeeded, or cancelled when ``accept_cancelled``):
        submit the next one and return its id, or ``None`` when the chain ends (the default: a
        chain of one query).

        Record the finished query in :attr:`chain` first: the base then waits for the returned
        query the same way (in the worker, or deferred again), in a loop.
        """
        return None

    def on_query_finished(self, context: Context, snapshot: StatusSnapshot) -> Any:
        """The task's return value (XCom) once the last query of the chain finished successfully."""
        return snapshot.to_dict()

    def submitted_result(self, context: Context, query_id: str) -> Any:
        """The return value when ``wait_for_completion=False``."""
        return {"query_id": query_id, "status": "submitted"}

    # -- the flow -----------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        self.validate_inputs()
        self._started = time.time()
        # The earlier of timeout and execution_timeout: deferred time counts against both.
        self._deadline = wait_deadline(context, self.timeout, self.execution_timeout, self._started)
        reattached = self._reattach(context) if self.durable else None
        if reattached is not None:
            if reattached.state is QueryState.SUCCEEDED:
                return self._finish(context, reattached)
            query_id = reattached.query_id
        else:
            query_id = self.submit(context)
            self.log.info("Submitted %s", self.hook.describe_query(query_id))
        if not self.wait_for_completion:
            self.record_query_id(context, query_id)
            return self.submitted_result(context, query_id)
        return self.wait_for(context, query_id)

    def wait_for(self, context: Context, query_id: str) -> Any:
        """Wait for ``query_id`` and the chain's next queries, then return the task's result."""
        return self._finish(context, self._wait(context, query_id))

    def _wait(self, context: Context, query_id: str) -> StatusSnapshot:
        """The final status of ``query_id``, waited for in the worker; deferrable, this defers
        instead (raises ``TaskDeferred``) and :meth:`execute_complete` takes the chain up again."""
        self.record_query_id(context, query_id)
        if self.deferrable:
            next_kwargs = {"resume_state": self.resume_state, "deadline": self._deadline}
            trigger = self.build_trigger(
                query_id, deadline=self._deadline, cancel_on_kill=self.cancel_on_kill, next_kwargs=next_kwargs
            )
            # The trigger carries the deadline: execution_timeout does not cover deferred time.
            self.defer(trigger=trigger, method_name="execute_complete", kwargs=next_kwargs, timeout=None)
        loop = WaitLoop(
            self.hook.describe_query(query_id), self.poll_schedule(), self._deadline, logger=self.log
        )
        try:
            return loop.run(
                lambda: self.hook.get_status(query_id), listen=self.notification_listener(query_id)
            )
        except QueryTimeoutError:
            self._cancel_after_timeout()
            raise

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        resume_state: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Resume after the trigger's event (failed, cancelled and timed-out queries raise)."""
        echoed = (event or {}).get("next_kwargs")
        if resume_state is None and isinstance(echoed, dict):
            # dag.test() passes the event without the defer kwargs; the trigger echoed them.
            resume_state = echoed.get("resume_state")
            deadline = echoed.get("deadline")
        self.resume_state = dict(resume_state or {})
        self._deadline = deadline
        self.query_id = (event or {}).get("query_id")
        try:
            snapshot = snapshot_from_event(event)
        except QueryTimeoutError:
            self._cancel_after_timeout()
            raise
        return self._finish(context, snapshot)

    def _finish(self, context: Context, snapshot: StatusSnapshot) -> Any:
        """Check ``snapshot`` and go on with the chain until its last query: a loop, not a call
        per query (a 425-window export waited for in the worker would overflow the stack)."""
        while True:
            self.query_id = snapshot.query_id
            self.raise_for_final_state(snapshot)
            next_id = self.next_query(context, snapshot)
            if next_id is None:
                return self.on_query_finished(context, snapshot)
            self.log.info("Next query of the chain: %s", self.hook.describe_query(next_id))
            snapshot = self._wait(context, next_id)

    def on_kill(self) -> None:
        """Cancel the remote query when the task is killed (or hits ``execution_timeout``)."""
        if self.cancel_on_kill and self.query_id:
            self.log.info("Task killed: cancelling %s", self.hook.describe_query(self.query_id))
            self.hook.cancel_query(self.query_id)

    def _cancel_after_timeout(self) -> None:
        if self.cancel_on_kill and self.query_id:
            try:
                self.hook.cancel_query(self.query_id)
            except QueryTaskError:
                self.log.warning("Could not cancel %s after the timeout", self.query_id, exc_info=True)

    # -- re-attach on retry -------------------------------------------------------------------
    def record_query_id(self, context: Context, query_id: str) -> None:
        """Record the current query: XCom ``query_id``, and 3.3's task state store for retries."""
        self.query_id = query_id
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="query_id", value=query_id)
        store = context.get("task_state_store")
        if store is not None:
            store.set(self.external_id_key, {"query_id": query_id, "resume_state": self.resume_state})

    def _reattach(self, context: Context) -> StatusSnapshot | None:
        """A live or succeeded query of a previous try (state restored), or ``None``."""
        ti = context.get("ti")
        if ti is None or int(getattr(ti, "try_number", 1) or 1) <= 1:
            count_resumable_job("fresh_submit", self)
            return None
        query_id = None
        fresh = self.resume_state  # as validate_inputs built it, for a chain started again
        store = context.get("task_state_store")
        stored = store.get(self.external_id_key) if store is not None else None
        if isinstance(stored, dict) and stored.get("query_id"):
            count_resumable_job("reconnect_attempt", self)
            query_id = str(stored["query_id"])
            saved = stored.get("resume_state")
            self.resume_state = dict(saved) if isinstance(saved, dict) else {}
        else:
            query_id = self.find_submitted_query(context)
        if query_id is None:
            count_resumable_job("fresh_submit", self)
            return None
        snapshot = self.hook.get_status(query_id)
        if snapshot.state in (QueryState.FAILED, QueryState.CANCELLED):
            count_resumable_job("terminal_resubmit", self)
            self.log.info(
                "The previous try's %s ended %s: submitting again",
                self.hook.describe_query(query_id),
                snapshot.remote_status,
            )
            self.resume_state = fresh
            return None
        succeeded = snapshot.state is QueryState.SUCCEEDED
        count_resumable_job("already_succeeded" if succeeded else "reconnect_success", self)
        self.log.info(
            "Re-attaching to %s (%s) from the previous try",
            self.hook.describe_query(query_id),
            snapshot.remote_status,
        )
        self.query_id = query_id
        return snapshot


# -- what identifies a task instance's remote queries (the re-attach look-ups)


def task_instance_name(context: Context) -> str:
    """``airflow:<dag_id>:<task_id>:<run_id>:<map_index>``: the same on every try of a task
    instance, different for any other (``airflow:adhoc`` without a task instance)."""
    ti: Any = context.get("ti")
    if ti is None:
        return "airflow:adhoc"
    map_index = getattr(ti, "map_index", -1)
    return f"airflow:{ti.dag_id}:{ti.task_id}:{ti.run_id}:{map_index if map_index is not None else -1}"


def first_try_started(context: Context) -> datetime | None:
    """The earliest the task instance's first try in this attempt of its DAG run can have
    started: the later of the run's ``start_date`` and ``queued_at`` (both set anew when a
    finished run is cleared; ``queued_at`` also when a task of a running run is cleared, on
    Airflow 3), or ``None`` when the context has neither (no look-up then).

    A query of the task instance created before it belongs to an earlier attempt (a cleared
    run), never to this one: a retry's remote look-up adopts nothing older.
    """
    dag_run: Any = context.get("dag_run")
    times = [getattr(dag_run, name, None) for name in ("start_date", "queued_at")]
    known = [at if at.tzinfo else at.replace(tzinfo=timezone.utc) for at in times if isinstance(at, datetime)]
    return max(known) if known else None
