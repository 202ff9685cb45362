"""End to end on a production topology: many processes, nothing shared but the metadata DB.

Usage: ``python scripts/e2e_distributed.py`` with the Python of an Airflow 3.3 environment that
has this provider, the Celery provider and psycopg2 (``scripts/e2e-distributed VENV`` installs
what is missing, then runs this). From nothing it starts a throwaway PostgreSQL cluster (the
metadata DB) and Redis (the Celery broker), both reachable only through Unix sockets in private
folders, then Airflow as a deployment runs it: api-server, dag-processor, scheduler with the
CeleryExecutor, **two Celery workers** (queues ``default`` + ``worker1`` / ``worker2``) and **two
triggerers**, each with its own log-server port. The emulators run in this process.

Scenarios, one line each (it reuses ``scripts/e2e.py`` for the example DAGs and the checks):

1. every example DAG, the failing and the killed query, and the notification-driven DAG, with
   the same checks as ``scripts/e2e`` (states, deferral, files, no duplicate submission, remote
   cancel);
2. ``e2e_shoplazza_oauth_relay``: four exports in a row over an OAuth connection, alternating
   between the workers, each waiting in whichever triggerer takes it, against a shop that
   rotates the refresh token on every refresh and invalidates the old one;
3. ``e2e_data_kiosk_many_waits``: 90 deferred waits on one Data Kiosk account, spread over both
   triggerers; prints the HTTP 429 answers the emulator gave;
4. ``e2e_triggerer_killed``: SIGKILL the triggerer (its whole process tree) holding a wait; its
   waits move to the other triggerer and succeed, nothing is submitted twice;
5. ``e2e_worker_killed``: SIGKILL the worker (its whole process tree) running a worker-mode wait;
   the task's retry re-attaches to the running query instead of submitting it again;
6. no secret (client secrets, refresh and access tokens the emulators issued) in any log:
   components' output, task logs, trigger logs, DAG processing logs.

Everything is stopped and removed at the end, also on failure or SIGTERM
(``QUERYTASKS_E2E_KEEP=1`` keeps the Airflow home, with every log, of a failed run).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg2  # installed by scripts/e2e-distributed (scripts/bootstrap) before this runs
from e2e import E2E, free_port

SCRIPTS = Path(__file__).resolve().parent
SCENARIO_DAGS = SCRIPTS.parent / "tests" / "e2e" / "e2e_many_processes.py"
#: Names each component (the host name Airflow records for jobs and task tries).
COMPONENT_VARIABLE = "QUERYTASKS_E2E_COMPONENT"
OAUTH = "e2e_shoplazza_oauth_relay"
MANY = "e2e_data_kiosk_many_waits"
TRIGGERER_KILLED = "e2e_triggerer_killed"
WORKER_KILLED = "e2e_worker_killed"
SCENARIOS = (OAUTH, MANY, TRIGGERER_KILLED, WORKER_KILLED)
MANY_WAITS = 90
#: Triggers each triggerer takes: fewer than MANY_WAITS, so the waits must spread over both (the
#: sensors defer at once, and one triggerer's first load would otherwise take them all), with
#: room for the example DAGs' waits deferred at the same time.
TRIGGERER_CAPACITY = 70
WORKER_CONCURRENCY = 8
#: Seconds after its last heartbeat that a triggerer counts as dead (its triggers move).
TRIGGERER_DEAD_AFTER = 10
#: Seconds after its last heartbeat that a running task counts as dead (it is retried).
TASK_DEAD_AFTER = 20
SCENARIO_TIMEOUT = 420.0
#: Set to keep the Airflow home (logs) of a failed run; it is removed otherwise.
KEEP_VARIABLE = "QUERYTASKS_E2E_KEEP"
#: The user PostgreSQL runs as when this runs as root (initdb refuses root); created if missing.
PG_FALLBACK_USER = "querytasks-e2e"


def component_hostname() -> str:
    """The host name Airflow records for this component (``[core] hostname_callable``).

    Every component runs on this one machine; a name of its own tells which worker ran a task
    try and which triggerer job is which, as host names do in a real deployment.
    """
    return os.environ.get(COMPONENT_VARIABLE) or socket.getfqdn()


def _line(name: str, state: str, seconds: float, details: str) -> None:
    from airflow import __version__

    print(f"{name:<44} airflow={__version__:<7} state={state:<8} {seconds:6.1f}s {details}", flush=True)


class PostgresCluster:
    """A throwaway PostgreSQL cluster: no TCP listener, a Unix socket in a private folder.

    :param root: a folder only this user (and root) can enter; the cluster lives under it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.bindir = self._bindir()
        self.user = self._user()

    @staticmethod
    def _bindir() -> Path:
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
        )
        if found:
            return found[-1].parent
        on_path = shutil.which("initdb")
        if on_path is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        return Path(on_path).parent

    @staticmethod
    def _user() -> str | None:
        """The unprivileged user to run the server as when this runs as root, else ``None``."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", PG_FALLBACK_USER):
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                continue
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_FALLBACK_USER],
            check=True,
        )
        return PG_FALLBACK_USER

    def _as_owner(self, *command: str) -> None:
        subprocess.run(
            [str(self.bindir / command[0]), *command[1:]],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.root,
            user=self.user,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
        )

    def start(self) -> None:
        self.root.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700)
        if self.user is not None:
            owner = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._as_owner(
            "initdb", "-D", str(self.data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        options = (
            f"-c listen_addresses='' -k {self.socket_dir} -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.root / "postgresql.log")
        self._as_owner("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, "start")
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", str(self.socket_dir), "-U", "airflow", "airflow"],
            check=True,
            capture_output=True,
            timeout=60,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow@/airflow?host={self.socket_dir}"

    def connect(self) -> Any:
        return psycopg2.connect(host=str(self.socket_dir), user="airflow", dbname="airflow")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._as_owner("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except subprocess.SubprocessError as exc:
                print(f"(stopping PostgreSQL failed: {exc})")


class RedisServer:
    """A throwaway Redis (the Celery broker): no TCP listener, a Unix socket only root can open.

    :param root: the folder for its socket and log.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                *(binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.root)),
                *("--logfile", str(self.root / "redis.log")),
            ],
            start_new_session=True,
        )
        import redis

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if redis.Redis(unix_socket_path=str(self.socket)).ping():
                    return
            except redis.RedisError:
                time.sleep(0.2)
        raise RuntimeError("Redis did not start")

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def kill_tree(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL a component and every process under it at once, as when its machine dies."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return len(tree)


class DistributedE2E(E2E):
    db_error = psycopg2.Error
    keep_home_variable = KEEP_VARIABLE

    def __init__(self) -> None:
        super().__init__()
        self.services = Path(tempfile.mkdtemp(prefix="querytasks-e2e-services-"))
        # PostgreSQL's own user must pass through to its folder, and nobody else further.
        self.services.chmod(0o711)
        self.postgres = PostgresCluster(self.services / "postgresql")
        self.redis = RedisServer(self.services)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.triggerers: dict[str, subprocess.Popen[bytes]] = {}
        self.extra: dict[str, Any] = {}
        #: Process id -> component name.
        self.names: dict[int, str] = {}

    # -- setup --------------------------------------------------------------------------------
    def environment(self) -> None:
        super().environment()
        shutil.copy(SCENARIO_DAGS, self.home / "dags" / SCENARIO_DAGS.name)
        from cryptography.fernet import Fernet

        os.environ.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.postgres.url}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
                # Every process reads and writes encrypted values (connections, variables).
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_DEAD_AFTER),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_DEAD_AFTER),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{Path(__file__).stem}.component_hostname",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")])),
            }
        )

    def start(
        self, *args: str, log_name: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        name = log_name or args[0]
        process = super().start(*args, log_name=log_name, env={COMPONENT_VARIABLE: name, **(env or {})})
        self.names[process.pid] = name
        return process

    def start_services(self) -> None:
        self.postgres.start()
        self.redis.start()

    def start_emulators(self) -> None:
        super().start_emulators()
        from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
        from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
        from airflow_provider_querytasks.testing.server import connection_env
        from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

        tag = uuid.uuid4().hex[:12]
        self.extra = {
            OAUTH: ShoplazzaEmulator(
                duration=3.0,
                client_secret=f"shz-oauth-secret-{tag}",
                refresh_token=f"shz-refresh-{tag}",
            ).start(),
            MANY: DataKioskEmulator(
                duration=3600.0,
                client_secret=f"dk-many-secret-{tag}",
                refresh_token=f"Atzr|dk-many-refresh-{tag}",
                notify=False,
            ).start(),
            TRIGGERER_KILLED: AdobeQueryServiceEmulator(client_secret=f"adobe-failover-secret-{tag}").start(),
            WORKER_KILLED: AdobeQueryServiceEmulator(client_secret=f"adobe-worker-secret-{tag}").start(),
        }
        connections = {
            OAUTH: self.extra[OAUTH].connection("shoplazza_oauth", oauth=True),
            MANY: self.extra[MANY].connection("amazon_sp_api_many"),
            TRIGGERER_KILLED: self.extra[TRIGGERER_KILLED].connection("adobe_failover"),
            WORKER_KILLED: self.extra[WORKER_KILLED].connection("adobe_worker_kill"),
        }
        for conn in connections.values():
            os.environ.update(dict([connection_env(conn)]))
        self.secrets += [
            f"shz-oauth-secret-{tag}",
            f"shz-refresh-{tag}",
            f"dk-many-secret-{tag}",
            f"Atzr|dk-many-refresh-{tag}",
            f"adobe-failover-secret-{tag}",
            f"adobe-worker-secret-{tag}",
        ]

    def issued_tokens(self) -> list[str]:
        """Access and refresh tokens the emulators handed out during the run (secrets too)."""
        tokens: list[str] = []
        for emulator in [*self.emulators.values(), *self.extra.values()]:
            for name in ("tokens", "oauth_tokens", "refresh_tokens"):
                tokens += list(getattr(emulator, name, ()))
        for request in self.extra[OAUTH].requests_to("api", "POST", "/admin/oauth/token$"):
            sent = request.body.decode(errors="replace")
            try:
                form = json.loads(sent)
            except ValueError:
                form = dict(urllib.parse.parse_qsl(sent))
            if isinstance(form, dict) and form.get("refresh_token"):
                tokens.append(str(form["refresh_token"]))
        return sorted(set(tokens))

    def start_airflow(self) -> None:
        self.airflow("db", "migrate")
        self.start("api-server", "--port", str(self.api_port))
        self.wait_for(lambda: self.http("GET", "/api/v2/monitor/health") is not None, 180, "the API server")
        self.start("dag-processor")
        self.scheduler = self.start("scheduler")
        for number in (1, 2):
            name = f"worker{number}"
            self.workers[name] = self.start(
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--queues",
                f"default,{name}",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                log_name=name,
                env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
            )
        for number in (1, 2):
            name = f"triggerer{number}"
            self.triggerers[name] = self.start(
                "triggerer",
                log_name=name,
                env={
                    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                    "AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERER_CAPACITY),
                },
            )

    # -- helpers ------------------------------------------------------------------------------
    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        connection = self.postgres.connect()
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(sql.replace("?", "%s"), params)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def run_state(self, dag_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", dag_id, f"e2e__{dag_id}")
        return rows[0][0] if rows else None

    def run_seconds(self, dag_id: str) -> float:
        """How long the run took, as the metadata DB saw it (from start to end)."""
        rows = self.query(
            "SELECT EXTRACT(EPOCH FROM end_date - start_date) FROM dag_run WHERE dag_id=? AND run_id=?",
            dag_id,
            f"e2e__{dag_id}",
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else float("nan")

    def wait_for_runs(self, started: dict[str, float]) -> dict[str, tuple[str, float]]:
        """The example runs' ends, with their durations from the DB (this waits on other
        scenarios in between, so the moment it sees an end can be late)."""
        finished = super().wait_for_runs(started)
        return {dag_id: (state, self.run_seconds(dag_id)) for dag_id, (state, _) in finished.items()}

    def wait_for_run(
        self, dag_id: str, started: float, timeout: float = SCENARIO_TIMEOUT
    ) -> tuple[str, float]:
        try:
            self.wait_for(
                lambda: self.run_state(dag_id) in ("success", "failed"), timeout, f"{dag_id} to end"
            )
        except TimeoutError as exc:
            self.failures.append(str(exc))
        return str(self.run_state(dag_id)), self.run_seconds(dag_id)

    def task_rows(self, dag_id: str) -> list[tuple[Any, ...]]:
        """``(task_id, map_index, state, try_number, hostname, trigger_id, queue)`` of the run's tasks."""
        return self.query(
            "SELECT task_id, map_index, state, try_number, hostname, trigger_id, queue FROM task_instance "
            "WHERE dag_id=? AND run_id=? ORDER BY task_id, map_index",
            dag_id,
            f"e2e__{dag_id}",
        )

    def alive_triggerers(self) -> dict[int, str]:
        """Job id -> name of each triggerer of ours whose process is still running."""
        jobs = self.query("SELECT id, hostname FROM job WHERE job_type='TriggererJob' AND state='running'")
        return {
            int(job_id): name
            for job_id, name in jobs
            if name in self.triggerers and self.triggerers[name].poll() is None
        }

    def trigger_holders(self, dag_id: str) -> dict[str, int | None]:
        """Task id (``task_id[map_index]`` when mapped) -> the triggerer job holding its trigger."""
        rows = self.query(
            "SELECT ti.task_id, ti.map_index, t.triggerer_id FROM task_instance ti "
            "JOIN trigger t ON t.id = ti.trigger_id WHERE ti.dag_id=? AND ti.run_id=?",
            dag_id,
            f"e2e__{dag_id}",
        )
        return {
            (task_id if map_index < 0 else f"{task_id}[{map_index}]"): holder
            for task_id, map_index, holder in rows
        }

    # -- scenarios ----------------------------------------------------------------------------
    def start_many_waits(self) -> float:
        emulator = self.extra[MANY]
        ids = [
            emulator.add_query("query { analytics_salesAndTraffic_2024_04_24 { x } }").query_id
            for _ in range(MANY_WAITS)
        ]
        return self.trigger(MANY, conf={"query_ids": ids})

    def finish_many_waits(self, started: float) -> None:
        """Once every wait is deferred and held by a triggerer, end the queries together."""
        emulator = self.extra[MANY]

        def all_held() -> bool:
            rows = [r for r in self.task_rows(MANY) if r[0] == "wait"]
            held = [h for h in self.trigger_holders(MANY).values() if h is not None]
            failed = [r for r in rows if r[2] in ("failed", "upstream_failed")]
            return len(held) + len(failed) >= MANY_WAITS

        try:
            self.wait_for(all_held, SCENARIO_TIMEOUT, f"{MANY_WAITS} waits to be deferred")
        except TimeoutError as exc:
            self.failures.append(str(exc))
        names = self.alive_triggerers()
        spread: dict[str, int] = {}
        for holder in self.trigger_holders(MANY).values():
            name = names.get(holder or -1, f"job {holder}")
            spread[name] = spread.get(name, 0) + 1
        released = time.monotonic()
        emulator.clock.advance(3600)
        state, seconds = self.wait_for_run(MANY, started)
        polls = emulator.requests_to("api", "GET", r"/queries/[^/]+$")
        throttled = [r for r in polls if r.status == 429]
        done = [r for r in self.task_rows(MANY) if r[0] == "wait" and r[2] == "success"]
        spread_text = "+".join(f"{spread[name]}" for name in sorted(spread)) or "0"
        _line(
            MANY,
            state,
            seconds,
            f"waits={len(done)}/{MANY_WAITS} triggerers={spread_text} getQuery={len(polls)} "
            f"http429={len(throttled)} last_done={time.monotonic() - released:.0f}s after release",
        )
        self.check(
            state == "success" and len(done) == MANY_WAITS,
            f"{MANY}: {len(done)} of {MANY_WAITS} waits succeeded",
        )
        self.check(len(spread) == 2, f"{MANY}: the waits were held by {spread}, not by both triggerers")

    def oauth_relay(self, started: float) -> None:
        emulator = self.extra[OAUTH]
        state, seconds = self.wait_for_run(OAUTH, started)
        rows = self.task_rows(OAUTH)
        refreshes = emulator.requests_to("api", "POST", "/admin/oauth/token$")
        refused = [r for r in refreshes if r.status != 200]
        succeeded = [r for r in rows if r[2] == "success"]
        workers = "+".join(sorted({str(r[4]) for r in rows if r[4]}))
        _line(
            OAUTH,
            state,
            seconds,
            f"tasks={len(succeeded)}/{len(rows)} workers={workers or '-'} "
            f"triggerers={'+'.join(self.trigger_hosts(OAUTH)) or '-'} "
            f"token refreshes={len(refreshes)} refused={len(refused)}",
        )
        self.check(state == "success", f"{OAUTH} ended {state}: {[(r[0], r[2]) for r in rows]}")
        self.check(
            not refused,
            f"{OAUTH}: {len(refused)} token refresh(es) refused (a rotated refresh token was lost)",
        )

    def trigger_hosts(self, dag_id: str) -> list[str]:
        """The triggerers that ran the DAG's waits: 3.x names each trigger log after its job."""
        job_ids = {
            int(path.name.rsplit(".", 2)[-2])
            for path in (self.home / "logs" / f"dag_id={dag_id}").rglob("*.log.trigger.*.log")
        }
        hosts = dict(self.query("SELECT id, hostname FROM job WHERE job_type='TriggererJob'"))
        return sorted({str(hosts.get(job_id, f"job {job_id}")) for job_id in job_ids})

    def kill_scenarios(self) -> None:
        """Kill a worker in the middle of a worker-mode wait and a triggerer holding a wait."""
        failover, in_worker = self.extra[TRIGGERER_KILLED], self.extra[WORKER_KILLED]
        started = {dag_id: self.trigger(dag_id) for dag_id in (TRIGGERER_KILLED, WORKER_KILLED)}

        def polled(emulator: Any, at_least: int = 1, after: float = 0.0) -> list[str]:
            """Query ids polled ``at_least`` times after ``after`` (wall clock), by their own GET
            or in a list page (a triggerer's coalesced polling answers both waits with one)."""
            return [q for q in emulator.queries if emulator.polls_of(q, after) >= at_least]

        # Both waits deferred, held and polled; the worker-mode wait polled from its worker.
        self.wait_for(
            lambda: (
                len([h for h in self.trigger_holders(TRIGGERER_KILLED).values() if h]) == 2
                and len(polled(failover)) == 2
            ),
            SCENARIO_TIMEOUT,
            f"{TRIGGERER_KILLED}'s waits to be held and polled",
        )
        self.wait_for(
            lambda: len(polled(in_worker, at_least=2)) == 1,
            SCENARIO_TIMEOUT,
            f"{WORKER_KILLED}'s wait to poll from its worker",
        )
        # The worker: the one whose process tree runs the task.
        (row,) = self.task_rows(WORKER_KILLED)
        worker = row[4] if row[4] in self.workers else None
        self.check(
            worker is not None, f"{WORKER_KILLED}: the task runs on {row[4]!r}, not on a worker of ours"
        )
        killed_at = time.time()
        if worker is not None:
            kill_tree(self.workers[worker])
        # The triggerer: the one holding the first wait.
        names = self.alive_triggerers()
        holders = self.trigger_holders(TRIGGERER_KILLED)
        victim_job = holders["wait_first"]
        victim = names.get(victim_job or -1)
        moved = [task for task, holder in holders.items() if holder == victim_job]
        self.check(victim is not None, f"{TRIGGERER_KILLED}: no triggerer of ours holds the first wait")
        if victim is not None:
            kill_tree(self.triggerers[victim])
        survivor_jobs = [job for job in names if job != victim_job]

        def moved_over() -> bool:
            now = self.trigger_holders(TRIGGERER_KILLED)
            return all(now.get(task) in survivor_jobs for task in moved)

        try:
            self.wait_for(moved_over, SCENARIO_TIMEOUT, "the killed triggerer's waits to move")
            moved_at = time.time()
            self.wait_for(
                lambda: len(polled(failover, after=moved_at)) == 2, 120, "the moved waits to poll again"
            )
        except TimeoutError as exc:
            self.failures.append(str(exc))
        # The retry re-attached when the same query is polled again after the kill.
        try:
            self.wait_for(
                lambda: len(polled(in_worker, after=killed_at + 1)) == 1,
                SCENARIO_TIMEOUT,
                "the retry to poll",
            )
        except TimeoutError as exc:
            self.failures.append(str(exc))
        failover.clock.advance(3600)
        in_worker.clock.advance(3600)
        for dag_id, emulator in ((TRIGGERER_KILLED, failover), (WORKER_KILLED, in_worker)):
            state, seconds = self.wait_for_run(dag_id, started[dag_id])
            rows = self.task_rows(dag_id)
            submissions = emulator.requests_to("api", "POST", r"/queries$")
            tries = max((r[3] for r in rows), default=0)
            if dag_id == TRIGGERER_KILLED:
                details = f"moved={len(moved)} from {victim} submissions={len(submissions)} tries={tries}"
                self.check(tries == 1, f"{dag_id}: a task was retried ({rows})")
            else:
                log = self.task_logs(dag_id, "wait_in_worker")
                reattached = "Re-attaching to" in log
                details = (
                    f"killed={worker} tries={tries} reattached={'yes' if reattached else 'no'} "
                    f"submissions={len(submissions)}"
                )
                self.check(tries == 2 and reattached, f"{dag_id}: tries={tries}, re-attached={reattached}")
            _line(dag_id, state, seconds, details)
            self.check(state == "success", f"{dag_id} ended {state}")
            self.check(
                len(submissions) == len(rows),
                f"{dag_id}: {len(submissions)} submissions for {len(rows)} tasks",
            )
            cancels = [r for r in emulator.requests_to("api", "PATCH", "/queries/") if b"cancel" in r.body]
            self.check(not cancels, f"{dag_id}: a query was cancelled")

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        return self.run_steps(self.production_topology)

    def production_topology(self) -> None:
        self.environment()
        self.start_services()
        self.start_emulators()
        self.start_airflow()
        started = self.trigger_all()
        self.wait_for(
            lambda: {row[0] for row in self.query("SELECT dag_id FROM dag")} >= set(SCENARIOS),
            180,
            "the scenario DAGs to be parsed",
        )
        many_started = self.start_many_waits()
        oauth_started = self.trigger(OAUTH)
        # Its queries end as soon as every wait is held: watched beside the others.
        many = threading.Thread(target=self.guarded, args=(self.finish_many_waits, many_started), daemon=True)
        many.start()
        self.kill_deferred_task()
        finished = self.wait_for_runs(started)
        self.oauth_relay(oauth_started)
        many.join(SCENARIO_TIMEOUT * 2)
        # Restarts the scheduler (the notification-driven DAG): only once nothing else runs.
        self.verify(finished)
        self.kill_scenarios()
        self.secrets += self.issued_tokens()
        files = self.check_secrets()
        leaks = [f for f in self.failures if "secret value" in f]
        print(
            f"{'no secret in any log':<44} files={files} secrets={len(self.secrets)} leaks={len(leaks)}",
            flush=True,
        )

    def guarded(self, scenario: Any, *args: Any) -> None:
        """Run a scenario in a thread: an error becomes a failure of the run."""
        try:
            scenario(*args)
        except Exception as exc:
            self.failures.append(f"{scenario.__name__}: {type(exc).__name__}: {exc}")

    def cpu_report(self) -> str:
        """CPU seconds each component used so far (with its finished children)."""
        used = []
        for process in self.processes:
            try:
                root = psutil.Process(process.pid)
                tree = [root, *root.children(recursive=True)]
                seconds = sum(sum(member.cpu_times()) for member in tree)
            except psutil.NoSuchProcess:
                continue
            used.append(f"{self.names.get(process.pid)} {seconds:.0f}")
        return ", ".join(used)

    def stop(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the teardown
        with contextlib.suppress(Exception):
            print(f"(CPU seconds: {self.cpu_report()})")
        try:
            super().stop()
            for emulator in self.extra.values():
                emulator.stop()
        finally:
            self.redis.stop()
            self.postgres.stop()
            shutil.rmtree(self.services, ignore_errors=True)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    # A timeout (CI, `timeout`) sends SIGTERM: leave through `finally`, which tears it all down.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sys.exit(DistributedE2E().run())
