"""The emulators carry the platforms' facts as published; the clients carry their own copy.

Neither side imports the other's (``tests/test_layering.py``), so a wrong path, rate limit,
length limit or event name in the client or in an emulator fails here instead of passing
silently against an emulator that agrees with the client by construction.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from airflow_provider_querytasks.protocols import adobe_query_service as adobe_client
from airflow_provider_querytasks.protocols import amazon_data_kiosk as data_kiosk_client
from airflow_provider_querytasks.protocols import shoplazza as shoplazza_client
from airflow_provider_querytasks.testing import adobe_query_service as adobe_emulator
from airflow_provider_querytasks.testing import amazon_data_kiosk as data_kiosk_emulator
from airflow_provider_querytasks.testing import pgwire as adobe_sql_emulator
from airflow_provider_querytasks.testing import shoplazza as shoplazza_emulator

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one


def test_data_kiosk_paths_and_notification_type() -> None:
    assert data_kiosk_client.API_PATH == data_kiosk_emulator.API_PATH
    assert data_kiosk_client.NOTIFICATION_TYPE == data_kiosk_emulator.NOTIFICATION_TYPE


def as_floats(plans: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    return {name: (float(rate), float(burst)) for name, (rate, burst) in plans.items()}


def test_data_kiosk_usage_plans() -> None:
    assert as_floats(data_kiosk_client.RATE_LIMITS) == as_floats(data_kiosk_emulator.USAGE_PLANS)
    assert data_kiosk_client.DataKioskApi.rate_limits == data_kiosk_client.RATE_LIMITS


def test_data_kiosk_get_queries_parameters() -> None:
    # From the model's getQueries parameters: processingStatuses (items: the Query status enum,
    # minItems 1), pageSize (minimum 1, maximum 100, default 10), createdSince ("The default is
    # 90 days ago").
    spec_statuses = {"CANCELLED", "DONE", "FATAL", "IN_PROGRESS", "IN_QUEUE"}
    assert set(data_kiosk_emulator.PROCESSING_STATUSES) == spec_statuses
    assert set(data_kiosk_client.STATUSES) == spec_statuses
    assert set(data_kiosk_client.PROCESSING_STATUS_TO_QUERY_STATE) == spec_statuses
    assert data_kiosk_emulator.PAGE_SIZE_BOUNDS == (1, 100)
    assert data_kiosk_client.MAX_PAGE_SIZE == 100
    assert data_kiosk_emulator.DEFAULT_PAGE_SIZE == 10
    assert data_kiosk_emulator.DEFAULT_CREATED_SINCE_AGE == 90 * 86400
    # getQueries' own usage plan (0.0222 rps, burst 10), apart from getQuery's (2 rps, burst 15).
    assert as_floats(data_kiosk_emulator.USAGE_PLANS)["getQueries"] == (0.0222, 10.0)
    assert as_floats(data_kiosk_emulator.USAGE_PLANS)["getQuery"] == (2.0, 15.0)


@pytest.mark.parametrize(
    "query",
    [
        "query { a }",
        "  query {\n\ta   b }\n",
        "query {" + " " * 9000 + "a }",
        "query\r\n{\u00a0a\u2003}",
    ],
)
def test_data_kiosk_query_length_is_counted_alike(query: str) -> None:
    assert data_kiosk_client.MAX_QUERY_LENGTH == data_kiosk_emulator.MAX_QUERY_CHARACTERS
    # The client counts a lower bound (every character GraphQL ignores removed); the emulator the
    # least convenient reading (runs of whitespace as one space, comments kept).
    assert len(data_kiosk_client.compact_query(query)) <= data_kiosk_emulator.counted_query_length(query)


def test_shoplazza_events_time_format_and_rate_limit() -> None:
    assert shoplazza_client.EVENTS == shoplazza_emulator.EVENTS
    assert shoplazza_client.TIME_FORMAT == shoplazza_emulator.TIME_FORMAT
    assert shoplazza_client.ShoplazzaApi.shared_rate_limit == (
        shoplazza_emulator.RATE_PER_SECOND,
        shoplazza_emulator.RATE_CAPACITY,
    )


def test_adobe_service_paths() -> None:
    assert adobe_client.QUERY == adobe_emulator.QUERY
    assert adobe_client.CATALOG == adobe_emulator.CATALOG
    assert adobe_client.EXPORT == adobe_emulator.EXPORT


def test_adobe_sql_interface_limits() -> None:
    # Section 5.2: 50,000 rows by default, a LIMIT over 100,000 and a statement over 10 minutes
    # end in 53400.
    assert adobe_client.SQL_ROW_CAP == adobe_sql_emulator.SQL_ROW_CAP == 50_000
    assert adobe_client.SQL_MAX_LIMIT == adobe_sql_emulator.SQL_MAX_LIMIT == 100_000
    assert adobe_client.SQL_STATEMENT_TIMEOUT == adobe_sql_emulator.SQL_STATEMENT_TIMEOUT == 600.0
    assert adobe_client.SQL_LIMIT_SQLSTATE == adobe_sql_emulator.SQL_LIMIT_SQLSTATE == "53400"
