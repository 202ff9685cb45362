"""Operator extra links to Adobe Experience Platform's Queries workspace.

On Airflow 3 a link is computed in the worker when the task finishes or defers (and stored in
XCom for the UI); on Airflow 2 the webserver computes it from the serialized task. Either way
the ids come from XCom first (what this try of the task really used), and the IMS org and
sandbox from the task's connection; a link that cannot be built is empty, never an error.
Shoplazza and Data Kiosk have no page per query or report, so they have no links.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_querytasks.compat import BaseOperatorLink, XCom
from airflow_provider_querytasks.protocols.adobe_query_service import ui_query_url, ui_schedule_url

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)


def _plain(value: Any) -> str | None:
    """``value`` as an id, unless it is missing or an unrendered template (Airflow 2's webserver)."""
    if value is None or not isinstance(value, str | int) or "{{" in str(value):
        return None
    return str(value).strip() or None


def _xcom(ti_key: TaskInstanceKey, key: str) -> Any:
    try:
        return XCom.get_value(ti_key=ti_key, key=key)
    except Exception:  # no XCom backend reachable: no link rather than a broken page
        log.debug("Could not read XCom %s for the extra link", key, exc_info=True)
        return None


def _workspace(operator: Any) -> tuple[str, str] | None:
    """``(org_id, sandbox)`` of the operator's ``adobe_experience_platform`` connection."""
    from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook

    try:
        settings = AdobeQueryServiceHook(
            _plain(getattr(operator, "conn_id", None)) or AdobeQueryServiceHook.default_conn_name
        ).settings
    except Exception:
        log.debug("No Adobe connection for the extra link", exc_info=True)
        return None
    db_name = _plain(getattr(operator, "db_name", None))
    return settings.org_id, (db_name.split(":", 1)[0] if db_name else settings.sandbox)


class AdobeQueryLink(BaseOperatorLink):
    """The query's page in Experience Platform (Queries > Log), from the task's ``query_id``.

    The id is the ``query_id`` XCom (pushed as soon as the query is submitted, so the link is
    there while the task waits), else the ``query_id`` of the task's result.
    """

    name = "Adobe Query"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        query_id = _plain(_xcom(ti_key, "query_id"))
        if query_id is None:
            result = _xcom(ti_key, "return_value")
            query_id = _plain(result.get("query_id")) if isinstance(result, dict) else None
        if query_id is None:
            query_id = _plain(getattr(operator, "query_id", None))
        workspace = _workspace(operator) if query_id else None
        return ui_query_url(*workspace, query_id) if workspace and query_id else ""


class AdobeScheduledQueryLink(BaseOperatorLink):
    """The scheduled query's page in Experience Platform (Queries > Scheduled Queries)."""

    name = "Adobe Scheduled Query"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        schedule_id = _plain(getattr(operator, "schedule_id", None))
        workspace = _workspace(operator) if schedule_id else None
        return ui_schedule_url(*workspace, schedule_id) if workspace and schedule_id else ""
