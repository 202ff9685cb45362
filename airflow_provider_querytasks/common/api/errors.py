"""The provider's error hierarchy, shared by the three platforms.

Every error a hook, operator, sensor or trigger raises on purpose is a :class:`QueryTaskError`,
so DAG authors can catch one type. It is a plain ``Exception``, not an ``AirflowException``: the
protocol layer (this module, ``common/api.py``, ``protocols/``) imports no Airflow, and Airflow
fails or retries a task on any exception alike (bad input becomes ``AirflowFailException`` at
the operator boundary, ``common/no_retry.py``). HTTP-level errors carry the
platform's own error detail and request id; none carries a credential.
"""

from __future__ import annotations

from typing import Any


class QueryTaskError(Exception):
    """Base of every error raised by this provider.

    :param message: what went wrong, for a human.
    :param platform: ``shoplazza``, ``amazon_data_kiosk``, ``adobe_query_service`` or ``None``.
    :param operation: the API operation (e.g. ``getQuery``), when a call failed.
    :param status: the HTTP status, when a call failed.
    :param request_id: the platform's request id, when it sent one.
    :param detail: the platform's own error detail (parsed body or remote error list).
    :param retryable: whether sending the same call again may succeed; the class's
        :attr:`retryable` when not given.
    """

    #: Whether sending the same call again may succeed: the clients' and the download's retries
    #: try again only then. A 429 or a 5xx is; a refused credential or a bad request is not.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        platform: str | None = None,
        operation: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        detail: Any = None,
        retryable: bool | None = None,
    ) -> None:
        self.message = message
        self.platform = platform
        self.operation = operation
        self.status = status
        self.request_id = request_id
        self.detail = detail
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self._render())

    def _render(self) -> str:
        context = [
            f"{key}={value}"
            for key, value in (
                ("platform", self.platform),
                ("operation", self.operation),
                ("status", self.status),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(context)})" if context else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments need help to survive pickling (e.g. across processes).
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[QueryTaskError], message: str, state: dict[str, Any]) -> QueryTaskError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidInputError(QueryTaskError, ValueError):
    """A parameter or connection field is invalid; raised before any remote call.

    :param parameter: the parameter's name, as the DAG author wrote it.
    :param message: what is wrong and which values are allowed.
    """

    def __init__(self, parameter: str, message: str, **kwargs: Any) -> None:
        self.parameter = parameter
        super().__init__(f"Invalid {parameter!r}: {message}", **kwargs)


class ApiError(QueryTaskError):
    """A call to a platform API failed."""


class AuthenticationError(ApiError):
    """Credentials are missing, wrong or expired (and a token refresh did not help)."""


class PermissionDeniedError(ApiError):
    """The credentials are valid but lack a scope, role or permission."""


class NotFoundError(ApiError):
    """The remote object (query, task, document, dataset) does not exist."""


class RateLimitedError(ApiError):
    """The platform answered 429 and the retries ran out.

    :param retry_after: seconds the platform asked to wait, when it said.
    """

    #: A 429 means the platform rejected the call: another try is safe, even of a submission.
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(ApiError):
    """The platform answered 5xx, or the connection failed, and the retries ran out.

    A submission that may have reached the platform is an :class:`AmbiguousSubmissionError`
    instead, which is not retried.
    """

    retryable = True


class AmbiguousSubmissionError(ApiError):
    """A submission was sent but its outcome is unknown (timeout, dropped connection, 5xx).

    Submissions are not idempotent, so the provider never retries them blindly: a query may
    now exist remotely. The message says so; a retry of the task re-attaches where the
    platform allows it.
    """


class RemoteQueryFailedError(QueryTaskError):
    """The remote query ended in a failed state; ``detail`` holds the platform's error."""


class QueryCancelledError(RemoteQueryFailedError):
    """The remote query was cancelled (remotely or by this provider on kill)."""


class QueryTimeoutError(QueryTaskError):
    """The wait exceeded its ``timeout``; the remote query is cancelled where possible."""
