"""A PostgreSQL wire-protocol proxy that makes a plain PostgreSQL server behave as Query Service's
PostgreSQL interface does at its limits (docs/adobe_sql.md, "The emulator").

It sits between a client and a :class:`~.postgres.LocalPostgres` on 127.0.0.1, forwards bytes and
parses only the v3 message framing (a type byte and an int32 length; the startup packet, the
SSLRequest and the CancelRequest have no type byte). It enforces, taking the least convenient
reading the spec allows:

- **TLS**: an SSLRequest is answered ``S`` and the session is encrypted with a self-signed
  certificate made at start, so a client's ``sslmode=require`` is really exercised (the proxy
  talks plain TCP to the server behind it);
- **LIMIT over 100,000**: a statement whose SQL has such a ``LIMIT`` (simple ``Query``, extended
  ``Parse``, inside ``DECLARE ... CURSOR FOR``) is refused with ``53400`` before it runs;
- **the default row cap**: a simple ``Query`` without ``LIMIT`` returns at most ``row_cap``
  (50,000) rows a result set, silently cut (the ``CommandComplete`` tag says the cut count); for a
  cursor (``DECLARE``/``FETCH``) the cap is the cursor's total across all its ``FETCH`` statements.
  ``LIMIT 0`` lifts the cap: it is sent to PostgreSQL as ``LIMIT ALL``;
- **the statement timeout**: ``statement_timeout`` is set on every session (startup
  ``options``), and PostgreSQL's ``57014`` statement-timeout error reaches the client as
  Query Service's ``53400``;
- **COPY**: Adobe does not document ``COPY ... TO STDOUT``, so every ``COPY`` is refused with
  ``0A000`` unless the proxy is built with ``copy=True`` (tests of the copy path, the benchmark).

A refused statement is swapped for one that fails during parse analysis on an unknown relation;
that error is rewritten to the refusal's SQLSTATE (``53400``, ``0A000``) on its way back.
PostgreSQL therefore keeps the protocol state (an aborted transaction, messages skipped until
``Sync``) exactly as for a real error.

Not enforced: the row cap for the extended protocol (psycopg2, the hook's driver, uses the simple
one) and for ``COPY ... TO STDOUT`` where it is let through, a ``LIMIT $1`` parameter,
and a client's own ``SET statement_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
import ssl
import struct
import sys
import tempfile
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_querytasks.testing.server import BackgroundLoop

#: Query Service's interactive limits (the API note, section 5.2): the emulator's own copy, which
#: tests/test_emulator_facts.py compares with the client's.
SQL_ROW_CAP = 50_000
SQL_MAX_LIMIT = 100_000
SQL_STATEMENT_TIMEOUT = 600.0
SQL_LIMIT_SQLSTATE = "53400"
#: Startup-phase request codes (the int32 after the length).
PROTOCOL_V3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
#: Whether this Python's asyncio streams can upgrade a connection to TLS (3.11+).
TLS_AVAILABLE = sys.version_info >= (3, 11)
#: The relation a refused statement is swapped for (its "does not exist" error is rewritten).
REFUSED = "querytasks refused "

_HEADER = struct.Struct("!cI")
_LIMIT = re.compile(r"\blimit\s+(\d+|all)\b", re.IGNORECASE)
_HAS_LIMIT = re.compile(r"\blimit\b", re.IGNORECASE)
_IDENT = r'("(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_DECLARE = re.compile(rf"^\s*declare\s+{_IDENT}\s.*?\bcursor\b(.*?)\bfor\b", re.IGNORECASE | re.DOTALL)
_FETCH = re.compile(rf"^\s*fetch\b.*?\b(?:from|in)\s+{_IDENT}\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_CLOSE = re.compile(rf"^\s*close\s+{_IDENT}", re.IGNORECASE)
_COPY = re.compile(r"^\s*copy\b", re.IGNORECASE)
#: What a server that does not take ``COPY`` answers: feature not supported.
COPY_REFUSED_SQLSTATE = "0A000"
_TAG_COUNT = re.compile(rb"^(SELECT|FETCH) \d+$")


# -- SQL text ------------------------------------------------------------------------------------
def mask_sql(sql: str, *, identifiers: bool = True) -> str:
    """``sql`` with string literals, comments and (with ``identifiers``) quoted identifiers
    blanked, the length kept, so keywords are searched in code only."""
    out = list(sql)
    i, n = 0, len(sql)

    def blank(start: int, end: int) -> None:
        for k in range(start, min(end, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            blank(i, end)
            i = end
        elif c == "'" or (c == '"' and identifiers):
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:  # a doubled quote
                        end += 2
                        continue
                    break
                end += 1
            blank(i, end + 1)
            i = end + 1
        elif c == "$":
            tag = re.match(r"\$[A-Za-z_]*\$", sql[i:])
            if tag is None:
                i += 1
                continue
            end = sql.find(tag.group(), i + len(tag.group()))
            end = n if end < 0 else end + len(tag.group())
            blank(i, end)
            i = end
        else:
            i += 1
    return "".join(out)


def over_limit(sql: str, max_limit: int = SQL_MAX_LIMIT) -> int | None:
    """The first ``LIMIT n`` in ``sql``'s code with ``n > max_limit``, else ``None``."""
    for match in _LIMIT.finditer(mask_sql(sql)):
        value = match.group(1)
        if value.isdigit() and int(value) > max_limit:
            return int(value)
    return None


def has_limit(sql: str) -> bool:
    """Whether ``sql``'s code has a ``LIMIT`` (which then decides the row count, not the cap)."""
    return bool(_HAS_LIMIT.search(mask_sql(sql)))


def lift_limit_zero(sql: str) -> str:
    """``LIMIT 0`` (Query Service: no row cap) as PostgreSQL's ``LIMIT ALL``."""
    masked = mask_sql(sql)
    parts: list[str] = []
    last = 0
    for match in _LIMIT.finditer(masked):
        if match.group(1).isdigit() and int(match.group(1)) == 0:
            parts.append(sql[last : match.start()])
            parts.append("LIMIT ALL")
            last = match.end()
    return "".join(parts) + sql[last:] if parts else sql


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


# -- messages ------------------------------------------------------------------------------------
def message(kind: bytes, payload: bytes) -> bytes:
    """One framed message: type byte, int32 length (itself included), payload."""
    return kind + struct.pack("!I", len(payload) + 4) + payload


def split_messages(
    buffer: bytes | bytearray | memoryview, start: int = 0
) -> tuple[list[tuple[bytes, int, int]], int]:
    """The complete messages in ``buffer`` from ``start``: ``(type, payload start, payload end)``
    each, and the offset where an incomplete one begins."""
    found: list[tuple[bytes, int, int]] = []
    pos, n = start, len(buffer)
    unpack = _HEADER.unpack_from
    while pos + 5 <= n:
        kind, length = unpack(buffer, pos)
        end = pos + 1 + length
        if end > n:
            break
        found.append((kind, pos + 5, end))
        pos = end
    return found, pos


def error_fields(payload: bytes) -> dict[str, str]:
    """An ErrorResponse's (or NoticeResponse's) fields by their code letter."""
    fields: dict[str, str] = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def error_response(sqlstate: str, text: str, detail: str | None = None) -> bytes:
    """An ErrorResponse message (severity ERROR)."""
    fields = [b"SERROR", b"VERROR", b"C" + sqlstate.encode(), b"M" + text.encode()]
    if detail:
        fields.append(b"D" + detail.encode())
    return message(b"E", b"\0".join(fields) + b"\0\0")


def query_text(payload: bytes) -> str:
    """The SQL of a ``Query`` payload."""
    return payload.rstrip(b"\0").decode("utf-8", "replace")


def parse_parts(payload: bytes) -> tuple[bytes, str, bytes]:
    """A ``Parse`` payload as statement name, SQL and the rest (parameter types)."""
    name_end = payload.index(b"\0")
    sql_end = payload.index(b"\0", name_end + 1)
    return (
        payload[:name_end],
        payload[name_end + 1 : sql_end].decode("utf-8", "replace"),
        payload[sql_end + 1 :],
    )


def startup_with_options(payload: bytes, extra: str) -> bytes:
    """A v3 startup packet's payload (after the length) with ``extra`` added to ``options``."""
    protocol = payload[:4]
    items = payload[4:].split(b"\0")
    pairs = dict(zip(items[0::2], items[1::2], strict=False))
    pairs.pop(b"", None)
    options = pairs.get(b"options", b"")
    pairs[b"options"] = (options + b" " + extra.encode()).strip()
    body = b"".join(key + b"\0" + value + b"\0" for key, value in pairs.items()) + b"\0"
    return protocol + body


# -- TLS -----------------------------------------------------------------------------------------
def self_signed_context(folder: Path) -> ssl.SSLContext:
    """A server TLS context with a throwaway self-signed certificate for 127.0.0.1/localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "querytasks emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


# -- the proxy -----------------------------------------------------------------------------------
@dataclass
class _Cursor:
    """A declared cursor's remaining row budget (``None``: uncapped)."""

    remaining: int | None
    hold: bool = False


@dataclass
class _Policy:
    """What applies to the results of one ``Query`` (or up to one ``Sync``)."""

    cap: int | None = None
    cursor: _Cursor | None = None


@dataclass
class _Session:
    cursors: dict[str, _Cursor] = field(default_factory=dict)
    policies: deque[_Policy] = field(default_factory=deque)
    refusals: dict[str, tuple[str, str]] = field(default_factory=dict)
    ready: bool = False  # after the first ReadyForQuery


class PostgresWireProxy:
    """Query Service's limits in front of a plain PostgreSQL server (see the module docstring).

    Runs an asyncio loop in a background thread, listening on 127.0.0.1 (a port the OS picks).

    :param upstream_host: the PostgreSQL server's host.
    :param upstream_port: the PostgreSQL server's port.
    :param row_cap: rows a statement without ``LIMIT`` returns (Query Service: 50,000); ``None``
        for no cap.
    :param max_limit: the largest ``LIMIT`` accepted (Query Service: 100,000).
    :param statement_timeout: seconds a statement may run (Query Service: 600); ``None`` leaves the
        server's setting.
    :param tls: answer an SSLRequest with TLS (a self-signed certificate); ``False`` answers ``N``
        (the default before Python 3.11, whose streams cannot start TLS).
    :param copy: pass ``COPY`` statements on. Adobe does not document ``COPY ... TO STDOUT``, so
        by default (``False``) the proxy refuses every ``COPY`` with ``0A000``, as a server that
        does not take it would: the least convenient reading.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        row_cap: int | None = SQL_ROW_CAP,
        max_limit: int = SQL_MAX_LIMIT,
        statement_timeout: float | None = SQL_STATEMENT_TIMEOUT,
        tls: bool = TLS_AVAILABLE,
        copy: bool = False,
    ) -> None:
        self.upstream_host = upstream_host
        self.copy = copy
        self.upstream_port = upstream_port
        self.row_cap = row_cap
        self.max_limit = max_limit
        self.statement_timeout = statement_timeout
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = 0
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._background = BackgroundLoop("pgwire-proxy")
        self._server: asyncio.Server | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> PostgresWireProxy:
        """Listen from a background thread; returns once the port is bound."""
        if self.tls:
            self._folder = tempfile.TemporaryDirectory(prefix="querytasks-pgwire-")
            self._ssl = self_signed_context(Path(self._folder.name))
        self._background.start(self._listen, self._close)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        sessions = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    def stop(self) -> None:
        """Stop listening and end the thread (open sessions end with it)."""
        self._background.stop(timeout=10)
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> PostgresWireProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one session --------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            startup = await self._startup(reader, writer)
            if startup is None:
                return
            up_reader, upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            if struct.unpack("!I", startup[4:8])[0] == CANCEL_REQUEST:
                upstream.write(startup)  # the server's own cancel key, passed on unchanged
                await upstream.drain()
                return
            payload = startup[4:]
            if self.statement_timeout is not None:
                payload = startup_with_options(
                    payload, f"-c statement_timeout={int(self.statement_timeout * 1000)}"
                )
            upstream.write(struct.pack("!I", len(payload) + 4) + payload)
            session = _Session()
            tasks = [
                asyncio.ensure_future(self._from_client(reader, upstream, session)),
                asyncio.ensure_future(self._from_server(up_reader, writer, session)),
            ]
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for stream in (upstream, writer):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()

    async def _startup(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """Answer SSLRequest/GSSENCRequest; the startup (or cancel) packet that follows, whole."""
        while True:
            head = await reader.readexactly(4)
            (length,) = struct.unpack("!I", head)
            if not 8 <= length <= 10_000:
                return None
            body = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code == SSL_REQUEST and self._ssl is not None:
                writer.write(b"S")
                await writer.drain()
                # StreamWriter.start_tls is Python 3.11+ (tls is off by default before it).
                await writer.start_tls(self._ssl)  # type: ignore[attr-defined,unused-ignore]
            elif code in (SSL_REQUEST, GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
            else:
                return head + body

    async def _from_client(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, session: _Session
    ) -> None:
        buffer = bytearray()
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            buffer += chunk
            found, rest = split_messages(buffer)
            if not found:
                continue
            out = bytearray()
            for kind, start, end in found:
                if kind == b"Q":
                    sql = query_text(bytes(buffer[start:end]))
                    sent = self._query(sql, session)
                    # Unchanged SQL goes on as the client's bytes (whatever its encoding).
                    out += buffer[start - 5 : end] if sent == sql else message(b"Q", sent.encode() + b"\0")
                elif kind == b"P":
                    name, sql, rest_of = parse_parts(bytes(buffer[start:end]))
                    sent = self._check(sql, session)
                    if sent == sql:
                        out += buffer[start - 5 : end]
                    else:
                        out += message(b"P", name + b"\0" + sent.encode() + b"\0" + rest_of)
                else:
                    if kind in (b"S", b"F"):  # a Sync or function call ends in one ReadyForQuery
                        session.policies.append(_Policy())
                    out += buffer[start - 5 : end]
            del buffer[:rest]
            upstream.write(bytes(out))
            await upstream.drain()

    def _check(self, sql: str, session: _Session) -> str:
        """``sql`` to send on: a refused one swapped, ``LIMIT 0`` as ``LIMIT ALL``."""
        if not self.copy and _COPY.match(mask_sql(sql, identifiers=False)):
            return self._refuse(session, COPY_REFUSED_SQLSTATE, "COPY is not supported")
        limit = over_limit(sql, self.max_limit)
        if limit is not None:
            return self._refuse(
                session,
                SQL_LIMIT_SQLSTATE,
                f"LIMIT {limit} exceeds the maximum of {self.max_limit} rows for an interactive query "
                "(use LIMIT 0 for no row cap, or a batch query for large results)",
            )
        return lift_limit_zero(sql)

    @staticmethod
    def _refuse(session: _Session, sqlstate: str, text: str) -> str:
        """A statement that fails at parse analysis, its error to be answered as ``sqlstate``."""
        token = uuid.uuid4().hex
        session.refusals[token] = (sqlstate, text)
        return f'SELECT 1 FROM "{REFUSED}{token}"'  # noqa: S608 (a uuid, no user input)

    def _query(self, sql: str, session: _Session) -> str:
        """Decide the row policy of a simple ``Query`` (before its LIMIT 0 is rewritten)."""
        sent = self._check(sql, session)
        policy = _Policy()
        code = mask_sql(sql, identifiers=False)  # cursor names may be quoted
        declare, fetch, close = _DECLARE.match(code), _FETCH.match(code), _CLOSE.match(code)
        capped = None if self.row_cap is None or has_limit(sql) else self.row_cap
        if declare is not None:
            hold = "hold" in declare.group(2).lower() and "without hold" not in declare.group(2).lower()
            name = _unquote(sql[declare.start(1) : declare.end(1)])
            session.cursors[name] = _Cursor(capped, hold)
        elif fetch is not None:
            name = _unquote(sql[fetch.start(1) : fetch.end(1)])
            policy.cursor = session.cursors.get(name)
        elif close is not None:
            session.cursors.pop(_unquote(sql[close.start(1) : close.end(1)]), None)
        else:
            policy.cap = capped
        session.policies.append(policy)
        return sent

    async def _from_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: _Session
    ) -> None:
        buffer = b""
        policy: _Policy | None = None
        rows = 0  # rows of the current result set sent on
        cut = False
        while True:
            chunk = await reader.read(1 << 18)
            if not chunk:
                return
            buffer = buffer + chunk if buffer else chunk
            changed = False
            out: list[bytes] = []
            copied = 0  # buffer[copied:] not yet accounted for in ``out``
            # One pass over the headers (DataRows are most messages: the common case is short).
            pos, size, unpack = 0, len(buffer), _HEADER.unpack_from
            while pos + 5 <= size:
                kind, length = unpack(buffer, pos)
                start, end = pos + 5, pos + 1 + length
                if end > size:
                    break
                pos = end
                if kind == b"D":
                    if policy is None:  # the Query may have been sent after the last ReadyForQuery
                        policy = session.policies[0] if session.policies else None
                        if policy is None:
                            continue
                    budget = policy.cap if policy.cursor is None else policy.cursor.remaining
                    if budget is None or rows < budget:
                        rows += 1
                        continue
                    replacement: bytes | None = b""  # over the cap: silently cut
                    cut = True
                elif kind == b"C":
                    replacement = None
                    if policy is None:
                        policy = session.policies[0] if session.policies else None
                    if (
                        policy is not None
                        and policy.cursor is not None
                        and policy.cursor.remaining is not None
                    ):
                        policy.cursor.remaining -= rows
                    tag = buffer[start : end - 1]
                    if cut and _TAG_COUNT.match(tag):
                        replacement = message(b"C", tag.split(b" ")[0] + b" %d\0" % rows)
                    rows, cut = 0, False
                    if replacement is None:
                        continue
                elif kind == b"E":
                    rows, cut = 0, False
                    replacement = self._rewrite_error(buffer[start:end], session)
                    if replacement is None:
                        continue
                elif kind == b"Z":
                    rows, cut = 0, False
                    if session.ready and session.policies:
                        session.policies.popleft()  # that Query's results are over
                    if buffer[start : start + 1] == b"I":  # transaction over: its cursors too
                        session.cursors = {k: c for k, c in session.cursors.items() if c.hold}
                    session.ready = True
                    policy = None  # the next Query's, looked up when its results come
                    continue
                else:
                    continue
                changed = True
                assert replacement is not None
                out.append(buffer[copied : start - 5])
                out.append(replacement)
                copied = end
            rest = pos  # an incomplete message waits for the next chunk
            if changed:
                out.append(buffer[copied:rest])
                writer.write(b"".join(out))
            else:
                writer.write(buffer[:rest] if rest < len(buffer) else buffer)
            buffer = buffer[rest:]
            await writer.drain()

    def _rewrite_error(self, payload: bytes, session: _Session) -> bytes | None:
        """Query Service's error for a refused statement or a statement timeout, else ``None``."""
        fields = error_fields(payload)
        text = fields.get("M", "")
        if REFUSED in text:
            token = text.split(REFUSED, 1)[1][:32]
            refused = session.refusals.pop(token, None)
            if refused is not None:
                return error_response(*refused)
        if fields.get("C") == "57014" and "statement timeout" in text:
            limit = self.statement_timeout or 0
            return error_response(
                SQL_LIMIT_SQLSTATE,
                f"Query timed out: the statement ran over the {limit:g} s statement timeout "
                "of an interactive query",
            )
        return None


def iter_payloads(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every complete message in ``data`` as ``(type, payload)`` (tests and debugging)."""
    found, _rest = split_messages(data)
    for kind, start, end in found:
        yield kind, data[start:end]
