"""Hook-level lineage of the fetch: the final URI is reported, never the temporary ``.part`` name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import ApiError
from airflow_provider_querytasks.common.transport.fetch import fetch_url
from airflow_provider_querytasks.compat import ObjectStoragePath
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

from ..common.fake_platform import FakeEmulator
from ..helpers import FAST_RETRY

ROWS = b"a,b\n" + b"1,2\n" * 1000


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Airflow's real hook lineage collector, on as when a lineage reader (OpenLineage) is installed."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import lineage, plugins_manager

        monkeypatch.setattr(plugins_manager, "get_hook_lineage_readers_plugins", lambda: [object()])
        lineage.get_hook_lineage_collector.cache_clear()
        yield lineage.get_hook_lineage_collector()
        lineage.get_hook_lineage_collector.cache_clear()
    else:
        from airflow.lineage import hook  # type: ignore[attr-defined]

        monkeypatch.setattr(hook, "_hook_lineage_collector", hook.HookLineageCollector())
        yield hook.get_hook_lineage_collector()


def output_uris(collector: Any) -> list[str]:
    from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

    assert get_hook_lineage_collector() is collector
    return sorted(info.asset.uri for info in collector.collected_assets.outputs)


def test_fetch_to_object_storage_reports_only_the_final_uri(
    collector: Any, emulator: FakeEmulator, tmp_path: Path
) -> None:
    emulator.storage.put("r.csv", ROWS)
    target = ObjectStoragePath(f"file://{tmp_path}/obj/r.csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    fetch_url(emulator.storage.presign("r.csv"), target)
    uris = output_uris(collector)
    assert uris == [f"file://{tmp_path}/obj/r.csv"]
    assert not collector.collected_assets.inputs


def test_fetch_to_a_local_path_reports_its_final_uri(
    collector: Any, emulator: FakeEmulator, tmp_path: Path
) -> None:
    emulator.storage.put("r.csv", ROWS)
    fetch_url(emulator.storage.presign("r.csv"), tmp_path / "out" / "r.csv")
    assert output_uris(collector) == [f"file://{tmp_path}/out/r.csv"]


def test_a_failed_fetch_reports_nothing(collector: Any, emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("bad.gz", b"\x1f\x8bnot gzip at all")
    target = ObjectStoragePath(f"file://{tmp_path}/r.csv")
    with pytest.raises(ApiError):
        fetch_url(emulator.storage.presign("bad.gz"), target, retry=FAST_RETRY)
    assert output_uris(collector) == []
