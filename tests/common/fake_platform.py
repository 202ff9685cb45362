"""A small fake platform that exercises the shared core end to end.

It has what the three real platforms have between them: an OAuth token service with expiring
tokens, a create call that is not idempotent, a status call with a rate limit, a cancel call,
and results on a presigned object-storage host that must never see the API token.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from airflow_provider_querytasks.common.api.calls import (
    ApiRequest,
    ApiResponse,
    PlatformApi,
    first_error_text,
)
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.api.validation import validate_base_url
from airflow_provider_querytasks.common.transport.tokens import TokenSource
from airflow_provider_querytasks.compat import Connection, Context
from airflow_provider_querytasks.connection_forms import ConnectionForm, ExtraField
from airflow_provider_querytasks.hooks.base import QueryTaskHook
from airflow_provider_querytasks.operators.base import QueryTaskOperator
from airflow_provider_querytasks.sensors.base import QueryTaskSensor
from airflow_provider_querytasks.testing.server import EmulatorServer, json_response
from airflow_provider_querytasks.testing.storage import ObjectStorageSite
from airflow_provider_querytasks.triggers.base import QueryTaskTrigger

from ..helpers import FAST_RETRY

# -- emulator -------------------------------------------------------------------------------


@dataclass
class FakeQuery:
    id: str
    sql: str
    created: float
    duration: float
    outcome: str
    cancelled: bool = False


class FakeEmulator(EmulatorServer):
    """Sites: ``api`` (queries), ``token`` (OAuth) and ``storage`` (presigned results)."""

    name = "fake"
    storage: ObjectStorageSite

    def __init__(self, *, duration: float = 0.3, outcome: str = "DONE", token_ttl: int = 3600) -> None:
        super().__init__()
        self.duration = duration
        self.outcome = outcome
        self.token_ttl = token_ttl
        self.queries: dict[str, FakeQuery] = {}
        self.tokens: set[str] = set()
        self.storage = ObjectStorageSite(forbidden_headers=("Authorization",))
        self._ids = itertools.count(1)

    def build_sites(self) -> dict[str, web.Application]:
        api = web.Application()
        api.router.add_post("/queries", self._create)
        api.router.add_get("/queries/{id}", self._get)
        api.router.add_delete("/queries/{id}", self._cancel)
        api.router.add_get("/queries/{id}/result", self._result)
        token = web.Application()
        token.router.add_post("/token", self._token)
        return {"api": api, "token": token, "storage": self.storage.app()}

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def connection(self, conn_id: str | None = None) -> dict[str, Any]:
        return {
            "conn_id": conn_id or "fake_default",
            "conn_type": "fake",
            "login": "client-id",
            "password": "s3cr3t-client-secret",
            "extra": {"endpoint": self.urls["api"], "token_url": self.urls["token"] + "/token"},
        }

    def state_of(self, query: FakeQuery) -> str:
        if query.cancelled:
            return "CANCELLED"
        return query.outcome if self.clock.now() - query.created >= query.duration else "RUNNING"

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.tokens

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_secret") != "s3cr3t-client-secret"
        ):
            return json_response({"error": "invalid_client"}, status=401)
        value = f"tok-{next(self._ids)}-{time.time_ns()}"
        self.tokens.add(value)
        return json_response({"access_token": value, "expires_in": self.token_ttl})

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"message": "token expired"}, status=401)
        body = await request.json()
        query = FakeQuery(f"q{next(self._ids)}", body["sql"], self.clock.now(), self.duration, self.outcome)
        self.queries[query.id] = query
        return json_response({"id": query.id}, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"message": "token expired"}, status=401)
        query = self.queries.get(request.match_info["id"])
        if query is None:
            return json_response({"message": "no such query"}, status=404)
        state = self.state_of(query)
        body: dict[str, Any] = {"id": query.id, "state": state}
        if state == "FAILED":
            body["error"] = "Table users_2 does not exist"
        return json_response(body)

    async def _cancel(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"message": "token expired"}, status=401)
        query = self.queries.get(request.match_info["id"])
        if query is None:
            return json_response({"message": "no such query"}, status=404)
        if self.state_of(query) != "RUNNING":
            return json_response({"message": "already finished"}, status=409)
        query.cancelled = True
        return json_response(None, status=204)

    async def _result(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"message": "token expired"}, status=401)
        key = f"{request.match_info['id']}.csv"
        if key not in self.storage.objects:
            self.storage.put(key, b"id,name\n1,a\n2,b\n3,c\n", content_type="text/csv", gzip=True)
        return json_response({"url": self.storage.presign(key)})


# -- protocol -------------------------------------------------------------------------------


class FakeApi(PlatformApi):
    platform = "fake"
    request_id_header = "x-request-id"
    rate_limits = {"getQuery": (50.0, 10.0)}

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def error_message(self, response: ApiResponse) -> str:
        try:
            return first_error_text(response.json()) or response.text_excerpt()
        except Exception:
            return response.text_excerpt()


STATES = {
    "RUNNING": QueryState.RUNNING,
    "DONE": QueryState.SUCCEEDED,
    "FAILED": QueryState.FAILED,
    "CANCELLED": QueryState.CANCELLED,
}


def create_request(sql: str) -> ApiRequest:
    return ApiRequest("POST", "/queries", "createQuery", json={"sql": sql}, idempotent=False)


def get_request(query_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/queries/{query_id}", "getQuery")


def cancel_request(query_id: str) -> ApiRequest:
    return ApiRequest("DELETE", f"/queries/{query_id}", "cancelQuery", ok_statuses=(409,))


def parse_status(response: ApiResponse) -> StatusSnapshot:
    body = response.json_object()
    return StatusSnapshot(
        body["id"], STATES[body["state"]], body["state"], raw=body, message=body.get("error")
    )


@dataclass(frozen=True)
class FakeSettings:
    endpoint: str
    token_url: str
    client_id: str
    client_secret: str


class FakeTokenSource(TokenSource):
    def __init__(self, settings: FakeSettings) -> None:
        super().__init__((settings.token_url, settings.client_id, settings.client_secret))
        self.settings = settings

    def token_request(self) -> ApiRequest:
        data = {
            "grant_type": "client_credentials",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
        }
        return ApiRequest("POST", self.settings.token_url, "token", data=data, authenticated=False)


FAKE_FORM = ConnectionForm(
    connection_type="fake",
    hook_class_name="tests.common.fake_platform.FakeHook",
    hook_name="Fake",
    hidden_fields=(),
    relabeling={},
    placeholders={},
    extras=(ExtraField("endpoint", "Endpoint", "Base URL"), ExtraField("token_url", "Token URL", "")),
)


class FakeHook(QueryTaskHook):
    default_conn_name = "fake_default"
    conn_type = "fake"
    hook_name = "Fake"
    form = FAKE_FORM

    def build_settings(self, conn: Connection, extra: dict[str, Any]) -> FakeSettings:
        return FakeSettings(
            endpoint=validate_base_url(self.extra_value(extra, "endpoint"), "endpoint"),
            token_url=validate_base_url(self.extra_value(extra, "token_url"), "token_url"),
            client_id=conn.login or "",
            client_secret=conn.password or "",
        )

    def build_api(self, settings: FakeSettings) -> PlatformApi:
        return FakeApi(settings.endpoint, settings.client_id)

    def build_token_source(self, settings: FakeSettings) -> TokenSource:
        return FakeTokenSource(settings)

    def check_connection(self) -> str:
        self.call(get_request("none"))
        return "ok"

    def create_query(self, sql: str) -> str:
        return str(self.call(create_request(sql)).json_object()["id"])

    def get_status(self, query_id: str) -> StatusSnapshot:
        return parse_status(self.call(get_request(query_id)))

    async def aget_status(self, query_id: str) -> StatusSnapshot:
        return parse_status(await self.acall(get_request(query_id)))

    def cancel_query(self, query_id: str) -> None:
        self.call(cancel_request(query_id))

    async def acancel_query(self, query_id: str) -> None:
        await self.acall(cancel_request(query_id))

    def result_url(self, query_id: str) -> str:
        return str(
            self.call(ApiRequest("GET", f"/queries/{query_id}/result", "getResult")).json_object()["url"]
        )


class FakeTrigger(QueryTaskTrigger):
    hook_class = FakeHook


class FakeQueryOperator(QueryTaskOperator):
    hook_class = FakeHook
    trigger_class = FakeTrigger
    template_fields = ("conn_id", "sql")

    def __init__(self, *, sql: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sql = sql

    def validate_inputs(self) -> None:
        from airflow_provider_querytasks.common.api.errors import InvalidInputError

        if not self.sql.strip():
            raise InvalidInputError("sql", "must be a non-empty SQL statement")

    def submit(self, context: Context) -> str:
        return self.hook.create_query(self.sql)  # type: ignore[attr-defined,no-any-return]

    def on_query_finished(self, context: Context, snapshot: StatusSnapshot) -> Any:
        return {"query_id": snapshot.query_id, "state": snapshot.remote_status}


class FakeQuerySensor(QueryTaskSensor):
    hook_class = FakeHook
    trigger_class = FakeTrigger


# The fixtures by which the tests of the shared machinery (tests/{common,hooks,operators,sensors,
# triggers}) reach the fake platform; each of those folders' conftest.py imports them.
@pytest.fixture
def emulator(fake_emulator: FakeEmulator) -> FakeEmulator:
    """The fake platform's emulator (``tests/conftest.py``), serving for this test."""
    return fake_emulator


@pytest.fixture
def hook(emulator: FakeEmulator) -> FakeHook:
    """A :class:`FakeHook` on the serving emulator, retrying fast."""
    return FakeHook(retry=FAST_RETRY)
