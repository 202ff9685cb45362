"""API operations written once, run by the sync client or the async one.

An operation is a generator: it yields each :class:`~.api.calls.ApiRequest` it needs, receives
the :class:`~.api.calls.ApiResponse` back, and returns the parsed result. It does no I/O itself,
so the same operation runs in a worker (:func:`run_steps`, ``requests``) and in the triggerer
(:func:`arun_steps`, ``aiohttp``); operations of several calls compose with ``yield from``.

A platform's protocol object writes its operations as methods returning :data:`Steps`
(usually :func:`one_call`), and a hook exposes each as a one-line sync method and a one-line
async method (:meth:`~.hooks.base.QueryTaskHook.run`, :meth:`~.hooks.base.QueryTaskHook.arun`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeAlias, TypeVar

from airflow_provider_querytasks.common.api.calls import ApiRequest, ApiResponse

T = TypeVar("T")

#: The calls of one operation: yields each request, is sent its response, returns the result.
Steps: TypeAlias = Generator[ApiRequest, ApiResponse, T]


def one_call(request: ApiRequest, parse: Callable[[ApiResponse], T]) -> Steps[T]:
    """The operation made of one request and the parser of its answer."""
    return parse((yield request))


def run_steps(steps: Steps[T], call: Callable[[ApiRequest], ApiResponse]) -> T:
    """Run an operation, each request through ``call`` (blocking)."""
    try:
        request = next(steps)
        while True:
            request = steps.send(call(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def arun_steps(steps: Steps[T], call: Callable[[ApiRequest], Awaitable[ApiResponse]]) -> T:
    """Run an operation, each request through ``call`` (on the event loop)."""
    try:
        request = next(steps)
        while True:
            request = steps.send(await call(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
