from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.operators.amazon_data_kiosk import DataKioskQueryOperator
from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator

from ..helpers import FAST_RETRY

QUERY = """
query salesByDate {
  analytics_salesAndTraffic_2024_04_24 {
    salesAndTrafficByDate(
      startDate: "2026-11-19"
      endDate: "2026-11-20"
      aggregateBy: DAY
      marketplaceIds: ["ATVPDKIKX0DER"]
    ) {
      startDate
      endDate
      sales { orderedProductSales { amount currencyCode } }
      traffic { pageViews sessions }
    }
  }
}
"""


@pytest.fixture
def emulator(data_kiosk_emulator: DataKioskEmulator) -> DataKioskEmulator:
    """The platform's emulator (``tests/conftest.py``), by the name this package's tests use."""
    return data_kiosk_emulator


@pytest.fixture
def hook(emulator: DataKioskEmulator) -> DataKioskHook:
    return DataKioskHook(retry=FAST_RETRY)


def operator(**kwargs: Any) -> DataKioskQueryOperator:
    kwargs.setdefault("query", QUERY)
    return DataKioskQueryOperator(task_id="query", poll_interval=0.05, **kwargs)
