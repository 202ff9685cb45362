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

import contextlib
import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_querytasks.version_compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_1_PLUS,
    AIRFLOW_V_3_3_PLUS,
)

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

    def _masker(name: str) -> Any:
        """``mask_secret`` or ``redact`` (what the masker makes of a value: tests check with it).

        From common-compat where it has the name (>= 1.22), else from the line's own module:
        ``airflow.sdk.log`` on 3.1+, the task SDK's ``execution_time.secrets_masker`` on 3.0 (its
        ``airflow.sdk.log`` has no ``redact``), ``airflow.utils.log.secrets_masker`` on 2.11.
        """
        for module in (
            "airflow.providers.common.compat.sdk",
            "airflow.sdk.log",
            "airflow.sdk.execution_time.secrets_masker",
            "airflow.utils.log.secrets_masker",
        ):
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise ImportError(f"no secrets masker has {name!r}")  # pragma: no cover - every line has one

    def _mask_secret_3_0(secret: Any, name: str | None = None) -> None:
        """Airflow 3.0: mask in this process first, then tell the supervisor if it can be told.

        3.0's own ``mask_secret`` tells the supervisor first and lets its failure through: a
        trigger calling it on the triggerer's event loop gets a ``RuntimeError`` (the channel's
        sync ``send`` is ``async_to_sync``) and the value stays unmasked. 3.1+ do it in this order.
        """
        if not secret:
            return
        from airflow.sdk.execution_time.secrets_masker import _secrets_masker

        _secrets_masker().add_mask(secret, name)
        with contextlib.suppress(Exception):
            from airflow.sdk.execution_time import task_runner
            from airflow.sdk.execution_time.comms import MaskSecret

            if comms := getattr(task_runner, "SUPERVISOR_COMMS", None):
                comms.send(MaskSecret(value=secret, name=name))

    mask_secret = _masker("mask_secret") if AIRFLOW_V_3_1_PLUS or not AIRFLOW_V_3_0_PLUS else _mask_secret_3_0
    redact = _masker("redact")

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


def write_dag_to_db(dag: Any) -> None:
    """Airflow 3: write ``dag`` to the metadata DB as the DAG processor does (``dag.test()`` needs it).

    The DAG processor's own call changed between lines: 3.1+ takes a ``LazyDeserializedDAG`` (from
    ``from_dag``) and a parse duration, 3.0 has neither.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        if hasattr(LazyDeserializedDAG, "from_dag"):  # 3.1+
            update_dag_parsing_results_in_db(
                "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session
            )
        else:  # 3.0: the DAG's file relative to its bundle is set by the DagBag, as here
            from airflow.serialization.serialized_objects import SerializedDAG

            if dag.relative_fileloc is None:
                dags_folder = Path(conf.get("core", "dags_folder")).resolve()
                fileloc = Path(dag.fileloc).resolve()
                dag.relative_fileloc = str(
                    fileloc.relative_to(dags_folder) if fileloc.is_relative_to(dags_folder) else fileloc
                )
            lazy = LazyDeserializedDAG(data=SerializedDAG.to_dict(dag))  # type: ignore[attr-defined]
            update_3_0: Any = update_dag_parsing_results_in_db  # typed for the 3.3 signature
            update_3_0("dags-folder", None, [lazy], {}, set(), session)


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
    "write_dag_to_db",
]
