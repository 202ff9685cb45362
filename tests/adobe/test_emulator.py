"""The Adobe Query Service emulator itself: what it refuses, as the platform does."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one


@pytest.mark.contract_exempt  # sends requests without a required header on purpose
@pytest.mark.parametrize(
    ("drop", "status", "code"),
    [("Authorization", 403, "403010"), ("x-api-key", 403, "403000"), ("x-gw-ims-org-id", 400, "400003")],
)
def test_the_emulator_rejects_a_missing_header(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator, drop: str, status: int, code: str
) -> None:
    hook.create_query(sql="SELECT 1")
    sent = emulator.requests_to("api", "POST")[0]
    names = ("Authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name")
    headers = {name: str(sent.header(name)) for name in names if name != drop}
    answer = requests.get(f"{emulator.urls['api']}/data/foundation/query/queries", headers=headers, timeout=5)
    assert answer.status_code == status and answer.json()["error_code"] == code
