"""Input validation shared by the protocols (common/api/validation.py): ids, URL path segments,
loopback hosts, base URLs. A wrong value is refused naming its parameter; a right one passes."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.common.api.validation import (
    is_loopback_host,
    path_segment,
    required_id,
    validate_base_url,
)

from ...helpers import use_connection
from ..fake_platform import FakeEmulator, FakeHook

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one


def refused(check: Any, value: Any, parameter: str) -> str:
    """Run ``check(value, parameter)``, expecting it to refuse; return its message."""
    with pytest.raises(InvalidInputError) as raised:
        check(value, parameter)
    assert raised.value.parameter == parameter
    message = str(raised.value)
    assert message.startswith(f"Invalid {parameter!r}: ")
    return message


# -- required_id ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "   ", "\t\n", None, 42, ["q1"], b"q1"], ids=repr)
def test_required_id_refuses_what_is_not_a_non_empty_string(value: Any) -> None:
    message = refused(required_id, value, "query_id")
    assert f"must be a non-empty id, got {value!r}" in message


def test_required_id_names_what_the_id_is() -> None:
    with pytest.raises(InvalidInputError, match="must be a non-empty document id") as raised:
        required_id(" ", "document_id", what="document id")
    assert raised.value.parameter == "document_id"


@pytest.mark.parametrize(("value", "expected"), [("q1", "q1"), ("  q-1 \n", "q-1"), ("a b", "a b")])
def test_required_id_returns_the_id_stripped(value: str, expected: str) -> None:
    assert required_id(value, "query_id") == expected


# -- path_segment -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "  ", None, 7], ids=repr)
def test_path_segment_refuses_what_required_id_refuses(value: Any) -> None:
    refused(path_segment, value, "task_id")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("54517018502", "54517018502"),
        (" q1 ", "q1"),
        ("../admin", "..%2Fadmin"),  # one segment: a slash cannot climb the URL's path
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
        ("a b%", "a%20b%25"),
    ],
)
def test_path_segment_is_one_escaped_segment(value: str, expected: str) -> None:
    assert path_segment(value, "task_id") == expected


# -- is_loopback_host -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "localhost.localdomain", "127.0.0.1", "127.8.9.10", "::1", "[::1]"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host) is True


@pytest.mark.parametrize(
    "host",
    [None, "", "example.com", "localhost.example.com", "10.0.0.1", "128.0.0.1", "::2", "0.0.0.0", "[::]"],
    ids=repr,
)
def test_other_hosts_are_not_loopback(host: str | None) -> None:
    assert is_loopback_host(host) is False


# -- validate_base_url ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "must be a non-empty URL"),
        ("   ", "must be a non-empty URL"),
        (None, "must be a non-empty URL"),
        ("ftp://api.example.com", "is not an http(s) URL"),
        ("api.example.com", "is not an http(s) URL"),
        ("https://", "is not an http(s) URL"),
        ("http://api.example.com", "https is required"),
        ("http://10.0.0.5:8080", "https is required"),
        ("https://user:pw@api.example.com", "must not embed credentials"),
        ("https://api.example.com/v1?key=1", "must not carry a query string or fragment"),
        ("https://api.example.com/v1#top", "must not carry a query string or fragment"),
    ],
)
def test_a_bad_base_url_is_refused_naming_its_parameter(url: Any, reason: str) -> None:
    assert reason in refused(validate_base_url, url, "endpoint")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com", "https://api.example.com"),
        ("  https://api.example.com/v1/ ", "https://api.example.com/v1"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://localhost:5000/api", "http://localhost:5000/api"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_a_good_base_url_passes_without_its_trailing_slash(url: str, expected: str) -> None:
    assert validate_base_url(url, "endpoint") == expected


# -- through a hook: the connection's endpoint ----------------------------------------------------
def test_plain_http_to_a_remote_host_is_refused(
    emulator: FakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = emulator.connection()
    conn["extra"]["endpoint"] = "http://api.example.com"
    use_connection(monkeypatch, conn)
    with pytest.raises(InvalidInputError, match="endpoint.*https is required"):
        FakeHook().create_query("select 1")
    assert emulator.requests == []
