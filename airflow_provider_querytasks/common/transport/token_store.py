"""Where rotated OAuth tokens are shared between processes: Airflow Variables in the metadata DB.

:class:`AirflowVariableTokenStore` is the store a hook hands to its
:class:`~airflow_provider_querytasks.common.transport.tokens.RotatingTokenSource` (Shoplazza):
the records are Variables, read from the metastore itself (never a cached copy) through whatever
channel the process has (the supervisor in Airflow 3 task and trigger runners, the DB
elsewhere), and the tokens in them are registered with Airflow's secrets masker.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow_provider_querytasks.common.transport.tokens import TokenStoreError
from airflow_provider_querytasks.compat import mask_secret
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS


def supervisor_comms() -> Any:
    """The task or trigger runner's channel to its supervisor (Airflow 3), or ``None``.

    Set in a task process, a triggerer's trigger runner and ``dag.test()`` (in-process); absent in
    servers, the CLI and plain scripts, which reach the metadata DB directly (as on Airflow 2).
    Airflow's own ``Variable.get`` tells the two apart the same way.
    """
    if not AIRFLOW_V_3_0_PLUS:
        return None
    return getattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS", None)


def _variable_answer(answer: Any, key: str) -> str | None:
    from airflow.sdk.execution_time.comms import ErrorResponse, VariableResult

    if isinstance(answer, VariableResult):
        return answer.value
    if isinstance(answer, ErrorResponse):
        if str(getattr(answer.error, "value", answer.error)) == "VARIABLE_NOT_FOUND":
            return None
        raise TokenStoreError(f"Variable {key!r}: {answer.error}")
    return None


def read_variable(key: str) -> str | None:
    """The metadata DB's value of Variable ``key`` (``None`` when unset), never a cached copy.

    Reads the metastore itself rather than ``Variable.get``: that one may answer from Airflow's
    secrets cache or an ``AIRFLOW_VAR_*``/secrets-backend value, and a value written a moment ago
    by another process must be seen.

    :raises TokenStoreError: when the store cannot be reached.
    """
    comms = supervisor_comms()
    try:
        if comms is not None:
            from airflow.sdk.execution_time.comms import GetVariable

            return _variable_answer(comms.send(GetVariable(key=key)), key)
        from airflow.secrets.metastore import MetastoreBackend

        return MetastoreBackend().get_variable(key)
    except TokenStoreError:
        raise
    except Exception as exc:
        raise TokenStoreError(f"Variable {key!r}: {type(exc).__name__}") from None


def write_variable(key: str, value: str, description: str) -> None:
    """Set Variable ``key`` in the metadata DB (Fernet-encrypted there when a key is configured).

    :raises TokenStoreError: when the store cannot be reached.
    """
    comms = supervisor_comms()
    try:
        if comms is not None:
            from airflow.sdk.execution_time.comms import PutVariable

            _variable_answer(comms.send(PutVariable(key=key, value=value, description=description)), key)
            return
        from airflow.models.variable import Variable

        Variable.set(key, value, description=description)
    except TokenStoreError:
        raise
    except Exception as exc:
        raise TokenStoreError(f"Variable {key!r}: {type(exc).__name__}") from None


async def aread_variable(key: str) -> str | None:
    """:func:`read_variable` without blocking the event loop (triggers)."""
    comms = supervisor_comms()
    if comms is not None and hasattr(comms, "asend"):  # a triggerer's trigger runner
        from airflow.sdk.execution_time.comms import GetVariable

        try:
            return _variable_answer(await comms.asend(GetVariable(key=key)), key)
        except TokenStoreError:
            raise
        except Exception as exc:
            raise TokenStoreError(f"Variable {key!r}: {type(exc).__name__}") from None
    if comms is not None:  # dag.test()'s in-process channel: synchronous and local
        return read_variable(key)
    from asgiref.sync import sync_to_async

    return await sync_to_async(read_variable)(key)


async def awrite_variable(key: str, value: str, description: str) -> None:
    """:func:`write_variable` without blocking the event loop (triggers)."""
    comms = supervisor_comms()
    if comms is not None and hasattr(comms, "asend"):
        from airflow.sdk.execution_time.comms import PutVariable

        try:
            answer = await comms.asend(PutVariable(key=key, value=value, description=description))
        except Exception as exc:
            raise TokenStoreError(f"Variable {key!r}: {type(exc).__name__}") from None
        _variable_answer(answer, key)
        return
    if comms is not None:
        write_variable(key, value, description)
        return
    from asgiref.sync import sync_to_async

    await sync_to_async(write_variable)(key, value, description)


class AirflowVariableTokenStore:
    """The shared token records as Airflow Variables; tokens masked by Airflow's secrets masker.

    Every method raises :class:`~airflow_provider_querytasks.common.transport.tokens.TokenStoreError`
    when the store cannot be reached.
    """

    def read(self, key: str) -> str | None:
        """The Variable ``key`` from the metadata DB, or ``None``."""
        return read_variable(key)

    async def aread(self, key: str) -> str | None:
        """The Variable ``key``, read without blocking the event loop."""
        return await aread_variable(key)

    def write(self, key: str, value: str, description: str) -> None:
        """Set the Variable ``key`` (encrypted at rest when a Fernet key is set)."""
        write_variable(key, value, description)

    async def awrite(self, key: str, value: str, description: str) -> None:
        """Set the Variable ``key`` without blocking the event loop."""
        await awrite_variable(key, value, description)

    def mask(self, secret: str) -> None:
        """Register ``secret`` with Airflow's secrets masker."""
        mask_secret(secret)
