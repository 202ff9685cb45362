"""Every example DAG with distinctive secrets: none may show up anywhere a user or a host can see."""

from __future__ import annotations

import datetime as dt
import json
import runpy
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import ApiError, InvalidInputError
from airflow_provider_querytasks.protocols.shoplazza import ShoplazzaSettings
from airflow_provider_querytasks.testing import EmulatorServer
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.dags import run_dag
from airflow_provider_querytasks.testing.postgres import LocalPostgres
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from ..helpers import use_connection

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.mark.scenario("no secret in logs, XCom, rendered fields or result hosts", "all")
def test_example_dags_leak_no_secret(
    airflow_db: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tag = uuid.uuid4().hex
    secrets = {
        "shoplazza token": f"shz-{tag}",
        "LWA secret": f"lwa-secret-{tag}",
        "LWA refresh token": f"Atzr|refresh-{tag}",
        "IMS secret": f"ims-secret-{tag}",
    }
    shoplazza = ShoplazzaEmulator(duration=0.3, access_token=secrets["shoplazza token"])
    data_kiosk = DataKioskEmulator(
        duration=0.3, client_secret=secrets["LWA secret"], refresh_token=secrets["LWA refresh token"]
    )
    adobe = AdobeQueryServiceEmulator(duration=0.3, client_secret=secrets["IMS secret"])
    emulators: list[EmulatorServer] = [shoplazza, data_kiosk, adobe]
    for emulator in emulators:
        emulator.start()
        use_connection(monkeypatch, emulator.connection())
    # The SQL example DAG: Query Service's PostgreSQL interface, whose password is the IMS token.
    postgres = LocalPostgres().start()
    adobe.attach_postgres(postgres)
    use_connection(monkeypatch, adobe.sql_connection())
    monkeypatch.setenv("AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("QUERYTASKS_EXAMPLE_POLL_SECONDS", "0.2")
    try:
        dag_ids = []
        for path in sorted(EXAMPLES.glob("example_*.py")):
            namespace = runpy.run_path(str(path), run_name=path.stem)
            for dag in [v for v in namespace.values() if type(v).__name__ == "DAG"]:
                run = run_dag(dag, logical_date=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc))
                assert str(run.state).rsplit(".", 1)[-1].lower() == "success", dag.dag_id
                dag_ids.append(dag.dag_id)
        assert len(dag_ids) >= 4
        # Access tokens the emulators issued are secrets too.
        issued = [*data_kiosk.tokens, *adobe.tokens]
        stored = _stored_task_data()
        seen = capsys.readouterr()
        places = {
            "logs": caplog.text + seen.out + seen.err,
            "XCom and rendered fields": stored,
            "result host requests": json.dumps(
                [
                    {"url": r.path, "query": r.query, "headers": r.headers}
                    for emulator in (shoplazza, data_kiosk)
                    for r in emulator.requests_to("storage")
                ]
            ),
        }
        assert stored and places["result host requests"] != "[]"
        for place, text in places.items():
            for name, value in [*secrets.items(), *(("access token", t) for t in issued)]:
                assert value not in text, f"the {name} appears in {place}"
        assert shoplazza.storage.leaks == [] and data_kiosk.storage.leaks == []
    finally:
        for emulator in emulators:
            emulator.stop()
        postgres.stop()


def _stored_task_data() -> str:
    """XCom values and rendered template fields, as stored in the metadata DB."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        rows = list(session.execute(text("SELECT value FROM xcom")))
        rows += list(session.execute(text("SELECT rendered_fields FROM rendered_task_instance_fields")))
    return "\n".join(str(row[0]) for row in rows)


@pytest.mark.scenario("token never sent to a foreign host", "shoplazza")
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("shop", "evil.example.com"),
        ("shop", "mystore.myshoplaza.com.evil.example"),
        ("endpoint", "http://10.0.0.5:8080"),
        ("endpoint", "http://evil.example.com"),
    ],
)
def test_foreign_hosts_are_refused(field: str, value: str) -> None:
    kwargs: dict[str, Any] = {"shop": "mystore", "access_token": "t" * 20, field: value}
    with pytest.raises(InvalidInputError):
        ShoplazzaSettings.build(**kwargs)


@pytest.mark.scenario("no secret in exception messages", "all")
def test_refused_credentials_do_not_echo_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
    from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
    from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook

    from ..helpers import FAST_RETRY

    tag = uuid.uuid4().hex
    cases: list[tuple[EmulatorServer, Any, dict[str, Any]]] = [
        (ShoplazzaEmulator(), ShoplazzaHook, {"password": f"wrong-token-{tag}"}),
        (DataKioskEmulator(), DataKioskHook, {"password": f"wrong-secret-{tag}"}),
        (AdobeQueryServiceEmulator(), AdobeQueryServiceHook, {"password": f"wrong-secret-{tag}"}),
    ]
    for emulator, hook_class, wrong in cases:
        emulator.start()
        try:
            conn = {**emulator.connection(), **wrong}
            use_connection(monkeypatch, conn)
            # Refused by the platform as a client error (not some other failure that would leave
            # the secret out by accident), naming the call, and without the secret.
            with pytest.raises(ApiError) as raised:
                hook_class(retry=FAST_RETRY).check_connection()
            error = raised.value
            assert (
                error.platform and error.operation and error.status is not None and 400 <= error.status < 500
            )
            assert tag not in str(error) and tag not in repr(error.__dict__)
        finally:
            emulator.stop()
