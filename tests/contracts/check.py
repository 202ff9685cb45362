"""Every exchange an emulator recorded, checked against its platform's published spec.

:func:`assert_contract` is called when a test's emulator fixture ends (``tests/helpers.py``
``serve``): each request the client sent and each answer the emulator gave, on a site that has a
spec, is checked (:mod:`.openapi`); so are the Data Kiosk notifications of the queries that
finished. A difference fails the test, unless it is a known discrepancy (:data:`KNOWN`), listed
with its reason and held by a strict xfail in ``test_contracts.py`` (so it flips when fixed).

Which operations were checked is kept for the session (:data:`CHECKED`): ``test_contracts.py``
asserts that every operation the hooks call was.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from airflow_provider_querytasks.testing.server import EmulatorServer, RecordedRequest

from .openapi import Spec, json_schema

#: Emulator name -> site -> the specs served there (each under its base path).
SPECS: dict[str, dict[str, list[Spec]]] = {}


def specs_of(platform: str) -> dict[str, list[Spec]]:
    """The specs of an emulator's sites (read once)."""
    if not SPECS:
        SPECS["adobe"] = {
            "api": [
                Spec("query-service.yaml", "/data/foundation/query"),
                Spec("catalog.yaml", "/data/foundation/catalog"),
                Spec("data-access.yaml", "/data/foundation/export"),
            ]
        }
        SPECS["data_kiosk"] = {"api": [Spec("dataKiosk_2023-11-15.json")]}
    return SPECS.get(platform, {})


NOTIFICATION_SCHEMA = "DataKioskQueryProcessingFinishedNotification.json"


@dataclass(frozen=True)
class Known:
    """A discrepancy between a spec and the emulator or client, not yet fixed.

    :param platform: the emulator's name.
    :param pattern: a regular expression searched in the problem's text.
    :param reason: what differs, and whose it is to fix.
    """

    platform: str
    pattern: str
    reason: str

    def matches(self, platform: str, problem: str) -> bool:
        return platform == self.platform and re.search(self.pattern, problem) is not None


#: Discrepancies another developer's work owns (the Data Kiosk client and emulator are being
#: changed elsewhere); each has a strict xfail in test_contracts.py.
KNOWN: tuple[Known, ...] = ()

#: (platform, operationId) -> how many exchanges of it were checked this session.
CHECKED: dict[tuple[str, str], int] = defaultdict(int)


def check_exchange(platform: str, exchange: RecordedRequest) -> tuple[str | None, list[str]]:
    """The operation id of one exchange and its problems (``None``: no spec for the site)."""
    for spec in specs_of(platform).get(exchange.site, []):
        if spec.serves(exchange.path):
            op, problems = spec.check(exchange)
            return (op.operation_id if op else f"?{exchange.method} {exchange.path}"), problems
    if exchange.site in specs_of(platform):
        return f"?{exchange.method} {exchange.path}", [
            f"{exchange.method} {exchange.path}: no spec of site {exchange.site!r} serves this path"
        ]
    return None, []


def notification_problems(server: Any) -> list[str]:
    """The Data Kiosk notifications of the emulator's finished queries, against their schema."""
    validator = json_schema(NOTIFICATION_SCHEMA)
    problems = []
    for query_id in list(getattr(server, "queries", {})):
        try:
            envelope = server.notification_for(query_id)
        except ValueError:  # not finished
            continue
        for error in validator.iter_errors(envelope):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            problems.append(f"notification of query {query_id}: {where}: {error.message[:300]}")
    return problems


def contract_problems(server: EmulatorServer) -> tuple[list[str], list[str]]:
    """(problems, known problems) of everything ``server`` recorded."""
    platform = server.name
    found: list[str] = []
    for exchange in server.requests_to():
        operation, problems = check_exchange(platform, exchange)
        if operation is None:
            continue
        if not problems and exchange.status:
            CHECKED[(platform, operation)] += 1
        found += problems
    if platform == "data_kiosk":
        found += notification_problems(server)
    unknown = [p for p in found if not any(k.matches(platform, p) for k in KNOWN)]
    known = [p for p in found if p not in unknown]
    return unknown, known


def assert_contract(server: EmulatorServer) -> None:
    """Fail when anything ``server`` recorded differs from its spec (known discrepancies aside)."""
    unknown, _ = contract_problems(server)
    if unknown:
        shown = "\n  ".join(dict.fromkeys(unknown))
        raise AssertionError(f"{server.name}: exchanges the published spec refuses:\n  {shown}")
