"""Errors a retry cannot fix fail the task at once, without using its retries.

``common/errors.py`` stays free of Airflow, so the conversion to Airflow's
``AirflowFailException`` happens here, at the boundary where Airflow calls the task:
:class:`FailWithoutRetryMixin` wraps every ``execute``, ``execute_complete`` and ``poke`` a
subclass defines. What is converted:

* :class:`InvalidInputError`: a wrong parameter or connection field; the next try would read the
  same values.
* :class:`PermissionDeniedError` raised for an API operation: the credentials lack a right, which
  no retry grants. A 403 from a result-storage host is not converted: it usually means an expired
  presigned URL, which a new try replaces.

The raised exception is both an ``AirflowFailException`` and the original error class (its
message and attributes kept), so ``except InvalidInputError`` in user code still catches it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from airflow_provider_querytasks.common.errors import InvalidInputError, PermissionDeniedError
from airflow_provider_querytasks.compat import AirflowFailException

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
