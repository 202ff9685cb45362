"""Reliability suite: each test declares the (scenario, platform) cell of the summary table it fills.

``scripts/reliability`` runs this directory and prints the table; in the normal test run the
marker only labels the tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "QUERYTASKS_RELIABILITY_REPORT"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name, platform): the summary-table cell a test fills")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("scenario")
    path = os.environ.get(REPORT_ENV)
    if marker is None or not path or (report.when != "call" and report.passed):
        return
    name, platform = marker.args[:2]
    row = {"scenario": name, "platform": platform, "test": item.nodeid, "outcome": report.outcome}
    with Path(path).open("a") as out:
        out.write(json.dumps(row) + "\n")
