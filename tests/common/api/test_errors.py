"""The error classes: whether another attempt may succeed is a field of the class."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_querytasks.common.api.errors import (
    AmbiguousSubmissionError,
    ApiError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    QueryTaskError,
    RateLimitedError,
    ServerError,
)
from airflow_provider_querytasks.common.transport.clients import is_retryable

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (RateLimitedError("429", retry_after=1.0), True),
        (ServerError("503"), True),
        (ServerError("503 to a call that must not be repeated", retryable=False), False),
        (AmbiguousSubmissionError("sent, outcome unknown"), False),
        (ApiError("400"), False),
        (ApiError("a 409 the platform asks to repeat", retryable=True), True),
        (AuthenticationError("401"), False),
        (NotFoundError("404"), False),
        (InvalidInputError("query", "must not be empty"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, QueryTaskError) else str(value),
)
def test_retryable_is_a_field_and_survives_pickling(error: QueryTaskError, retryable: bool) -> None:
    assert error.retryable is retryable
    assert is_retryable(error) is retryable
    # Errors cross processes (trigger events, task runners) pickled.
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    assert type(copy) is type(error)
    assert copy.retryable is retryable
    assert is_retryable(copy) is retryable


def test_an_instance_choice_does_not_change_its_class() -> None:
    ServerError("once", retryable=False)
    assert ServerError.retryable is True
    assert ServerError("again").retryable is True


def test_exceptions_that_are_not_the_providers_are_never_retried() -> None:
    assert is_retryable(ValueError("bad")) is False
    assert is_retryable(ConnectionError("reset")) is False
