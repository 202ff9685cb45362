"""An object-storage host serving presigned URLs (stand-in for Amazon S3 and Aliyun OSS).

Result files of the platforms live on such a host, not on the API host. It answers like the real
services where it matters to a client: a presigned URL expires (403 with an XML error body),
``Range`` requests get 206, ``Content-Encoding: gzip`` is set when asked, and any request that
carries a platform credential header is refused with 403, so a leaked token fails a test.
"""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from airflow_provider_querytasks.testing.server import TRUNCATE_MARK

#: Produces the bytes of a generated object, chunk by chunk (for objects too big to hold).
ChunkSource = Callable[[], Iterator[bytes]]


@dataclass
class StoredObject:
    """An object on the emulated storage host."""

    key: str
    size: int
    content_type: str
    content_encoding: str | None
    data: bytes | None = None
    source: ChunkSource | None = None

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The object's bytes from ``start`` to ``end`` (inclusive), in chunks."""
        stop = self.size if end is None else end + 1
        if self.data is not None:
            for offset in range(start, stop, 1 << 20):
                yield self.data[offset : min(offset + (1 << 20), stop)]
            return
        assert self.source is not None
        position = 0
        for chunk in self.source():
            chunk_end = position + len(chunk)
            if chunk_end > start and position < stop:
                yield chunk[max(0, start - position) : min(len(chunk), stop - position)]
            position = chunk_end
            if position >= stop:
                return


class ObjectStorageSite:
    """A presigned-URL object host.

    :param forbidden_headers: request headers that must never reach this host (the platform's
        credentials: ``Access-Token``, ``x-amz-access-token``, ``Authorization``...). A request
        carrying one gets 403 and is counted in :attr:`leaks`.
    :param style: ``s3`` or ``oss``: the query-string signature names and error texts.
    :param default_ttl: lifetime of a presigned URL in seconds.
    """

    def __init__(
        self,
        *,
        forbidden_headers: tuple[str, ...] = ("Authorization",),
        style: str = "s3",
        default_ttl: float = 300.0,
    ) -> None:
        self.forbidden_headers = tuple(h.lower() for h in forbidden_headers)
        self.style = style
        self.default_ttl = default_ttl
        self.objects: dict[str, StoredObject] = {}
        self.leaks: list[dict[str, str]] = []
        self.base_url = ""
        self._generation = 0

    # -- content ------------------------------------------------------------------------------
    def put(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream", gzip: bool = False
    ) -> StoredObject:
        """Store bytes; with ``gzip=True`` they are compressed and served with Content-Encoding."""
        body = gzip_module.compress(data) if gzip else data
        obj = StoredObject(key, len(body), content_type, "gzip" if gzip else None, data=body)
        self.objects[key] = obj
        return obj

    def put_generated(
        self, key: str, size: int, source: ChunkSource, *, content_type: str = "application/octet-stream"
    ) -> StoredObject:
        """Store an object whose bytes are produced on each request (for large objects)."""
        obj = StoredObject(key, size, content_type, None, source=source)
        self.objects[key] = obj
        return obj

    def presign(self, key: str, ttl: float | None = None) -> str:
        """A presigned URL for ``key`` that expires after ``ttl`` seconds."""
        expires = int(time.time() + (self.default_ttl if ttl is None else ttl))
        signature = hashlib.sha256(f"{key}:{expires}:{self._generation}".encode()).hexdigest()[:32]
        if self.style == "oss":
            params = {"OSSAccessKeyId": "LTAIemulator", "Expires": str(expires), "Signature": signature}
        else:
            params = {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Expires": str(int(ttl or self.default_ttl)),
                "X-Amz-Date": str(expires),
                "X-Amz-Signature": signature,
            }
        params["gen"] = str(self._generation)
        return f"{self.base_url}/{key}?{urlencode(params)}"

    def expire_all(self) -> None:
        """Make every URL presigned so far answer 403 (expired)."""
        self._generation += 1

    # -- serving ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The storage host's ``aiohttp`` application (GET and HEAD of an object)."""
        application = web.Application()
        application.router.add_route("GET", "/{key:.+}", self._get)
        application.router.add_route("HEAD", "/{key:.+}", self._get)
        return application

    def _error(self, status: int, code: str, message: str) -> web.Response:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>{uuid.uuid4().hex}</RequestId></Error>"
        )
        return web.Response(status=status, text=body, content_type="application/xml")

    def _expired(self, request: web.Request) -> bool:
        if request.query.get("gen") != str(self._generation):
            return True
        expires = request.query.get("Expires") or request.query.get("X-Amz-Date")
        return expires is None or int(expires) < time.time()

    async def _get(self, request: web.Request) -> web.StreamResponse:
        leaked = {h: v for h, v in request.headers.items() if h.lower() in self.forbidden_headers}
        if leaked:
            self.leaks.append(leaked)
            return self._error(403, "AccessDenied", "Credential header sent to the storage host")
        if self._expired(request):
            message = "The signed URL has expired" if self.style == "oss" else "Request has expired"
            return self._error(403, "AccessDenied", message)
        obj = self.objects.get(request.match_info["key"])
        if obj is None:
            return self._error(404, "NoSuchKey", "The specified key does not exist.")
        start, end, status = 0, obj.size - 1, 200
        range_header = request.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            first, _, last = range_header[6:].partition("-")
            start = int(first or 0)
            end = min(int(last), obj.size - 1) if last else obj.size - 1
            if start >= obj.size:
                return self._error(416, "InvalidRange", "The requested range is not satisfiable")
            status = 206
        response = web.StreamResponse(status=status)
        response.content_type = obj.content_type
        response.content_length = end - start + 1
        response.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        if obj.content_encoding:
            response.headers["Content-Encoding"] = obj.content_encoding
        await response.prepare(request)
        if request.method == "GET":
            cut_at = (end - start + 1) // 2 if request.get(TRUNCATE_MARK) else None
            sent = 0
            for chunk in obj.chunks(start, end):
                if cut_at is not None and sent + len(chunk) > cut_at:
                    await response.write(chunk[: cut_at - sent])
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write(chunk)
                sent += len(chunk)
        await response.write_eof()
        return response
