"""Separate processes of the OAuth tests: a worker task, or a trigger, using one connection.

Each :class:`OAuthProcess` is a new OS process, with nothing in memory from an earlier one (no
token, no rate bucket, no cached connection): it is forked from a fork server that has only
imported Airflow and the provider, which spares each one an interpreter start and Airflow's
import. Without ``poll`` it submits a data task (sync hook, as a worker task does) and returns
its id; with ``poll`` it reads that task's status through the async hook methods (as a trigger
does).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from airflow_provider_querytasks.common.transport.clients import (
    RetryPolicy,
    close_shared_client_session,
)
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook

DAY = ("2026-11-20T00:00:00", "2026-11-21T00:00:00")
RETRY = RetryPolicy(attempts=2, initial=0.01, maximum=0.1, jitter=0.0)

#: New processes are forked from a server that imported this module (Airflow and the provider).
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload([__name__])


def _run(
    environment: dict[str, str], conn_id: str, poll: str | None, ready: Event, go: Event, answer: Connection
) -> None:
    os.environ.clear()
    os.environ.update(environment)  # the test's connections, as a new process would see them
    hook = ShoplazzaHook(conn_id, retry=RETRY)
    ready.set()
    go.wait()
    try:
        if poll:

            async def status() -> str:
                try:
                    return (await hook.aget_status(poll)).state.value
                finally:
                    await close_shared_client_session()

            answer.send((True, {"state": asyncio.run(status())}))
        else:
            answer.send((True, {"query_id": hook.create_task("pageview", *DAY)}))
    except Exception as error:
        answer.send((False, f"{type(error).__name__}: {error}"))


class OAuthProcess:
    """One call in a process of its own.

    :param conn_id: the OAuth connection (``AIRFLOW_CONN_*`` of this process's environment).
    :param poll: poll this task with the async hook (else submit one).
    :param hold: build the hook, then wait for :meth:`go` (two processes calling at one moment).
    """

    def __init__(self, conn_id: str, poll: str | None = None, hold: bool = False) -> None:
        self.ready = CONTEXT.Event()
        self._go = CONTEXT.Event()
        if not hold:
            self._go.set()
        self._answers, answer = CONTEXT.Pipe(duplex=False)
        self.process = CONTEXT.Process(
            target=_run, args=(dict(os.environ), conn_id, poll, self.ready, self._go, answer), daemon=True
        )
        self.process.start()
        answer.close()

    def go(self) -> None:
        self._go.set()

    def finish(self, timeout: float = 120) -> dict[str, Any]:
        """The call's result; fails the test with the process's error."""
        try:
            if not self._answers.poll(timeout):
                raise AssertionError(f"no answer from the process within {timeout} s")
            succeeded, value = self._answers.recv()
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
        assert succeeded, value
        return dict(value)
