"""A triggerer-like process: runs its share of deferred waits through the real trigger classes.

``python benchmarks/triggerer_process.py`` imports what a running triggerer has loaded, prints
``ready``, then reads one JSON line on stdin::

    {"connections": [<connection dicts with conn_id>], "static_buckets": false,
     "triggers": [{"class": "<module>.<Class>", "kwargs": {...}}, ...]}

and at once runs every trigger on one event loop (as a triggerer does, each to its first event),
then prints one JSON line: ``{"events": [{"query_id", "status", "at"}...], "http_429": N,
"http_429_at": [...], "buckets": [...]}`` (``at``: ``time.time()``; ``buckets``: each rate
limiter's 429s and cuts). :class:`TriggererProcesses` starts several and
splits the waits between them; ``benchmarks/run.py`` (section ``multiprocess``) and the tests that run
several triggerers against one emulator use it: a wait's state lives in its process, as in
production.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any


class _Count429(logging.Handler):
    """Counts the 429 answers the transport logs (one INFO line per answer)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "-> 429" in record.getMessage():
            self.at.append(time.time())


def main() -> None:
    import aiohttp  # noqa: F401 - loaded before the waits start, as in a running triggerer

    from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
    from airflow_provider_querytasks.common.transport.ratelimit import rate_limiters
    from airflow_provider_querytasks.testing import connection_env
    from airflow_provider_querytasks.triggers import amazon_data_kiosk  # noqa: F401

    with contextlib.suppress(ImportError):  # the amazon extra: waits on SQS notifications
        import airflow.providers.amazon.aws.hooks.sqs  # noqa: F401
    counter = _Count429()
    transport_log = logging.getLogger("airflow_provider_querytasks.common.transport.clients")
    transport_log.addHandler(counter)
    transport_log.setLevel(logging.INFO)
    transport_log.propagate = False
    print("ready", flush=True)

    spec = json.loads(sys.stdin.readline())
    for conn in spec["connections"]:
        name, value = connection_env(conn)
        os.environ[name] = value
    rate_limiters.adaptive = not spec.get("static_buckets", False)
    triggers: list[Any] = []
    for item in spec["triggers"]:
        module, _, name = item["class"].rpartition(".")
        triggers.append(getattr(importlib.import_module(module), name)(**item["kwargs"]))

    async def first_event(trigger: Any) -> dict[str, Any]:
        async for event in trigger.run():
            return {"query_id": trigger.query_id, "status": event.payload["status"], "at": time.time()}
        return {"query_id": trigger.query_id, "status": "none", "at": time.time()}

    async def run_all() -> list[dict[str, Any]]:
        try:
            return await asyncio.gather(*(first_event(t) for t in triggers))
        finally:
            await close_shared_client_session()

    events = asyncio.run(run_all())
    buckets = [
        {"key": list(key), "throttles": getattr(b, "throttles", None), "cuts": getattr(b, "cuts", None)}
        for key, b in rate_limiters._buckets.items()
    ]
    result = {"events": events, "http_429": len(counter.at), "http_429_at": counter.at, "buckets": buckets}
    print(json.dumps(result), flush=True)


class TriggererProcesses:
    """``processes`` triggerer-like processes, started (and ready) when the block begins.

    :param processes: how many.
    :param timeout: seconds :meth:`run` waits for their results.
    """

    def __init__(self, processes: int, timeout: float = 600.0) -> None:
        self.processes = processes
        self.timeout = timeout
        self._children: list[subprocess.Popen[str]] = []

    def __enter__(self) -> TriggererProcesses:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        for _ in range(self.processes):
            self._children.append(
                subprocess.Popen(
                    [sys.executable, __file__],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
            )
        for child in self._children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a triggerer process did not start")
        return self

    def run(
        self, connections: list[dict[str, Any]], triggers: list[dict[str, Any]], static_buckets: bool = False
    ) -> tuple[float, list[dict[str, Any]]]:
        """Hand process i every i-th trigger, all at once; return the hand-over time
        (``time.time()``) and each process's result."""
        handed_over = time.time()
        for i, child in enumerate(self._children):
            assert child.stdin is not None
            spec = {
                "connections": connections,
                "static_buckets": static_buckets,
                "triggers": triggers[i :: self.processes],
            }
            child.stdin.write(json.dumps(spec) + "\n")
            child.stdin.flush()
        results = []
        for child in self._children:
            out, _ = child.communicate(timeout=self.timeout)
            lines = out.strip().splitlines()
            if child.returncode or not lines:
                raise RuntimeError(f"a triggerer process failed (exit {child.returncode})")
            results.append(json.loads(lines[-1]))
        return handed_over, results

    def __exit__(self, *exc: object) -> None:
        for child in self._children:
            if child.poll() is None:
                child.kill()
                child.wait()


if __name__ == "__main__":
    main()
