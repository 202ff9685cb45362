"""The atomic streaming fetch (common/transport/fetch.py): a result URL to a path or an
ObjectStoragePath, resumed, checked, reserved, reported to hook lineage."""

from __future__ import annotations

import ctypes
import errno
import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import ApiError, InvalidInputError, ServerError
from airflow_provider_querytasks.common.transport import fetch
from airflow_provider_querytasks.common.transport.clients import RetryPolicy
from airflow_provider_querytasks.common.transport.fetch import destination_for, fetch_url
from airflow_provider_querytasks.compat import ObjectStoragePath
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_0_PLUS

from ...helpers import FAST_RETRY
from ..fake_platform import FakeEmulator

ROWS = b"".join(b"%d,name-%d\n" % (i, i) for i in range(50_000))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fetch_streams_gzip_and_records_size_hash_lines(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("r.csv.gz", ROWS, gzip=True)
    record = fetch_url(emulator.storage.presign("r.csv.gz"), tmp_path / "out" / "r.csv")
    assert (tmp_path / "out" / "r.csv").read_bytes() == ROWS
    assert record.bytes == len(ROWS) and record.lines == 50_000 and record.compressed
    assert record.sha256 == hashlib.sha256(ROWS).hexdigest()
    assert "?" not in record.source  # no presigned signature in XCom
    json.dumps(record.to_dict())
    assert emulator.storage.leaks == []


def test_fetch_detects_gzip_by_magic_bytes(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("plain-gz", gzip.compress(ROWS))  # no Content-Encoding header
    record = fetch_url(emulator.storage.presign("plain-gz"), tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_bytes() == ROWS and record.compressed


def test_fetch_resumes_a_cut_download_with_range(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("r.csv", ROWS)
    emulator.inject(action="truncate", site="storage", times=1)
    record = fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv", retry=FAST_RETRY)
    assert (tmp_path / "r.csv").read_bytes() == ROWS and record.bytes == len(ROWS)
    second = emulator.requests_to("storage")[1]
    assert (second.header("Range") or "").startswith("bytes=")


def test_failed_fetch_leaves_nothing_under_the_final_name(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("r.csv", ROWS)
    emulator.inject(action="truncate", site="storage", times=None)
    with pytest.raises(ServerError, match="cut|interrupted"):
        fetch_url(
            emulator.storage.presign("r.csv"),
            tmp_path / "r.csv",
            retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.02, jitter=0),
        )
    assert leftovers(tmp_path) == []


def test_failed_fetch_keeps_an_older_file_intact(emulator: FakeEmulator, tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(b"yesterday\n")
    emulator.inject(action="status", site="storage", times=None, status=500, body="boom")
    with pytest.raises(ServerError):
        fetch_url(
            emulator.storage.presign("r.csv"),
            tmp_path / "r.csv",
            retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.02, jitter=0),
        )
    assert leftovers(tmp_path) == ["r.csv"] and (tmp_path / "r.csv").read_bytes() == b"yesterday\n"


def test_expired_url_is_replaced_once(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("r.csv", ROWS)
    stale = emulator.storage.presign("r.csv")
    emulator.storage.expire_all()
    calls: list[str] = []

    def provider() -> str:
        calls.append("x")
        return stale if len(calls) == 1 else emulator.storage.presign("r.csv")

    fetch_url(provider, tmp_path / "r.csv", retry=FAST_RETRY)
    assert len(calls) == 2 and (tmp_path / "r.csv").read_bytes() == ROWS


def test_url_that_stays_expired_fails_clearly(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("r.csv", ROWS)
    url = emulator.storage.presign("r.csv", ttl=-10)
    with pytest.raises(ApiError, match="(?s)HTTP 403.*expired"):
        fetch_url(lambda: url, tmp_path / "r.csv", retry=FAST_RETRY)
    assert leftovers(tmp_path) == []


def test_a_failed_write_fails_the_fetch_and_leaves_nothing(
    emulator: FakeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Writes run on a thread of the fetch's own: their error must still reach the caller.
    emulator.storage.put("r.csv", ROWS)
    opened = fetch.AtomicTarget.open

    def open_a_full_disk(target: Any) -> Any:
        handle: Any = opened(target)

        def write(data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        handle.write = write
        return handle

    monkeypatch.setattr(fetch.AtomicTarget, "open", open_a_full_disk)
    with pytest.raises(OSError, match="No space left"):
        fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv", retry=FAST_RETRY)
    assert leftovers(tmp_path) == []


def fake_fallocate(monkeypatch: pytest.MonkeyPatch, result_errno: int) -> list[tuple[int, int, int]]:
    """Put a stand-in for libc's fallocate in the fetch's place: it fails with ``result_errno``
    (0: succeeds). Returns its calls as they come: (mode, size, bytes already in the file)."""
    calls: list[tuple[int, int, int]] = []

    def allocate(fd: int, mode: int, offset: int, length: int) -> int:
        calls.append((mode, length, os.fstat(fd).st_size))
        if result_errno:
            ctypes.set_errno(result_errno)
            return -1
        return 0

    monkeypatch.setattr(fetch, "_linux_fallocate", lambda: allocate)
    return calls


@pytest.mark.skipif(fetch._linux_fallocate() is None, reason="fallocate(2) is Linux's")
def test_a_local_file_reserves_blocks_and_keeps_its_size(tmp_path: Path) -> None:
    allocate = fetch._linux_fallocate()
    assert allocate is not None
    with open(tmp_path / "probe", "wb") as probe:
        if allocate(probe.fileno(), fetch.FALLOC_FL_KEEP_SIZE, 0, 1 << 20) != 0:
            pytest.skip(f"{tmp_path} has no fallocate: {os.strerror(ctypes.get_errno())}")
    with fetch._LocalFile(str(tmp_path / "r.csv"), "wb") as out:
        out.reserve(1 << 20)
        stat = os.fstat(out.fileno())
        assert stat.st_size == 0 and stat.st_blocks * 512 >= 1 << 20
        out.write(ROWS)
    assert (tmp_path / "r.csv").read_bytes() == ROWS


@pytest.mark.parametrize("gzip_encoded", [False, True], ids=["plain", "gzip"])
def test_a_result_of_known_size_is_reserved_before_it_is_written(
    emulator: FakeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzip_encoded: bool
) -> None:
    # A gzip result's size after inflating is not known: it is written without reserving.
    calls = fake_fallocate(monkeypatch, 0)
    emulator.storage.put("r.csv", ROWS, gzip=gzip_encoded)
    fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_bytes() == ROWS
    assert calls == ([] if gzip_encoded else [(fetch.FALLOC_FL_KEEP_SIZE, len(ROWS), 0)])


def test_a_disk_without_room_fails_the_fetch_before_it_writes(
    emulator: FakeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_fallocate(monkeypatch, errno.ENOSPC)
    emulator.storage.put("r.csv", ROWS)
    message = f"No room for the result ({len(ROWS)} bytes) in {tmp_path}: "
    with pytest.raises(OSError, match=re.escape(message)):
        fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv", retry=FAST_RETRY)
    assert calls == [(fetch.FALLOC_FL_KEEP_SIZE, len(ROWS), 0)]  # once, nothing written yet
    assert leftovers(tmp_path) == []


def test_a_file_system_without_fallocate_is_written_as_before(
    emulator: FakeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_fallocate(monkeypatch, errno.EOPNOTSUPP)
    emulator.storage.put("r.csv", ROWS)
    record = fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv")
    assert len(calls) == 1 and (tmp_path / "r.csv").read_bytes() == ROWS and record.bytes == len(ROWS)


def test_invalid_gzip_is_an_error_not_a_file(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("bad.gz", b"\x1f\x8bnot gzip at all")
    with pytest.raises(ApiError, match="not valid gzip"):
        fetch_url(emulator.storage.presign("bad.gz"), tmp_path / "r.csv", retry=FAST_RETRY)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("gzip_encoded", [False, True], ids=["plain", "gzip"])
def test_every_piece_is_written_hashed_and_counted_in_order(
    emulator: FakeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzip_encoded: bool
) -> None:
    # Small pieces and a short queue: hundreds of them through the hashing thread, each waiting
    # on the next (a piece written, hashed or counted out of order, or lost, shows here).
    monkeypatch.setattr(fetch, "CHUNK_SIZE", 4096)
    monkeypatch.setattr(fetch, "MAX_PENDING", 1)
    data = ROWS + b"a last line without newline"
    emulator.storage.put("r.csv", data, gzip=gzip_encoded)
    record = fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_bytes() == data
    assert record.bytes == len(data) and record.sha256 == hashlib.sha256(data).hexdigest()
    assert record.lines == 50_001 and record.compressed is gzip_encoded


def test_a_local_file_gets_small_writes_and_every_byte_of_short_ones(tmp_path: Path) -> None:
    # Each write(2) at most LOCAL_WRITE_SIZE (large page-cache folios cost up to 4x on some VMs);
    # a write that takes fewer bytes than offered is carried on, not dropped.
    class CountingFile(io.FileIO):
        sizes: list[int] = []

        def write(self, data: Any, /) -> int:
            piece = memoryview(data)[: max(1, len(memoryview(data)) - 100)]  # a short write
            self.sizes.append(piece.nbytes)
            return super().write(piece)

    class Spied(fetch._LocalFile, CountingFile):
        pass

    data = os.urandom(3 * fetch.LOCAL_WRITE_SIZE + 7)
    with Spied(str(tmp_path / "f"), "wb") as out:
        assert out.write(memoryview(data)) == len(data)
        assert out.write(b"tail") == 4
    assert (tmp_path / "f").read_bytes() == data + b"tail"
    assert max(CountingFile.sizes) <= fetch.LOCAL_WRITE_SIZE - 100 and len(CountingFile.sizes) >= 5
    target = fetch.AtomicTarget(tmp_path / "g")
    with target.open() as written:  # what a local fetch writes through
        assert isinstance(written, fetch._LocalFile)
    target.discard()


@pytest.mark.parametrize("gzip_encoded", [False, True], ids=["plain", "gzip"])
def test_a_raw_response_without_http_client_underneath_is_streamed_by_urllib3(
    emulator: FakeEmulator, tmp_path: Path, gzip_encoded: bool
) -> None:
    # urllib3 has responses of other kinds (Emscripten's): no readinto to read straight into
    # the fetch's buffers; its own stream serves, with the same record.
    import requests

    class Opaque:
        def __init__(self, raw: Any) -> None:
            self._raw = raw
            self.pieces = 0

        def stream(self, amt: int, decode_content: bool) -> Any:
            for piece in self._raw.stream(amt, decode_content=decode_content):
                self.pieces += 1
                yield piece

        def close(self) -> None:
            self._raw.close()

    class OpaqueSession(requests.Session):
        raws: list[Opaque] = []

        def get(self, *args: Any, **kwargs: Any) -> Any:
            response = super().get(*args, **kwargs)
            response.raw = Opaque(response.raw)
            self.raws.append(response.raw)
            return response

    emulator.storage.put("r.csv", ROWS, gzip=gzip_encoded)
    session = OpaqueSession()
    record = fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv", session=session)
    assert (tmp_path / "r.csv").read_bytes() == ROWS and record.lines == 50_000
    assert record.sha256 == hashlib.sha256(ROWS).hexdigest() and record.compressed is gzip_encoded
    assert [raw.pieces > 0 for raw in session.raws] == [True]


def test_a_cut_gzip_download_resumes_where_it_was_cut(emulator: FakeEmulator, tmp_path: Path) -> None:
    # The Range asks for the compressed bytes after those read: decoding goes on, not over.
    emulator.storage.put("r.csv", ROWS, gzip=True)
    emulator.inject(action="truncate", site="storage", times=1)
    record = fetch_url(emulator.storage.presign("r.csv"), tmp_path / "r.csv", retry=FAST_RETRY)
    assert (tmp_path / "r.csv").read_bytes() == ROWS and record.lines == 50_000
    assert record.sha256 == hashlib.sha256(ROWS).hexdigest() and record.compressed
    assert (emulator.requests_to("storage")[1].header("Range") or "").startswith("bytes=")


def test_gzip_corrupt_past_its_first_pieces_is_an_error_not_a_file(
    emulator: FakeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the first pieces: part of the result is already written when decoding fails.
    monkeypatch.setattr(fetch, "CHUNK_SIZE", 4096)
    compressed = gzip.compress(ROWS)
    middle = len(compressed) // 2
    emulator.storage.put("bad.gz", compressed[:middle] + b"\x00" * 64 + compressed[middle + 64 :])
    with pytest.raises(ApiError, match="not valid gzip"):
        fetch_url(emulator.storage.presign("bad.gz"), tmp_path / "r.csv", retry=FAST_RETRY)
    assert leftovers(tmp_path) == []


def test_gzip_that_ends_early_is_an_error_not_a_file(emulator: FakeEmulator, tmp_path: Path) -> None:
    compressed = gzip.compress(ROWS)
    emulator.storage.put("short.gz", compressed[: len(compressed) // 2])
    with pytest.raises(ApiError, match="ended early"):
        fetch_url(emulator.storage.presign("short.gz"), tmp_path / "r.csv", retry=FAST_RETRY)
    assert leftovers(tmp_path) == []


def test_fetch_to_an_object_storage_path(emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("r.csv", ROWS)
    target = ObjectStoragePath(f"file://{tmp_path}/obj/r.csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    record = fetch_url(emulator.storage.presign("r.csv"), target)
    assert (tmp_path / "obj" / "r.csv").read_bytes() == ROWS
    assert record.uri.endswith("/obj/r.csv")
    assert leftovers(tmp_path / "obj") == ["r.csv"]


def test_destination_folder_gets_the_file_name() -> None:
    assert destination_for("/data/out/", "a.csv") == "/data/out/a.csv"
    assert destination_for("/data/out/x.csv", "a.csv") == "/data/out/x.csv"
    with pytest.raises(InvalidInputError, match="destination"):
        destination_for("  ", "a.csv")


# -- hook lineage: the final URI is reported, never the temporary ``.part`` name ---------------
LINEAGE_ROWS = b"a,b\n" + b"1,2\n" * 1000


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
    emulator.storage.put("r.csv", LINEAGE_ROWS)
    target = ObjectStoragePath(f"file://{tmp_path}/obj/r.csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    fetch_url(emulator.storage.presign("r.csv"), target)
    uris = output_uris(collector)
    assert uris == [f"file://{tmp_path}/obj/r.csv"]
    assert not collector.collected_assets.inputs


def test_fetch_to_a_local_path_reports_its_final_uri(
    collector: Any, emulator: FakeEmulator, tmp_path: Path
) -> None:
    emulator.storage.put("r.csv", LINEAGE_ROWS)
    fetch_url(emulator.storage.presign("r.csv"), tmp_path / "out" / "r.csv")
    assert output_uris(collector) == [f"file://{tmp_path}/out/r.csv"]


def test_a_failed_fetch_reports_nothing(collector: Any, emulator: FakeEmulator, tmp_path: Path) -> None:
    emulator.storage.put("bad.gz", b"\x1f\x8bnot gzip at all")
    target = ObjectStoragePath(f"file://{tmp_path}/r.csv")
    with pytest.raises(ApiError):
        fetch_url(emulator.storage.presign("bad.gz"), target, retry=FAST_RETRY)
    assert output_uris(collector) == []
