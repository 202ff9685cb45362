"""The one place that knows which Airflow line is running.

Everything the package needs from Airflow that moved between 2.11 and 3.x is imported here, via
``airflow.providers.common.compat`` where it has the name and from the version's own location
otherwise (older common-compat releases, as shipped by some managed Airflow images, lack a few
names). Where behaviour differs, this module gives a flag or a function that hides the
difference (``TRIGGER_ON_KILL_SUPPORTED``, ``count_resumable_job``, ``get_async_connection``...).

Other modules still adapt to the line, by what they find rather than by the version number:
``common/triggers.py`` reads ``TRIGGER_ON_KILL_SUPPORTED``, ``common/operators.py`` uses 3.3's
``task_state_store`` when the context has one, ``connection_forms.py`` falls back when Airflow's
wtforms widgets are gone (3.x). Only ``testing/dags.py`` (``dag.test()`` needs the DAG serialized
first on 3.x) reads a version flag itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from airflow.sdk import (
        BaseHook,
        BaseOperator,
        BaseOperatorLink,
        BaseSensorOperator,
        Connection,
        Context,
        ObjectStoragePath,
        PokeReturnValue,
    )
    from airflow.sdk.configuration import conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.sdk.log import mask_secret, redact
else:
    from airflow.providers.common.compat.sdk import (
        AirflowException,
        AirflowFailException,
        AirflowSkipException,
        BaseHook,
        BaseOperator,
        BaseOperatorLink,
        BaseSensorOperator,
        Connection,
        Context,
        ObjectStoragePath,
        PokeReturnValue,
        TaskDeferred,
        XCom,
        conf,
    )

    try:  # common-compat >= 1.22
        from airflow.providers.common.compat.sdk import mask_secret
    except ImportError:  # pragma: no cover - depends on the installed common-compat
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:
            from airflow.utils.log.secrets_masker import mask_secret
    try:  # what the masker makes of a value (tests and the reliability suite check with it)
        from airflow.sdk.log import redact
    except ImportError:  # pragma: no cover - Airflow 2.11 line
        from airflow.utils.log.secrets_masker import redact

try:  # both lines have it in airflow.exceptions; the fallback keeps the warning filterable
    from airflow.exceptions import AirflowProviderDeprecationWarning
except ImportError:  # pragma: no cover - an Airflow that dropped it

    class AirflowProviderDeprecationWarning(DeprecationWarning):  # type: ignore[no-redef]
        """A deprecated provider feature (stand-in where Airflow has none)."""


def count_resumable_job(event: str, operator: object) -> None:
    """Airflow 3.3+: count a re-attach decision as ``ResumableJobMixin`` does (``resumable_job.*``)."""
    if not AIRFLOW_V_3_3_PLUS:
        return
    from airflow.sdk.observability.stats import Stats

    Stats.incr(f"resumable_job.{event}", tags={"operator": type(operator).__name__})


#: ``BaseTrigger.on_kill`` (remote cancel when a user kills a deferred task) exists from 3.3.0.
TRIGGER_ON_KILL_SUPPORTED = AIRFLOW_V_3_3_PLUS


async def get_async_connection(conn_id: str) -> Connection:
    """Look a connection up without blocking the triggerer's event loop."""
    try:
        from airflow.providers.common.compat.connection import get_async_connection as _get
    except ImportError:  # pragma: no cover - common-compat without the helper
        from asgiref.sync import sync_to_async

        return await sync_to_async(BaseHook.get_connection)(conn_id)
    return await _get(conn_id)


async def get_async_extra_dejson(conn: Connection) -> dict[str, Any]:
    """The connection's extra as a dict, read without blocking the event loop."""
    try:
        from airflow.providers.common.compat.connection import get_async_extra_dejson as _get
    except ImportError:  # pragma: no cover - common-compat without the helper
        from asgiref.sync import sync_to_async

        return await sync_to_async(lambda: conn.extra_dejson)()
    return await _get(conn)


async def task_is_still_deferred(trigger: BaseTrigger) -> bool | None:
    """Whether the task instance behind ``trigger`` is still deferred.

    Used before Airflow 3.3 (no ``BaseTrigger.on_kill``) when a trigger is cancelled: a trigger
    cancelled while its task is still deferred is being moved or restarted, and its remote query
    must keep running; one whose task left the deferred state was killed by a user. Returns
    ``None`` when the state cannot be read (no task instance attached, e.g. in ``dag.test()``).
    """
    ti = trigger.task_instance
    if ti is None:
        return None
    from asgiref.sync import sync_to_async

    try:
        if AIRFLOW_V_3_0_PLUS:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            response = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=ti.dag_id,
                task_ids=[ti.task_id],
                run_ids=[ti.run_id],
                map_index=ti.map_index,
            )
            state = response[ti.run_id][ti.task_id]
        else:  # pragma: no cover - Airflow 2.11 line
            state = await sync_to_async(_task_state_from_db)(ti)
    except Exception:
        log.warning("Could not read the state of task %s; assuming it is still deferred", ti.task_id)
        return None
    return str(state) == "deferred"


def _task_state_from_db(ti: Any) -> str | None:  # pragma: no cover - Airflow 2.11 line
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(TaskInstance.state)
            .filter_by(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index)
            .one_or_none()
        )
    return None if row is None else str(row[0])


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "TRIGGER_ON_KILL_SUPPORTED",
    "AirflowException",
    "AirflowFailException",
    "AirflowProviderDeprecationWarning",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "BaseTrigger",
    "Connection",
    "Context",
    "ObjectStoragePath",
    "PokeReturnValue",
    "TaskDeferred",
    "TriggerEvent",
    "XCom",
    "conf",
    "count_resumable_job",
    "get_async_connection",
    "get_async_extra_dejson",
    "mask_secret",
    "redact",
    "task_is_still_deferred",
]
