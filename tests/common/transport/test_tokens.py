"""Tokens are cached per credential (the secret included), refused credentials say what to fix,
and a short-lived token is not fetched again before every call. The three platforms' emulators."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import AuthenticationError
from airflow_provider_querytasks.common.transport.tokens import AccessToken
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.server import EmulatorServer
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from ...helpers import FAST_RETRY, use_connection

PLATFORMS = ["shoplazza", "data_kiosk", "adobe"]


def build(platform: str, **kwargs: Any) -> tuple[EmulatorServer, type[Any], dict[str, Any]]:
    """An emulator, its hook class and an OAuth connection to it."""
    if platform == "shoplazza":
        shop = ShoplazzaEmulator(**kwargs)
        return shop, ShoplazzaHook, {"conn": lambda: shop.connection("creds", oauth=True)}
    if platform == "data_kiosk":
        kiosk = DataKioskEmulator(**kwargs)
        return kiosk, DataKioskHook, {"conn": lambda: kiosk.connection("creds")}
    adobe = AdobeQueryServiceEmulator(**kwargs)
    return adobe, AdobeQueryServiceHook, {"conn": lambda: adobe.connection("creds")}


@pytest.fixture(params=PLATFORMS)
def platform(request: pytest.FixtureRequest) -> Iterator[tuple[EmulatorServer, type[Any], dict[str, Any]]]:
    emulator, hook_class, conn = build(request.param)
    emulator.start()
    yield emulator, hook_class, conn["conn"]()
    emulator.stop()


def with_secret(conn: dict[str, Any], secret: str) -> dict[str, Any]:
    """The same connection with another client secret (where each platform keeps it)."""
    conn = {**conn, "extra": dict(conn.get("extra") or {})}
    if "client_secret" in conn["extra"]:
        conn["extra"]["client_secret"] = secret
    else:
        conn["password"] = secret
    return conn


def token_calls(emulator: EmulatorServer) -> int:
    return sum(1 for r in emulator.requests if r.method == "POST" and "token" in r.path)


def test_a_wrong_secret_fails_its_test_where_the_right_one_has_a_cached_token(
    platform: tuple[EmulatorServer, type[Any], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, hook_class, conn = platform
    use_connection(monkeypatch, conn)
    hook = hook_class("creds", retry=FAST_RETRY)
    assert hook.test_connection()[0]  # this process now holds a good token for "creds"
    # The api-server's Test button, same conn id, secret mistyped.
    use_connection(monkeypatch, with_secret(conn, "mistyped-secret"))
    ok, message = hook_class("creds", retry=FAST_RETRY).test_connection()
    assert not ok and "invalid_client" in message
    assert "mistyped-secret" not in message
    # The same hook object tested again reads the connection again: fixed, it passes.
    use_connection(monkeypatch, conn)
    assert hook.test_connection()[0]


@pytest.mark.parametrize(
    ("platform_name", "field", "error", "fix"),
    [
        ("shoplazza", "client_secret", "invalid_client", "client_id and client_secret extras"),
        ("shoplazza", "refresh_token", "invalid_grant", "refresh_token extra of connection 'creds'"),
        ("data_kiosk", "password", "invalid_client", "client secret (password) of connection 'creds'"),
        ("data_kiosk", "refresh_token", "invalid_grant", "set the new refresh_token extra of connection"),
        ("adobe", "password", "invalid_client", "client secret (password) of connection 'creds'"),
    ],
)
def test_token_refusals_are_authentication_errors_saying_what_to_fix(
    platform_name: str, field: str, error: str, fix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, hook_class, conn = build(platform_name)
    emulator.start()
    try:
        connection = conn["conn"]()
        wrong = "wrong-value-0123456789"
        if field in connection["extra"]:
            connection["extra"][field] = wrong
        else:
            connection[field] = wrong
        use_connection(monkeypatch, connection)
        hook = hook_class("creds", retry=FAST_RETRY)
        with pytest.raises(AuthenticationError) as raised:
            hook.check_connection()
    finally:
        emulator.stop()
    message = str(raised.value)
    assert error in message and fix in message
    detail = raised.value.detail
    assert detail["error"] == error and detail["error_description"]  # the platform's own words
    assert detail["error_description"] in message
    assert wrong not in message and wrong not in repr(raised.value.__dict__)
    assert token_calls(emulator) == 1  # a refusal is not retried


@pytest.mark.parametrize("platform_name", PLATFORMS)
def test_a_token_living_under_the_margin_is_not_fetched_before_every_call(
    platform_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, hook_class, conn = build(platform_name, token_ttl=60.0)
    emulator.start()
    try:
        use_connection(monkeypatch, conn["conn"]())
        for _ in range(3):
            hook_class("creds", retry=FAST_RETRY).check_connection()
    finally:
        emulator.stop()
    assert token_calls(emulator) == 1


def test_the_refresh_margin_scales_with_the_lifetime() -> None:
    now = time.time()
    hour = AccessToken("a-token-value-1", expires_at=now + 3600, issued_at=now)
    minute = AccessToken("a-token-value-2", expires_at=now + 60, issued_at=now)
    assert hour.margin(300.0) == 300.0
    assert minute.margin(300.0) == pytest.approx(12.0)
    assert minute.fresh(300.0)
    assert not AccessToken("a-token-value-3", expires_at=now + 10, issued_at=now - 50).fresh(300.0)
    # Without an issue time (a platform that does not say), the plain margin applies.
    assert not AccessToken("a-token-value-4", expires_at=now + 60).fresh(300.0)


def test_a_refused_credential_drops_the_connection_read_shared_by_triggers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from airflow_provider_querytasks.common.transport.clients import close_shared_client_session
    from airflow_provider_querytasks.common.transport.process_state import process_state

    emulator = AdobeQueryServiceEmulator()
    emulator.start()
    try:
        use_connection(monkeypatch, with_secret(emulator.connection("creds"), "mistyped-secret"))

        async def poll() -> None:
            try:
                await AdobeQueryServiceHook("creds", retry=FAST_RETRY).aget_status("q-1")
            finally:
                await close_shared_client_session()

        with pytest.raises(AuthenticationError, match="invalid_client"):
            asyncio.run(poll())
    finally:
        emulator.stop()
    # The next trigger on this connection reads it again (it may have been fixed meanwhile)
    # instead of reusing the refused read for up to SHARED_SETTINGS_TTL.
    assert (AdobeQueryServiceHook, "creds") not in process_state.shared_settings
    assert not [key for key in process_state.shared_async_clients if key[1] == "creds"]
