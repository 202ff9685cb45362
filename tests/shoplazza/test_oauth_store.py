"""Shoplazza OAuth across processes: the rotated refresh token lives where every process reads it.

The emulator replaces the refresh token on every refresh and refuses the old one
(``invalid_grant``), as Shoplazza does. Each "process" here is a real separate OS process
(``tests/shoplazza/oauth_process.py``: forked from a server that only imported Airflow, so it
starts with nothing in memory) sharing the test session's metadata DB, as the workers and
triggerers of one deployment share theirs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import AuthenticationError
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session, token_cache
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_1_PLUS

from ..helpers import FAST_RETRY, use_connection
from .oauth_process import OAuthProcess

TOKEN_PATH = r"/admin/oauth/token$"


@pytest.fixture
def oauth(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ShoplazzaEmulator, str]]:
    """A rotating emulator and an OAuth connection of its own (a fresh store Variable)."""
    server = ShoplazzaEmulator(duration=0.3, rows=5)
    server.start()
    conn_id = f"shoplazza_oauth_{uuid.uuid4().hex[:8]}"
    use_connection(monkeypatch, server.connection(conn_id, oauth=True))
    yield server, conn_id
    server.stop()


def token_calls(emulator: ShoplazzaEmulator) -> list[tuple[str, int | None]]:
    """(refresh token sent, answer status) of every call to the token endpoint, in order."""
    calls: list[tuple[str, int | None]] = []
    for request in emulator.requests_to("api", "POST", TOKEN_PATH):
        sent = dict(item.split("=", 1) for item in request.body.decode().split("&"))["refresh_token"]
        calls.append((sent, request.status))
    return calls


def store_key(conn_id: str) -> str:
    return f"querytasks.shoplazza.oauth_token.{conn_id}"


def stored(conn_id: str) -> Any:
    """The connection's record in the shared store (imported here: the store is what is tested)."""
    from airflow_provider_querytasks.common.transport.token_store import AirflowVariableTokenStore
    from airflow_provider_querytasks.common.transport.tokens import SharedTokenStore

    record = SharedTokenStore(store_key(conn_id), "", AirflowVariableTokenStore()).read()
    assert record is not None
    return record


def test_three_processes_in_a_row_each_refresh_with_the_newest_refresh_token(
    oauth: tuple[ShoplazzaEmulator, str],
) -> None:
    emulator, conn_id = oauth
    for _ in range(3):
        emulator.expire_tokens()  # each process must refresh: its access token is gone
        assert OAuthProcess(conn_id).finish()["query_id"]
    calls = token_calls(emulator)
    # Three refreshes, each with the token the previous one issued, all accepted.
    assert [status for _, status in calls] == [200, 200, 200]
    assert [sent for sent, _ in calls] == [
        "shoplazza-emulator-refresh-0",
        "shoplazza-emulator-refresh-1",
        "shoplazza-emulator-refresh-2",
    ]
    assert stored(conn_id).refresh_token == "shoplazza-emulator-refresh-3"
    assert emulator.refresh_tokens == {"shoplazza-emulator-refresh-3"}


def test_new_processes_reuse_the_shared_access_token_without_refreshing(
    oauth: tuple[ShoplazzaEmulator, str],
) -> None:
    emulator, conn_id = oauth
    for _ in range(2):
        assert OAuthProcess(conn_id).finish()["query_id"]
    assert len(token_calls(emulator)) == 1
    assert len(emulator.requests_to("api", "GET", r"/data/query$")) == 2


def test_two_processes_refreshing_at_the_same_moment_both_succeed(
    oauth: tuple[ShoplazzaEmulator, str],
) -> None:
    emulator, conn_id = oauth
    # Token answers take 1.5 s: both processes send the same refresh token before either has
    # its answer, so one of them wins the rotation and the other is refused.
    emulator.inject(action="delay", site="api", path=TOKEN_PATH, times=None, seconds=1.5)
    processes = [OAuthProcess(conn_id, hold=True) for _ in range(2)]
    for process in processes:  # both have built their hook
        assert process.ready.wait(120)
    for process in processes:
        process.go()
    results = [process.finish() for process in processes]
    assert all(result["query_id"] for result in results)
    calls = token_calls(emulator)
    # The race happened (same token sent twice, one refused), and the loser went on with the
    # winner's tokens from the store instead of failing.
    assert sorted(calls, key=lambda call: call[1] or 0) == [
        ("shoplazza-emulator-refresh-0", 200),
        ("shoplazza-emulator-refresh-0", 400),
    ]
    assert stored(conn_id).refresh_token == "shoplazza-emulator-refresh-1"


def test_trigger_path_reads_and_writes_the_same_store(oauth: tuple[ShoplazzaEmulator, str]) -> None:
    emulator, conn_id = oauth
    query_id = OAuthProcess(conn_id).finish()["query_id"]  # a worker task: refresh-0 -> refresh-1
    emulator.expire_tokens()
    # A trigger (async hook methods) in a separate process: reads refresh-1 from the store,
    # refreshes, writes refresh-2.
    assert OAuthProcess(conn_id, poll=query_id).finish()["state"] in ("pending", "running", "succeeded")
    assert stored(conn_id).refresh_token == "shoplazza-emulator-refresh-2"
    # The same in this process's event loop, then a worker task again after it.
    emulator.expire_tokens()

    async def poll() -> None:
        try:
            await ShoplazzaHook(conn_id, retry=FAST_RETRY).aget_status(query_id)
        finally:
            await close_shared_client_session()

    asyncio.run(poll())
    assert stored(conn_id).refresh_token == "shoplazza-emulator-refresh-3"
    emulator.expire_tokens()
    token_cache.clear()
    assert OAuthProcess(conn_id).finish()["query_id"]
    assert [status for _, status in token_calls(emulator)] == [200, 200, 200, 200]


def test_the_stored_tokens_are_encrypted_and_masked(oauth: tuple[ShoplazzaEmulator, str]) -> None:
    from airflow.settings import Session
    from sqlalchemy import text

    from airflow_provider_querytasks.compat import redact

    _, conn_id = oauth
    OAuthProcess(conn_id).finish()
    key = store_key(conn_id)
    with Session() as session:  # type: ignore[misc]
        raw, encrypted = session.execute(
            text("select val, is_encrypted from variable where key = :key"), {"key": key}
        ).one()
    assert encrypted and "shoplazza-emulator-refresh-1" not in raw
    record = stored(conn_id)  # reading it registers both tokens with the secrets masker
    assert redact(f"{record.refresh_token} {record.access_token}") == "*** ***"
    assert "refresh-1" not in repr(record)


def test_a_connection_given_a_new_refresh_token_starts_over_from_it(
    oauth: tuple[ShoplazzaEmulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, conn_id = oauth
    OAuthProcess(conn_id).finish()
    # The app is authorised again: a new refresh token goes into the connection.
    emulator.refresh_tokens.add("reauthorised-refresh-token")
    conn = emulator.connection(conn_id, oauth=True)
    conn["extra"]["refresh_token"] = "reauthorised-refresh-token"
    use_connection(monkeypatch, conn)
    emulator.expire_tokens()
    OAuthProcess(conn_id).finish()
    assert token_calls(emulator)[-1] == ("reauthorised-refresh-token", 200)


def test_a_revoked_refresh_token_is_an_authentication_error_saying_what_to_fix(
    oauth: tuple[ShoplazzaEmulator, str],
) -> None:
    emulator, conn_id = oauth
    emulator.refresh_tokens.clear()  # the merchant uninstalled the app
    with pytest.raises(AuthenticationError) as raised:
        ShoplazzaHook(conn_id, retry=FAST_RETRY).count_tasks()
    message = str(raised.value)
    assert "invalid_grant" in message and "already used" in message  # error and error_description
    assert f"refresh_token extra of connection {conn_id!r}" in message
    assert emulator.client_secret not in message and "refresh-0" not in message


def test_store_not_active_in_oauth_mode_refreshes_once_and_retries(
    oauth: tuple[ShoplazzaEmulator, str],
) -> None:
    emulator, conn_id = oauth
    emulator.auth_failure_status = 400  # a refused token answers 400 {"error": "store is not active"}
    hook = ShoplazzaHook(conn_id, retry=FAST_RETRY)
    hook.count_tasks()
    emulator.expire_tokens()
    assert hook.count_tasks() == 0
    assert [status for _, status in token_calls(emulator)] == [200, 200]


def test_store_not_active_after_one_refresh_fails_saying_what_to_check(
    oauth: tuple[ShoplazzaEmulator, str],
) -> None:
    emulator, conn_id = oauth
    emulator.inject(
        action="status", site="api", path=r"/data/count$", times=None, status=400,
        body={"error": "store is not active"},
    )  # fmt: skip
    with pytest.raises(AuthenticationError, match="still installed on this shop") as raised:
        ShoplazzaHook(conn_id, retry=FAST_RETRY).count_tasks()
    assert "store is not active" in str(raised.value)
    # The first token, one refresh, and the call tried with each: no more.
    assert len(token_calls(emulator)) == 2
    assert len(emulator.requests_to("api", "GET", r"/data/count$")) == 2


def test_dag_test_task_and_trigger_use_the_shared_store(
    oauth: tuple[ShoplazzaEmulator, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import datetime as dt

    from airflow_provider_querytasks import compat
    from airflow_provider_querytasks.operators.shoplazza import ShoplazzaDataTaskOperator
    from airflow_provider_querytasks.testing.dags import run_dag

    if compat.AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import DAG
    else:
        from airflow import DAG

    emulator, conn_id = oauth
    channels: list[bool] = []
    from airflow_provider_querytasks.common.transport import token_store

    original = token_store.supervisor_comms

    def recording() -> Any:
        comms = original()
        channels.append(comms is not None)
        return comms

    monkeypatch.setattr(token_store, "supervisor_comms", recording)
    # The trigger's second poll finds the task's access token revoked: it must refresh with the
    # refresh token the task stored, and store the next one.
    emulator.inject(action="expire_token", site="api", path=r"/data/task$", times=1)
    with DAG(f"oauth_{conn_id}", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
        ShoplazzaDataTaskOperator(
            task_id="export", conn_id=conn_id, event="pageview", begin_time="2026-11-20T00:00:00",
            end_time="2026-11-21T00:00:00", deferrable=True, poll_interval=0.05,
        )  # fmt: skip
    run = run_dag(dag)
    channels_used = list(channels)
    assert str(run.state).rsplit(".", 1)[-1].lower() == "success"
    assert [status for _, status in token_calls(emulator)] == [200, 200]
    assert stored(conn_id).refresh_token == "shoplazza-emulator-refresh-2"
    # Airflow 3: task and trigger reached the store through the supervisor channel (no DB). 3.0's
    # dag.test() runs the trigger after the task's channel is gone: the trigger reads the DB.
    if compat.AIRFLOW_V_3_0_PLUS and not AIRFLOW_V_3_1_PLUS:
        assert channels_used[0] and not channels_used[-1]
        assert channels_used == sorted(channels_used, reverse=True)  # the task's calls, then the trigger's
    else:
        assert channels_used and all(channels_used) == compat.AIRFLOW_V_3_0_PLUS


@pytest.mark.skipif(
    not __import__("airflow_provider_querytasks.compat").compat.AIRFLOW_V_3_0_PLUS,
    reason="the triggerer's supervisor channel exists on Airflow 3",
)
def test_a_triggerer_reaches_the_store_through_its_supervisor(
    oauth: tuple[ShoplazzaEmulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The triggerer's trigger runner has no DB: Variables go over its async supervisor channel."""
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import (
        ErrorResponse,
        GetVariable,
        MaskSecret,
        PutVariable,
        VariableResult,
    )

    from airflow_provider_querytasks.common.transport.token_store import read_variable, write_variable

    class TriggerRunnerChannel:
        """What the triggerer's ``TriggerCommsDecoder`` offers (``asend``), over the real DB."""

        def __init__(self) -> None:
            self.sent: list[str] = []

        async def asend(self, msg: Any) -> Any:
            self.sent.append(type(msg).__name__)
            with monkeypatch.context() as outside:  # the supervisor's side reads the DB
                outside.delattr(task_runner, "SUPERVISOR_COMMS")
                if isinstance(msg, GetVariable):
                    value = read_variable(msg.key)
                    if value is None:
                        return ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND)
                    return VariableResult(key=msg.key, value=value)
                if isinstance(msg, PutVariable):
                    write_variable(msg.key, msg.value or "", msg.description or "")
            return None  # PutVariable and MaskSecret have no answer

        def send(self, msg: Any) -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a worker thread (sync_to_async), where the real channel works:
                if isinstance(msg, MaskSecret):  # Airflow 3.0's connection lookup masks through it
                    return None
                raise AssertionError(f"a sync {type(msg).__name__} from a trigger") from None
            raise AssertionError("a sync call from the event loop")

    emulator, conn_id = oauth
    query_id = OAuthProcess(conn_id).finish()["query_id"]  # a worker stored refresh-1
    emulator.expire_tokens()
    channel = TriggerRunnerChannel()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", channel, raising=False)

    async def poll() -> None:
        try:
            await ShoplazzaHook(conn_id, retry=FAST_RETRY).aget_status(query_id)
        finally:
            await close_shared_client_session()

    asyncio.run(poll())
    monkeypatch.delattr(task_runner, "SUPERVISOR_COMMS")
    # Read (the worker's access token, refused: revoked), read again, refresh, write.
    assert [name for name in channel.sent if "Variable" in name] == [
        "GetVariable",
        "GetVariable",
        "PutVariable",
    ]
    assert [sent for sent, _ in token_calls(emulator)][-1] == "shoplazza-emulator-refresh-1"
    assert stored(conn_id).refresh_token == "shoplazza-emulator-refresh-2"


def test_a_store_that_refuses_writes_is_warned_about_and_this_process_goes_on(
    oauth: tuple[ShoplazzaEmulator, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_querytasks.common.transport.token_store import AirflowVariableTokenStore
    from airflow_provider_querytasks.common.transport.tokens import TokenStoreError

    def refused(self: object, key: str, value: str, description: str) -> None:
        raise TokenStoreError(f"Variable {key!r}: PermissionError")

    emulator, conn_id = oauth
    monkeypatch.setattr(AirflowVariableTokenStore, "write", refused)
    ShoplazzaHook(conn_id, retry=FAST_RETRY).count_tasks()
    assert "Could not save the rotated OAuth tokens" in caplog.text
    assert "refresh-1" not in caplog.text
    # The next refresh in this process uses the token it could not publish, not a dead one.
    emulator.expire_tokens()
    ShoplazzaHook(conn_id, retry=FAST_RETRY).count_tasks()
    assert token_calls(emulator) == [
        ("shoplazza-emulator-refresh-0", 200),
        ("shoplazza-emulator-refresh-1", 200),
    ]
