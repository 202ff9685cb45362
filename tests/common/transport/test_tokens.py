"""Access tokens (common/transport/tokens.py): cached per credential (the secret included), fetched
once for many callers, refused credentials saying what to fix, a short-lived token not fetched
again before every call. The three platforms' emulators, and the fake platform."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import AuthenticationError
from airflow_provider_querytasks.common.transport.clients import close_shared_client_session, token_cache
from airflow_provider_querytasks.common.transport.tokens import AccessToken
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
from airflow_provider_querytasks.testing.server import EmulatorServer
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from ...helpers import FAST_RETRY, use_connection, with_secret
from ..fake_platform import FakeEmulator, FakeHook

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


# -- through the fake platform -------------------------------------------------------------------
def test_bad_credentials_fail_clearly(emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, {**emulator.connection(), "password": "wrong"})
    with pytest.raises(AuthenticationError, match="invalid_client"):
        FakeHook(retry=FAST_RETRY).create_query("select 1")


async def test_many_waiters_share_one_token_request(emulator: FakeEmulator) -> None:
    query_id = FakeHook(retry=FAST_RETRY).create_query("select 1")
    token_cache.clear()
    emulator.clear()
    hooks = [FakeHook(retry=FAST_RETRY) for _ in range(30)]
    try:
        snapshots = await asyncio.gather(*(h.aget_status(query_id) for h in hooks))
    finally:
        await close_shared_client_session()
    assert {s.query_id for s in snapshots} == {query_id}
    assert len(emulator.requests_to("token")) == 1


def test_many_threads_share_one_token_request(emulator: FakeEmulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    query_id = FakeHook(retry=FAST_RETRY).create_query("select 1")
    token_cache.clear()
    emulator.clear()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: FakeHook(retry=FAST_RETRY).get_status(query_id), range(16)))
    assert len(emulator.requests_to("token")) == 1


def test_the_cache_registers_each_new_token_and_its_refresh_token_with_the_masker() -> None:
    from airflow_provider_querytasks.common.transport.tokens import TokenCache, TokenSource

    class Source(TokenSource):
        def __init__(self) -> None:
            super().__init__(("https://token.example.test", "client"))
            self.issued = 0

        def obtain(self, fetch: Any, rejected: Any = ()) -> AccessToken:
            self.issued += 1
            return AccessToken(f"access-{self.issued}", time.time() + 3600, f"refresh-{self.issued}")

    masked: list[str] = []
    cache, source = TokenCache(mask=masked.append), Source()
    first = cache.get(source, fetch=None)  # type: ignore[arg-type]
    assert cache.get(source, fetch=None) is first  # type: ignore[arg-type]
    cache.invalidate(source, first)
    cache.get(source, fetch=None)  # type: ignore[arg-type]
    assert masked == ["access-1", "refresh-1", "access-2", "refresh-2"]
