"""Input validation shared by the protocols: ids, URL path segments, base URLs."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_querytasks.common.api.errors import (
    InvalidInputError,
)


def required_id(value: Any, parameter: str, what: str = "id") -> str:
    """A non-empty id (query, task, document...), stripped.

    :raises InvalidInputError: naming ``parameter``.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(parameter, f"must be a non-empty {what}, got {value!r}")
    return value.strip()


def path_segment(value: Any, parameter: str) -> str:
    """A required id, escaped for use as one URL path segment."""
    return quote(required_id(value, parameter), safe="")


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine (127.0.0.0/8, ::1 or localhost)."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_base_url(url: str, parameter: str) -> str:
    """Check a base URL override (``endpoint``, ``lwa_endpoint``, ``ims_endpoint``).

    https is required; http only for loopback hosts, so a token is never sent in clear text to
    another machine. Returns the URL without a trailing slash.

    :raises InvalidInputError: naming ``parameter``.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(parameter, "must be a non-empty URL such as https://host")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInputError(parameter, f"{url!r} is not an http(s) URL; use https://host[/path]")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InvalidInputError(
            parameter,
            f"{url!r} uses plain http to a non-loopback host; https is required "
            "(http is accepted only for 127.0.0.1, ::1 and localhost)",
        )
    if parts.username or parts.password:
        raise InvalidInputError(parameter, "must not embed credentials in the URL")
    if parts.query or parts.fragment:
        raise InvalidInputError(parameter, "must not carry a query string or fragment")
    return url.strip().rstrip("/")
