"""Property-based bad input: any value ends valid or in InvalidInputError naming the parameter.

Validation runs before any request: input refused sends none to the emulators (running). Input
accepted may send exactly the one call validation is documented to make (Shoplazza reads the
shop's time zone once every parameter is checked). No other exception type may escape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.operators.adobe_query_service import AdobeQueryOperator
from airflow_provider_querytasks.operators.amazon_data_kiosk import DataKioskQueryOperator
from airflow_provider_querytasks.operators.shoplazza import ShoplazzaDataTaskOperator
from airflow_provider_querytasks.protocols.adobe_query_service import AdobeSettings
from airflow_provider_querytasks.protocols.amazon_data_kiosk import DataKioskSettings
from airflow_provider_querytasks.protocols.shoplazza import EVENTS, ShoplazzaSettings
from airflow_provider_querytasks.testing import EmulatorServer, emulator_class

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one

EXAMPLES = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\x00", "prod", "prod:all", "UTC", "../x"]))
values = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), texts, st.lists(st.integers(), max_size=2)
)
times = st.one_of(
    values,
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.dates(),
    st.sampled_from(["2026-11-20", "2026-11-20T00:00:00", "2026-11-21T00:00:00+08:00", "2026-13-01"]),
)


@pytest.fixture(scope="module")
def quiet_emulators() -> Iterator[list[EmulatorServer]]:
    servers = [emulator_class(name)().start() for name in ("shoplazza", "data_kiosk", "adobe")]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _connections(quiet_emulators: list[EmulatorServer], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from ..helpers import use_connection

    for server in quiet_emulators:
        use_connection(monkeypatch, server.connection())
    _SERVERS[:] = quiet_emulators
    yield
    _SERVERS.clear()


_SERVERS: list[EmulatorServer] = []
# What accepted input may send during validation: nothing else, and nothing for refused input.
VALIDATION_CALLS = {("GET", "/openapi/2022-01/shop")}


def check(validate: Any, allowed: set[str]) -> None:
    """Valid, or an InvalidInputError naming one of ``allowed`` (any other exception escapes)."""
    for server in _SERVERS:
        server.clear()
    refused: InvalidInputError | None = None
    try:
        validate()
    except InvalidInputError as error:
        refused = error
    sent = [(r.method, r.path) for server in _SERVERS for r in server.requests_to()]
    if refused is not None:
        assert refused.parameter in allowed, (refused.parameter, allowed)
        assert refused.parameter in str(refused)
        assert sent == [], f"refused input still sent {sent}"
        return
    assert set(sent) <= VALIDATION_CALLS and len(sent) <= 1, f"validation sent {sent}"


@pytest.mark.scenario("bad input, 1000 examples", "shoplazza")
@EXAMPLES
@given(
    event=st.one_of(st.sampled_from(EVENTS), texts),
    begin=times,
    end=times,
    timezone=st.one_of(texts, st.just("Asia/Shanghai")),
    destination=st.one_of(st.none(), texts),
    wait=st.booleans(),
)
def test_shoplazza_operator(
    event: Any, begin: Any, end: Any, timezone: Any, destination: Any, wait: bool
) -> None:
    op = ShoplazzaDataTaskOperator(
        task_id="t",
        event=event,
        begin_time=begin,
        end_time=end,
        timezone=timezone,
        destination=destination,
        wait_for_completion=wait,
    )
    check(op.validate_inputs, {"event", "begin_time", "end_time", "timezone", "destination"})


@pytest.mark.scenario("bad input, 1000 examples", "data_kiosk")
@EXAMPLES
@given(
    query=st.one_of(texts, st.just("query { analytics_salesAndTraffic_2024_04_24 { x } }")),
    destination=st.one_of(st.none(), texts),
)
def test_data_kiosk_operator(query: Any, destination: Any) -> None:
    op = DataKioskQueryOperator(task_id="t", query=query, destination=destination)
    check(op.validate_inputs, {"query", "destination"})


@pytest.mark.scenario("bad input, 1000 examples", "adobe")
@EXAMPLES
@given(
    sql=st.one_of(st.none(), texts),
    template_id=st.one_of(st.none(), texts),
    db_name=st.one_of(st.none(), texts),
    parameters=st.one_of(st.none(), st.dictionaries(texts, values, max_size=2)),
    ctas=st.one_of(st.none(), st.dictionaries(st.sampled_from(["datasetName", "x"]), texts, max_size=2)),
)
def test_adobe_operator(sql: Any, template_id: Any, db_name: Any, parameters: Any, ctas: Any) -> None:
    op = AdobeQueryOperator(
        task_id="t",
        sql=sql,
        template_id=template_id,
        db_name=db_name,
        query_parameters=parameters,
        ctas_parameters=ctas,
    )
    check(
        op.validate_inputs,
        {"sql", "db_name", "query_parameters", "ctas_parameters", "insert_into_parameters"},
    )


@pytest.mark.scenario("bad connection fields, 1000 examples", "all")
@EXAMPLES
@given(
    host=texts,
    token=st.one_of(st.none(), texts),
    endpoint=st.one_of(st.none(), texts),
    region=st.one_of(st.none(), texts),
    org=st.one_of(st.none(), texts),
    sandbox=st.one_of(st.none(), texts),
)
def test_connection_fields(host: Any, token: Any, endpoint: Any, region: Any, org: Any, sandbox: Any) -> None:
    check(
        lambda: ShoplazzaSettings.build(shop=host, access_token=token, endpoint=endpoint),
        {"host", "password", "endpoint", "api_version", "refresh_token"},
    )
    check(
        lambda: DataKioskSettings.build(
            client_id=token, client_secret="s", refresh_token="r", region=region, endpoint=endpoint
        ),
        {"login", "password", "refresh_token", "region", "sandbox", "endpoint", "lwa_endpoint"},
    )
    check(
        lambda: AdobeSettings.build(
            client_id="c", client_secret=token, org_id=org, sandbox=sandbox, endpoint=endpoint
        ),
        {"login", "password", "org_id", "sandbox", "scopes", "endpoint", "ims_endpoint"},
    )
