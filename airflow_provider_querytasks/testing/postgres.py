"""A throwaway PostgreSQL server standing in for Query Service's PostgreSQL interface.

The Adobe emulator's ``GET /connection_parameters`` points at it (see
:meth:`~.adobe_query_service.AdobeQueryServiceEmulator.attach_postgres`): one database per sandbox
named as Query Service names them (``prod:all``), a login role named as the IMS organisation
(``<ORG>@AdobeOrg``) whose password is the emulator's current IMS token (changed, and the role's
sessions ended, when the token changes), a statement timeout set on that role, and a few
Experience-Platform-like tables.

Where the server binaries come from, in order: ``QUERYTASKS_PG_BINDIR``; the newest
``/usr/lib/postgresql/*/bin`` (Debian's packages); ``initdb`` on ``PATH``; the binaries the
``pgserver`` wheel ships (pip-installable, no root: the ``test`` extra brings it), so a fresh
machine needs nothing but pip. The server is started with ``initdb`` + ``pg_ctl`` (as
``scripts/e2e-distributed`` does), listens on 127.0.0.1 only (a port the OS picks) and on a Unix
socket in a private folder; the admin role connects through the socket (trust), clients over TCP
with a password (SCRAM). Run as root, the server runs as the ``postgres`` user (created if
missing): PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

#: The admin role (Unix socket, trust): the emulator's own, never handed to clients.
ADMIN_ROLE = "qs_emulator_admin"
#: System user the server runs as when this process is root.
SERVER_USER = "postgres"

#: Experience-Platform-like tables created in every sandbox database (``<sandbox>:all``). XDM
#: field groups are flattened to snake_case columns (Query Service shows nested XDM as structs;
#: ``SET auto_to_json=true`` turns them into JSON, as the ``identity_map`` column here is).
SEED_SQL = """
CREATE TABLE web_events (
    _id text PRIMARY KEY,
    "timestamp" timestamptz NOT NULL,
    ecid text NOT NULL,
    page_name text NOT NULL,
    page_views integer NOT NULL,
    commerce_order_total numeric(10, 2),
    identity_map jsonb
);
INSERT INTO web_events
SELECT 'evt-' || lpad(i::text, 6, '0'),
       timestamptz '2026-11-19 00:00:00+00' + (i * interval '173 seconds'),
       'ecid-' || (i % 97),
       (ARRAY['home', 'product', 'cart', 'checkout', 'search'])[1 + i % 5],
       1 + i % 3,
       CASE WHEN i % 5 = 3 THEN round((i % 250)::numeric + 0.99, 2) END,
       jsonb_build_object('ECID', jsonb_build_array(jsonb_build_object('id', 'ecid-' || (i % 97))))
FROM generate_series(1, 1000) AS i;

CREATE TABLE profile_snapshot (
    ecid text PRIMARY KEY,
    email_domain text,
    loyalty_tier text NOT NULL,
    lifetime_value numeric(12, 2) NOT NULL
);
INSERT INTO profile_snapshot
SELECT 'ecid-' || i, (ARRAY['example.com', 'example.org', NULL])[1 + i % 3],
       (ARRAY['bronze', 'silver', 'gold'])[1 + i % 3], (i * 37 % 5000)::numeric + 0.5
FROM generate_series(0, 96) AS i;

-- A dataset with bad rows: a NULL identity, a negative total, a duplicate id (data-quality checks fail).
CREATE TABLE web_events_unvalidated AS SELECT * FROM web_events WHERE false;
INSERT INTO web_events_unvalidated VALUES
    ('evt-a', '2026-11-19 01:00:00+00', 'ecid-1', 'home', 1, NULL, NULL),
    ('evt-b', '2026-11-19 02:00:00+00', NULL, 'cart', 2, -5.00, NULL),
    ('evt-b', '2026-11-19 03:00:00+00', 'ecid-2', 'checkout', 1, 19.99, NULL);
"""


def find_bindir() -> Path:
    """The folder of ``initdb``, ``pg_ctl`` and ``psql`` (see the module docstring for the order).

    :raises RuntimeError: when no PostgreSQL server binaries are found, saying how to get them.
    """
    candidates: list[Path] = []
    if os.environ.get("QUERYTASKS_PG_BINDIR"):
        candidates.append(Path(os.environ["QUERYTASKS_PG_BINDIR"]))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    candidates.extend(path.parent for path in reversed(debian))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    # The pgserver wheel's binaries, found without importing it (its import has side effects).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise RuntimeError(
        "PostgreSQL server binaries not found: install the test extra (it brings the pgserver "
        "wheel: pip install 'airflow-provider-querytasks[test]'), or PostgreSQL itself "
        "(apt-get install postgresql), or set QUERYTASKS_PG_BINDIR to the folder holding initdb"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_user() -> str | None:
    """The unprivileged user to run the server as when this process is root, else ``None``."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(  # noqa: S603
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],  # noqa: S607
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier (double-quoted)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as an SQL string literal (single-quoted)."""
    return "'" + value.replace("'", "''") + "'"


class LocalPostgres:
    """One throwaway cluster (``initdb`` + ``pg_ctl``) on 127.0.0.1.

    :param statement_timeout: seconds a client statement may run (Query Service: 600); set on the
        login roles, so the server itself cancels longer statements.
    :param root: folder for the cluster (a private temporary folder by default; removed by :meth:`stop`).
    """

    def __init__(self, *, statement_timeout: float = 600.0, root: Path | None = None) -> None:
        self.statement_timeout = statement_timeout
        self.bindir = find_bindir()
        self.root = root or Path(tempfile.mkdtemp(prefix="querytasks-pg-"))
        self._own_root = root is None
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.host = "127.0.0.1"
        self.port = 0
        self.user = _server_user()
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def _run(self, *command: str) -> None:
        result = subprocess.run(  # noqa: S603 (our own arguments)
            [str(self.bindir / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            user=self.user,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C"},
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def start(self) -> LocalPostgres:
        """Create the cluster (initdb), start the server on 127.0.0.1 and wait until it accepts
        connections; returns ``self``."""
        self.root.chmod(0o700)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            owner = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            ADMIN_ROLE,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-locale",
        )
        for _attempt in range(3):  # the port is free when picked; another process may take it first
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100 "
                "-c log_min_messages=warning -c log_statement=none"
            )
            log = str(self.root / "postgresql.log")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, "start")
                break
            except RuntimeError:
                if (self.data / "postmaster.pid").exists():
                    raise
        else:
            raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'postgresql.log'}")
        self._started = True
        return self

    def stop(self) -> None:
        """Stop the server (immediate shutdown); its folder stays for the caller to remove."""
        if self._started and (self.data / "postmaster.pid").exists():
            with suppress(RuntimeError, subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._started = False
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- administration -----------------------------------------------------------------------
    @contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[Any]:
        """A cursor of the admin role (autocommit) on ``dbname``, through the Unix socket."""
        import psycopg2

        connection = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user=ADMIN_ROLE, dbname=dbname
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                yield cursor
        finally:
            connection.close()

    def add_login_role(self, role: str, password: str | None) -> None:
        """A login role (no password: it cannot log in until :meth:`set_password`); an existing
        role is kept (several emulators may share one server)."""
        timeout_ms = int(self.statement_timeout * 1000)
        with self.admin() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE ROLE {quote_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
            cursor.execute(f"ALTER ROLE {quote_ident(role)} SET statement_timeout = {timeout_ms}")
        if password:
            self.set_password(role, password)

    def set_password(self, role: str, password: str | None) -> None:
        """Set (or with ``None`` remove) the role's password. The statement is not logged."""
        value = "NULL" if password is None else quote_literal(password)
        with self.admin() as cursor:
            cursor.execute(f"ALTER ROLE {quote_ident(role)} PASSWORD {value}")

    def end_sessions(self, role: str) -> int:
        """End every session of ``role`` (as a server ending expired sessions); how many ended."""
        with self.admin() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def add_database(self, name: str, owner: str, seed: Iterable[str] = (SEED_SQL,)) -> None:
        """A database (``prod:all``) owned by the admin, readable and writable by ``owner``."""
        with self.admin() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is not None:  # a second emulator on the same server
                return
            cursor.execute(f"CREATE DATABASE {quote_ident(name)}")
            cursor.execute(
                f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(name)} TO {quote_ident(owner)}"
            )
        with self.admin(name) as cursor:
            for statement in seed:
                cursor.execute(statement)
            cursor.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {quote_ident(owner)}")
            cursor.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {quote_ident(owner)}")

    def psql(self) -> Path:
        """The ``psql`` client of the same installation (benchmarks compare against it)."""
        return self.bindir / "psql"
