"""The state of a chain of queries run by one task: Shoplazza windows, Data Kiosk pages.

A chain is a sequence of remote queries, each submitted once the previous one finished. Its
state lives inside the operator's ``resume_state`` (plain JSON), so it travels with the deferral
to the triggerer and back, and into Airflow 3.3's ``task_state_store`` for a retry.
"""

from __future__ import annotations

from typing import Any

#: Key of the chain's state in the operator's ``resume_state``.
CHAIN_KEY = "chain"


class QueryChain:
    """A view over ``resume_state["chain"]``: the records of the queries that finished, and the
    query being waited for with what it was submitted for (a window, a page token...).

    :param resume_state: the operator's ``resume_state``; the chain's state is created in it
        when missing, and every change is made in it.
    """

    def __init__(self, resume_state: dict[str, Any]) -> None:
        state = resume_state.get(CHAIN_KEY)
        if not isinstance(state, dict):
            state = resume_state[CHAIN_KEY] = {"records": [], "current": None}
        self._state = state

    @property
    def records(self) -> list[dict[str, Any]]:
        """One record per finished query, in order (what the task's XCom lists)."""
        records: list[dict[str, Any]] = self._state["records"]
        return records

    def add_record(self, record: dict[str, Any]) -> int:
        """Append a finished query's record; return how many queries have finished."""
        self.records.append(record)
        return len(self.records)

    def submitted(self, query_id: str, **step: Any) -> None:
        """Note the query just submitted and what it is for (JSON-able values)."""
        self._state["current"] = {"query_id": query_id, **step}

    def step_of(self, query_id: str) -> dict[str, Any]:
        """What ``query_id`` was submitted for, when it is the current query (else ``{}``)."""
        current = self._state.get("current") or {}
        if current.get("query_id") != query_id:
            return {}
        return {key: value for key, value in current.items() if key != "query_id"}
