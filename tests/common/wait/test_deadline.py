"""The wait's deadline (common/wait/deadline.py): the earlier of ``timeout`` and ``execution_timeout``."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_querytasks.common.wait.deadline import wait_deadline

from ...helpers import StartedTI


def test_the_earlier_limit_wins() -> None:
    ti = StartedTI(ago=600)
    ctx = {"ti": ti}
    now = ti.start_date.timestamp() + 600  # "now" is 10 min after the try's start, to the microsecond
    hour = dt.timedelta(hours=1)
    # try started 10 min ago, execution_timeout 1 h: 50 min left, before the 24 h timeout
    assert wait_deadline(ctx, 24 * 3600, hour, now) == pytest.approx(now + 3000)
    # a 5 min timeout comes first
    assert wait_deadline(ctx, 300, hour, now) == pytest.approx(now + 300)
    assert wait_deadline(ctx, None, None, now) is None
    # no start date known: counted from now
    assert wait_deadline({}, None, hour, now) == pytest.approx(now + 3600)
