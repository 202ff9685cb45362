"""The fetch: stream a result URL to a local path or any ``ObjectStoragePath``, atomically.

Results (CSV exports, JSONL documents, dataset files) are downloaded in chunks, so memory stays
flat whatever their size. Bytes go to a temporary name beside the destination and are moved to the
final name only when the download is complete and verified: a failed fetch never leaves a partial
file under the final name. gzip payloads (magic bytes or ``Content-Encoding: gzip``) are
decompressed on the fly. Interrupted downloads resume with ``Range`` where the host supports
it; an expired presigned URL (403) is replaced once by asking ``url_provider`` again.

No credential header is sent unless the caller passes ``headers`` (the result hosts are object
stores with presigned URLs; a platform token must never reach them).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import http.client
import io
import logging
import os
import sys
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

from tenacity import Retrying

from airflow_provider_querytasks.common.api.errors import (
    ApiError,
    InvalidInputError,
    PermissionDeniedError,
    ServerError,
)
from airflow_provider_querytasks.common.transport.clients import USER_AGENT, RetryPolicy
from airflow_provider_querytasks.compat import ObjectStoragePath

if TYPE_CHECKING:
    import requests
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
NEWLINE = b"\n"
#: Pieces handed to the hashing thread and not yet hashed (memory: this many CHUNK_SIZEs).
MAX_PENDING = 4
#: Largest write(2) to a local file. See :class:`_LocalFile`.
LOCAL_WRITE_SIZE = 32 << 10
#: fallocate(2): allocate blocks without changing the file's size (linux/falloc.h).
FALLOC_FL_KEEP_SIZE = 0x01

Destination = str | os.PathLike[str] | ObjectStoragePath


@dataclass(frozen=True)
class FetchRecord:
    """What was fetched, small and JSON-able (for XCom; never the data itself).

    :param uri: where the file now is.
    :param bytes: size written (after decompression).
    :param sha256: hex digest of the bytes written.
    :param lines: newline-terminated lines written (a last line without newline counts too).
    :param source: the URL fetched, without its query string (presigned signatures stay out).
    :param compressed: whether the payload was gzip and was decompressed.
    """

    uri: str
    bytes: int
    sha256: str
    lines: int
    source: str
    compressed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-able dict (the operators' XCom value)."""
        return asdict(self)


def redact_url(url: str) -> str:
    """The URL without query string and fragment (they carry presigned signatures)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def destination_for(destination: Destination, filename: str) -> Destination:
    """``destination`` itself, or ``destination/filename`` when it names a folder (ends in ``/``)."""
    text = str(destination)
    if not text.strip():
        raise InvalidInputError("destination", "must be a local path or an object storage URI, not empty")
    if text.endswith("/"):
        if isinstance(destination, ObjectStoragePath):
            return destination / filename
        return text + filename
    return destination


def in_folder(folder: Destination, filename: str) -> Destination:
    """``folder/filename``, whether or not ``folder`` ends in ``/``."""
    if isinstance(folder, ObjectStoragePath):
        return folder / filename
    return destination_for(str(folder).rstrip("/") + "/", filename)


def report_output(final: Path | ObjectStoragePath, *, local: bool) -> None:
    """Tell Airflow's hook lineage collector (which OpenLineage reads) that ``final`` was written.

    A no-op unless a lineage reader is registered; lineage never fails a fetch.
    """
    try:
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        path = ObjectStoragePath(Path(str(final)).resolve().as_uri()) if local else final
        get_hook_lineage_collector().add_output_asset(context=path, uri=str(path))
    except Exception:
        log.debug("Could not report %s to the hook lineage collector", path, exc_info=True)


def _is_local(destination: Destination) -> bool:
    if isinstance(destination, ObjectStoragePath):
        return False
    text = os.fspath(destination)
    return "://" not in text or text.startswith("file://")


class _LocalFile(io.FileIO):
    """A local file written in pieces of at most :data:`LOCAL_WRITE_SIZE`.

    Larger writes can cost the kernel far more system CPU on some virtual machines (likely the
    large page-cache folios it allocates for them); small ones cost a little at small sizes. The
    measurements are on the documentation's Benchmarks page (downloads).
    """

    def reserve(self, size: int) -> None:
        """Allocate disk blocks for ``size`` bytes from the start, leaving the file's size as it is.

        Writes into blocks allocated up front cost less system CPU (see the Benchmarks page,
        downloads), and a disk without room fails here, before the download, instead of
        gigabytes into it. Only where Linux's fallocate(2) is available and the file system has
        it (not ``os.posix_fallocate``: where the file system lacks it, glibc emulates it by writing
        to every block, as it would on some network and FUSE file systems).

        :raises OSError: ``ENOSPC`` or ``EDQUOT``, naming the folder and the size.
        """
        allocate = _linux_fallocate()
        if allocate is None or size <= 0:
            return
        if allocate(self.fileno(), FALLOC_FL_KEEP_SIZE, 0, size) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.ENOSPC, errno.EDQUOT):
            folder = os.path.dirname(os.path.abspath(str(self.name)))
            raise OSError(code, f"No room for the result ({size} bytes) in {folder}: {os.strerror(code)}")
        log.debug("fallocate(%s) failed (%s): writing without reserving", self.name, os.strerror(code))

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        written = 0
        while written < view.nbytes:  # FileIO.write may write less than asked
            written += super().write(view[written : written + LOCAL_WRITE_SIZE])
        return written


@functools.cache
def _linux_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's ``fallocate(fd, mode, offset, len)``, on 64-bit Linux; ``None`` elsewhere."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


def _reserve(out: IO[bytes], size: int) -> None:
    """Reserve room for ``size`` bytes where ``out`` is a local file (see :meth:`_LocalFile.reserve`)."""
    if isinstance(out, _LocalFile):
        out.reserve(size)


class AtomicTarget:
    """A file written under a temporary sibling name, moved to its final name only on commit.

    Nothing ever appears under the final name until :meth:`commit`: a failed write is
    :meth:`discard`-ed and leaves neither a partial file nor the temporary one. Used by
    :func:`fetch` and by the SQL hook's export. Usage: ``out = target.open()``, write, close
    ``out``, then ``target.commit()``; on any error ``target.discard()``. :meth:`open` may be
    called again to start over (the temporary file is truncated).

    :param destination: a local path, a ``file://``/``s3://``/``gs://``... URI or an
        ``ObjectStoragePath`` (a local parent folder is created).
    """

    def __init__(self, destination: Destination) -> None:
        self.final: Path | ObjectStoragePath
        # Not isinstance(Path): on Airflow 2.11 an ObjectStoragePath is a pathlib.Path too.
        self.local = _is_local(destination)
        if self.local:
            local = Path(str(destination).removeprefix("file://")).expanduser()
            local.parent.mkdir(parents=True, exist_ok=True)
            self.final = local
        elif isinstance(destination, ObjectStoragePath):
            self.final = destination
        else:
            self.final = ObjectStoragePath(str(destination))
        self.temp = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:12]}.part")

    @property
    def uri(self) -> str:
        """The final name, as a path (local) or a URI (object storage)."""
        return str(self.final) if self.local else self.final.as_uri()

    def open(self) -> IO[bytes]:
        """The temporary file, opened for writing (truncated)."""
        if self.local:
            return cast("IO[bytes]", _LocalFile(str(self.temp), "wb"))
        # Through the filesystem, not ObjectStoragePath.open(): that reports every write of the
        # temporary name to Airflow's hook lineage; the final URI is reported on commit instead.
        remote_temp = cast("ObjectStoragePath", self.temp)
        return remote_temp.fs.open(remote_temp.path, "wb")  # type: ignore[no-any-return]

    def commit(self) -> None:
        """Move the (closed) temporary file to the final name, and report it to hook lineage."""
        if self.local:
            os.replace(str(self.temp), str(self.final))
        else:  # fsspec's move: a rename where the store has one, else copy and delete
            remote_temp, remote_final = (
                cast("ObjectStoragePath", self.temp),
                cast("ObjectStoragePath", self.final),
            )
            remote_temp.fs.mv(remote_temp.path, remote_final.path)
        report_output(self.final, local=self.local)

    def discard(self) -> None:
        """Remove the temporary file, if any (a cleanup failure is logged, not raised)."""
        try:
            if self.temp.exists():
                self.temp.unlink()
        except Exception:  # cleanup must not hide the download's own error
            log.warning("Could not remove the temporary file %s", self.temp, exc_info=True)


class _Digest:
    """Writes the bytes read, with their hash, size and line count, gzip decoding on the way.

    Hashing and line counting run on a helper thread, one task per piece; reading, inflating and
    writing stay on the reading thread, which spends most of its time in system calls without the
    GIL. Counting on the reading thread would hold the GIL between its system calls; a thread
    each for writing, hashing, counting and inflating costs more CPU in hand-offs and GIL
    switches per piece than it gains (the measurements are on the Benchmarks page, downloads).
    """

    def __init__(self) -> None:
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="querytasks-fetch-hash")
        #: Pieces handed to the helper thread; each gives back its line count.
        self._hashing: deque[Future[int]] = deque()
        #: What the body is read into, in turn (see :meth:`buffer`).
        self._buffers = [bytearray(CHUNK_SIZE) for _ in range(MAX_PENDING + 1)]
        self._next_buffer = 0
        self.reset()

    def buffer(self) -> memoryview:
        """The buffer to read the next piece into. It is free: at most :data:`MAX_PENDING`
        pieces wait for the hashing thread (:meth:`_emit`), and there is one buffer more."""
        buffer = self._buffers[self._next_buffer]
        self._next_buffer = (self._next_buffer + 1) % len(self._buffers)
        return memoryview(buffer)

    def reset(self) -> None:
        self.drain()
        self.sha = hashlib.sha256()
        self.size = 0
        self.lines = 0
        self.last = b"\n"
        self.inflater: Any = None

    def start_gzip(self) -> None:
        self.inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def write(self, out: IO[bytes], chunk: bytes | memoryview) -> None:
        """Take one piece as read (bytes, or a view from the start of one of :meth:`buffer`'s)."""
        if self.inflater is None:
            self._emit(out, chunk)
            return
        try:
            # Inflate in bounded pieces: a megabyte of well-compressed CSV can hold a hundred.
            data = self.inflater.decompress(chunk, CHUNK_SIZE)
            while data:
                self._emit(out, data)
                data = self.inflater.decompress(self.inflater.unconsumed_tail, CHUNK_SIZE)
        except zlib.error as exc:
            raise ApiError(f"The result is not valid gzip: {exc}") from None

    def finish(self, out: IO[bytes]) -> None:
        if self.inflater is not None:
            self._emit(out, self.inflater.flush())
            if not self.inflater.eof:
                raise ApiError("The gzip result ended early: the download is incomplete")
        self.drain()

    def drain(self) -> None:
        """Wait until every piece is hashed and counted."""
        while self._hashing:
            self.lines += self._hashing.popleft().result()

    def close(self) -> None:
        self._hasher.shutdown(wait=True, cancel_futures=True)
        self._hashing.clear()

    def _emit(self, out: IO[bytes], data: bytes | memoryview) -> None:
        if not data:
            return
        out.write(data)
        self._hashing.append(self._hasher.submit(self._hash_and_count, data))
        if len(self._hashing) > MAX_PENDING:  # memory, and the read buffers' turn (buffer())
            self.lines += self._hashing.popleft().result()
        self.size += len(data)
        self.last = bytes(data[-1:])

    def _hash_and_count(self, data: bytes | memoryview) -> int:
        """On the helper thread, in the order the pieces were read."""
        self.sha.update(data)
        if isinstance(data, memoryview):  # a view from a read buffer's start: count in place
            return cast("bytearray", data.obj).count(NEWLINE, 0, data.nbytes)
        return data.count(NEWLINE)

    @property
    def line_count(self) -> int:
        return self.lines + (0 if self.last == NEWLINE else 1)


class _Download:
    """One fetch: the state that survives retries (URL, offset, bytes so far)."""

    def __init__(
        self,
        url_provider: Callable[[], str],
        headers: Mapping[str, str] | None,
        decompress: bool,
        timeout: tuple[float, float],
        session: requests.Session,
        url_refreshes: int,
    ) -> None:
        self.url_provider = url_provider
        self.headers = dict(headers or {})
        self.decompress = decompress
        self.timeout = timeout
        self.session = session
        self.refreshes_left = url_refreshes
        self.url = url_provider()
        self.offset = 0  # raw (possibly compressed) bytes already written
        self.total: int | None = None
        self.gzip: bool | None = None

    def run(self, out: IO[bytes], digest: _Digest) -> None:
        """One attempt: (re)start or resume the download until the end of the body."""
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **self.headers}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        import requests  # the HTTP stack is imported on first use, not at DAG parsing

        try:
            response = self.session.get(self.url, headers=headers, stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise self._transient(f"connection failed: {type(exc).__name__}") from None
        with response:
            if response.status_code in (403, 410) and self.refreshes_left > 0:
                self._refresh_url()
                raise self._transient("the result URL expired; fetched a fresh one")
            if response.status_code >= 400:
                self._raise_for(response)
            if self.offset and response.status_code != 206:
                # The host ignored Range: start over.
                out.seek(0)
                out.truncate()
                digest.reset()
                self.offset = 0
            self._read_body(response, out, digest)

    def _read_body(self, response: requests.Response, out: IO[bytes], digest: _Digest) -> None:
        import requests
        import urllib3

        if self.offset == 0:
            length = response.headers.get("Content-Length")
            self.total = int(length) if length and length.isdigit() else None
            self.gzip = None
        try:
            for chunk in _body_pieces(response, digest):
                if self.gzip is None:
                    encoded = response.headers.get("Content-Encoding", "").lower() == "gzip"
                    self.gzip = self.decompress and (encoded or chunk[:2] == GZIP_MAGIC)
                    if self.gzip:
                        digest.start_gzip()
                    elif self.total is not None:  # written as read: its size is known
                        _reserve(out, self.total)
                digest.write(out, chunk)
                self.offset += len(chunk)
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ) as exc:
            cause = type(exc).__name__
            raise self._transient(f"download interrupted after {self.offset} bytes: {cause}") from None
        if self.total is not None and self.offset < self.total:
            raise self._transient(f"download cut at {self.offset} of {self.total} bytes")

    def _refresh_url(self) -> None:
        self.refreshes_left -= 1
        log.info("The result URL %s was refused (expired?); asking for a fresh URL", redact_url(self.url))
        self.url = self.url_provider()

    def _raise_for(self, response: requests.Response) -> None:
        excerpt = response.text[:300] if response.text else ""
        message = f"Download of {redact_url(self.url)} failed with HTTP {response.status_code}: {excerpt}"
        if response.status_code >= 500 or response.status_code == 429:
            raise self._transient(message)
        if response.status_code == 403:
            raise PermissionDeniedError(message, status=403)
        raise ApiError(message, status=response.status_code)

    def _transient(self, message: str) -> ServerError:
        return ServerError(f"Fetching {redact_url(self.url)}: {message}")


def _body_pieces(response: requests.Response, digest: _Digest) -> Iterator[bytes | memoryview]:
    """The body as it comes (never decoded: gzip is :class:`_Digest`'s), up to
    :data:`CHUNK_SIZE` a piece.

    Read straight into :meth:`_Digest.buffer`'s buffers with ``http.client``'s ``readinto``
    (under urllib3's private ``_fp``): urllib3's ``stream`` gets each piece from ``read(n)``, a
    fresh zeroed buffer then copied, and yields a chunked body one HTTP chunk at a time
    (JSONL 1 GiB, alternating in one process: 2.5-3.9 s of CPU against 4.1-5.5 s). A raw
    response of another kind (Emscripten's, a test double) is streamed by urllib3.
    """
    fp = getattr(response.raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse):
        yield from response.raw.stream(CHUNK_SIZE, decode_content=False)
        return
    while True:
        buffer = digest.buffer()
        read = fp.readinto(buffer)
        if not read:
            return
        yield buffer[:read]


class _Progressed(Exception):
    """An attempt cut after it wrote bytes: resumed at once, not counted as a failed attempt."""


def _run_with_retries(
    download: _Download,
    out: IO[bytes],
    digest: _Digest,
    policy: RetryPolicy,
    resume_while_progressing: bool,
    max_resumes: int,
) -> None:
    """Run ``download`` to its end: transient failures spend ``policy``'s attempts, except (with
    ``resume_while_progressing``) a cut after more bytes arrived, which starts the attempts
    afresh, ``max_resumes`` times at most."""
    resumes = 0
    while True:
        try:
            for attempt in Retrying(**policy.tenacity_kwargs("fetch")):
                with attempt:
                    before = download.offset
                    try:
                        download.run(out, digest)
                    except ServerError as error:
                        if resume_while_progressing and download.offset > before:
                            raise _Progressed(str(error)) from None
                        raise
            return
        except _Progressed as progressed:
            resumes += 1
            if resumes > max_resumes:
                raise ServerError(
                    f"{progressed}; the transfer was cut {resumes} times while progressing "
                    f"(max_resumes={max_resumes})"
                ) from None
            log.info(
                "%s; resuming at byte %d (cut %d while progressing)", progressed, download.offset, resumes
            )


def fetch_url(
    url_provider: Callable[[], str] | str,
    destination: Destination,
    *,
    headers: Mapping[str, str] | None = None,
    decompress: bool = True,
    retry: RetryPolicy | None = None,
    timeout: tuple[float, float] = (10.0, 300.0),
    session: requests.Session | None = None,
    url_refreshes: int = 1,
    resume_while_progressing: bool = False,
    max_resumes: int = 100,
) -> FetchRecord:
    """Stream a result to ``destination`` and return what was written.

    :param url_provider: the URL, or a callable returning a fresh one (called once first, and once
        more when the host refuses the URL as expired).
    :param destination: a local path, a ``file://``/``s3://``/``gs://``... URI or an
        ``ObjectStoragePath``.
    :param headers: headers to send (none by default: result hosts get no credentials).
    :param decompress: decode gzip payloads (detected by magic bytes or ``Content-Encoding``).
    :param retry: retry policy for interrupted downloads and 5xx answers (resumed with ``Range``).
    :param timeout: (connect, read) seconds.
    :param session: a ``requests.Session`` to use.
    :param url_refreshes: how many times an expired URL may be replaced by ``url_provider``.
    :param resume_while_progressing: a transfer cut after it wrote more bytes (a host that ends
        every response after a fixed time, as Adobe Data Access does at 60 s) resumes at once
        with ``Range`` without spending one of ``retry``'s attempts; cuts that make no progress
        spend them as usual.
    :param max_resumes: how many such progressing cuts one fetch may have in all (then it fails).
    """
    provider = url_provider if callable(url_provider) else (lambda: str(url_provider))
    target = AtomicTarget(destination)
    owns_session = session is None
    if session is None:
        import requests

        session = requests.Session()
    http = session
    digest = _Digest()
    try:
        download = _Download(provider, headers, decompress, timeout, http, url_refreshes)
        with target.open() as out:
            try:
                _run_with_retries(
                    download, out, digest, retry or RetryPolicy(), resume_while_progressing, max_resumes
                )
                digest.finish(out)
            finally:
                digest.close()
        target.commit()
    except BaseException:
        target.discard()
        raise
    finally:
        if owns_session:
            http.close()
    record = FetchRecord(
        uri=target.uri,
        bytes=digest.size,
        sha256=digest.sha.hexdigest(),
        lines=digest.line_count,
        source=redact_url(download.url),
        compressed=bool(download.gzip),
    )
    log.info("Fetched %s -> %s (%d bytes, %d lines)", record.source, record.uri, record.bytes, record.lines)
    return record
