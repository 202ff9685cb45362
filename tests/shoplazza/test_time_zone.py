"""Shoplazza's time zone (issue 28): the windows state their zone and cover the intended instants.

The emulator reads ``beginTime``/``endTime`` in the shop's zone (``America/New_York``: not UTC,
with daylight saving time), the least convenient reading the docs allow; these tests check the
instants it read, not the strings the provider sent.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging

import pytest

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.protocols.shoplazza import reported_timezone, split_window
from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

from .conftest import export

UTC = dt.timezone.utc


def covered(emulator: ShoplazzaEmulator) -> list[tuple[dt.datetime, dt.datetime]]:
    """The instants each created task covers, as the emulated Shoplazza read them (creation order)."""
    tasks = sorted(emulator.tasks.values(), key=lambda task: task.created)
    return [(task.begin_at, task.end_at) for task in tasks if task.begin_at and task.end_at]


def test_aware_utc_times_are_the_instants_shoplazza_reads(emulator: ShoplazzaEmulator) -> None:
    begin = dt.datetime(2026, 11, 20, tzinfo=UTC)
    result = export(
        begin_time=begin, end_time=begin + dt.timedelta(days=1), timezone="America/New_York"
    ).execute({})  # type: ignore[arg-type]
    assert covered(emulator) == [(begin, begin + dt.timedelta(days=1))]
    assert result["window"]["begin_at"] == "2026-11-19T19:00:00-05:00"
    assert result["window"]["timezone"] == "America/New_York"


def test_windows_over_a_daylight_saving_change_are_24_hours_of_real_time(emulator: ShoplazzaEmulator) -> None:
    begin = dt.datetime(2026, 3, 7, 5, tzinfo=UTC)  # midnight in New York, the day before the change
    result = export(
        begin_time=begin,
        end_time=begin + dt.timedelta(days=3),
        timezone="America/New_York",
        wait_for_completion=False,
    ).execute({})  # type: ignore[arg-type]
    windows = covered(emulator)
    assert [end - start for start, end in windows] == [dt.timedelta(hours=24)] * 3
    assert windows[0][0] == begin and windows[-1][1] == begin + dt.timedelta(days=3)
    assert all(earlier[1] == later[0] for earlier, later in itertools.pairwise(windows))
    # The XCom windows say the instants, with their UTC offsets (they change on 8 March).
    assert [(w["window"]["begin_at"], w["window"]["end_at"]) for w in result["windows"]] == [
        ("2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00"),
        ("2026-03-08T00:00:00-05:00", "2026-03-09T01:00:00-04:00"),
        ("2026-03-09T01:00:00-04:00", "2026-03-10T01:00:00-04:00"),
    ]


def test_a_zone_the_shop_contradicts_fails_naming_timezone(emulator: ShoplazzaEmulator) -> None:
    with pytest.raises(InvalidInputError, match="timezone") as raised:
        export(timezone="UTC").execute({})  # type: ignore[arg-type]
    assert raised.value.parameter == "timezone" and "-0500" in str(raised.value)
    assert emulator.requests_to("api", "GET", r"/data/query$") == []


def test_without_timezone_the_shops_reported_zone_is_used_and_logged(
    emulator: ShoplazzaEmulator, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    begin = dt.datetime(2026, 11, 20, 5, tzinfo=UTC)
    with caplog.at_level(logging.INFO):
        result = export(begin_time=begin, end_time=begin + dt.timedelta(days=1)).execute({})  # type: ignore[arg-type]
    reported = emulator.reported_offset()  # today's offset: -0500 in winter, -0400 in summer
    assert result["window"]["timezone"] == f"{reported[:3]}:{reported[3:]}"
    if reported == "-0500":  # November is on the same side of the change as today
        assert covered(emulator) == [(begin, begin + dt.timedelta(days=1))]
    # The task log says which zone was used and why (Airflow 3 logs through structlog to stdout).
    logged = caplog.text + capsys.readouterr().out
    assert "daylight" in logged and "set timezone" in logged


def test_an_unreadable_shop_zone_fails_naming_timezone(emulator: ShoplazzaEmulator) -> None:
    emulator.scopes = ("read_data",)  # no read_shop
    with pytest.raises(InvalidInputError, match="read_shop") as raised:
        export().execute({})  # type: ignore[arg-type]
    assert raised.value.parameter == "timezone"
    assert emulator.requests_to("api", "GET", r"/data/query$") == []


def test_a_boundary_in_the_repeated_hour_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="repeats"):
        split_window(
            dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, and 01:30 EST an hour later
            dt.datetime(2026, 11, 2, 5, tzinfo=UTC),
            timezone="America/New_York",
        )


@pytest.mark.parametrize(
    ("reported", "offset"),
    [("+0800", 8), ("-05:00", -5), ("UTC+08:00", 8), ("Asia/Shanghai", 8), ("", None), ("soon", None)],
)
def test_the_shop_objects_timezone_is_read(reported: str, offset: int | None) -> None:
    zone = reported_timezone(reported)
    if offset is None:
        assert zone is None
    else:
        assert zone is not None
        assert dt.datetime(2026, 1, 1, tzinfo=zone).utcoffset() == dt.timedelta(hours=offset)
