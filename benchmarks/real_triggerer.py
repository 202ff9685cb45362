"""Benchmark 7: deferred waits run by Airflow's real trigger runner, measured from outside.

``benchmarks/run.py --only realtriggerer`` runs it (``--real-waits``, ``--real-accounts``). From
nothing: a throwaway PostgreSQL cluster as the metadata DB (as ``scripts/e2e_distributed.py``
starts it), ``airflow db migrate``, then per phase:

- the emulators in their own process, one emulated account per connection (``--real-accounts``
  split over the three platforms), N queries whose durations start when the phase starts;
- the connections stored in the metadata DB (the triggerer reads them through its supervisor and
  the in-process execution API, as in production: the first read counts in the figures), a DAG
  of three mapped deferrable sensors (Shoplazza, Data Kiosk, Adobe) written to the DB, one DAG run
  whose N task instances are put in state ``deferred`` with the Trigger rows their sensors would
  create (the provider's trigger classes, the default poll schedule), all through Airflow's ORM;
- one ``airflow triggerer`` process (capacity above N) that picks them up; the phase ends when no
  task instance of the run is deferred any more (every trigger fired its event).

Measured from outside: the triggerer's process tree CPU (user + sys, psutil) per wait-hour of
deferred time (each task instance's ``updated_at`` when its event was stored, minus the phase's
start), its peak RSS, the worst event-loop lag from the trigger runner's own "Triggerer's async
thread was blocked" lines (threshold lowered to 20 ms of lag, so lags between 20 and 100 ms show
too), and the API calls the emulators received per operation.

Phases: the triggerer with per-wait polling (``AIRFLOW__QUERYTASKS__COALESCE_POLLS=False``), the
triggerer as configured by default (coalesced polling, when this build has it), and the baseline:
a plain asyncio process (no Airflow) making one bare aiohttp GET per wait per poll on the same
schedule (``PollSchedule()``: 5 s, growing by 10 % of the elapsed time up to 60 s, first poll at a
random moment within 5 s) against fresh emulators seeded alike, until each GET shows its query
finished. Ratios: triggerer CPU per wait-hour / the baseline's; API calls coalesced / per-wait.

``python benchmarks/real_triggerer.py setup SPEC`` and ``... bare SPEC`` are the two roles this
module plays in subprocesses (DB set-up inside the Airflow environment; the baseline process).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("shoplazza", "data_kiosk", "adobe")
#: The operators' and sensors' default schedule (``PollSchedule()``), as a dict.
DEFAULT_SCHEDULE = {"initial": 5.0, "maximum": 60.0, "proportion": 0.1}
#: The sensor class per platform (what the mapped tasks are), and where each status GET goes.
SENSORS = {
    "shoplazza": "airflow_provider_querytasks.sensors.shoplazza.ShoplazzaDataTaskSensor",
    "data_kiosk": "airflow_provider_querytasks.sensors.amazon_data_kiosk.DataKioskQuerySensor",
    "adobe": "airflow_provider_querytasks.sensors.adobe_query_service.AdobeQuerySensor",
}
STATUS_URLS = {
    "shoplazza": "{api}/openapi/2022-01/data/task?id={id}",
    "data_kiosk": "{api}/dataKiosk/2023-11-15/queries/{id}",
    "adobe": "{api}/data/foundation/query/queries/{id}",
}
#: The remote states of a query still running (anything else ends a bare wait).
RUNNING: dict[str, set[Any]] = {
    "shoplazza": {0, 1},
    "data_kiosk": {"IN_QUEUE", "IN_PROGRESS"},
    "adobe": {"SUBMITTED", "IN_PROGRESS"},
}
#: The trigger runner's watchdog sleeps 0.1 s and logs when a round took longer than the
#: threshold: 0.12 s logs every lag of 20 ms or more (the default, 0.2 s, only those over 100 ms).
WATCHDOG_SLEEP, BLOCKED_THRESHOLD = 0.1, 0.12
#: Set to keep the Airflow home (triggerer output, trigger logs) for a look afterwards.
KEEP_VARIABLE = "QUERYTASKS_BENCH_KEEP"
BLOCKED_LINE = re.compile(r"Triggerer's async thread was blocked for ([0-9.]+) seconds")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- measuring a process tree from outside ------------------------------------------------------
class TreeWatch:
    """CPU (user + sys) and RSS of a process and its descendants, sampled from outside.

    A descendant that exits keeps the CPU it was last seen with (its parent has not necessarily
    reaped it, so the parent's ``children_*`` times cannot be relied on).

    :param pid: the root process.
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.cpu_by_pid: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.peak_rss = 0
        self.peak_rss_by_pid: dict[int, int] = {}

    def sample(self) -> None:
        psutil = self._psutil
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total_rss = 0
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                with member.oneshot():
                    times = member.cpu_times()
                    rss = member.memory_info().rss
                    if member.pid not in self.names:
                        self.names[member.pid] = " ".join(member.cmdline())[:60]
                self.cpu_by_pid[member.pid] = times.user + times.system
                self.peak_rss_by_pid[member.pid] = max(self.peak_rss_by_pid.get(member.pid, 0), rss)
                total_rss += rss
        self.peak_rss = max(self.peak_rss, total_rss)

    @property
    def cpu(self) -> float:
        return sum(self.cpu_by_pid.values())


#: Seconds between writing the floor phase's spec and its start, and per wait more (setting up
#: 5,000 waits takes about 15 s): the DateTimeTriggers' moments are fixed before the rows exist.
FLOOR_LEAD_S, FLOOR_LEAD_PER_WAIT_S = 30.0, 0.012
#: A phase in which for this long no wait finished and the triggerer used less than
#: ``STALL_CPU_S`` of CPU is stalled: its stacks are dumped (py-spy) beside the triggerer's
#: output and the phase ends.
STALL_S, STALL_CPU_S = 120.0, 1.0


def dump_stacks(watch: TreeWatch, target: Path) -> None:
    """Every process of the tree's Python stacks (``py-spy dump``) into ``target``, to see where
    a stalled triggerer waits; kept only with ``QUERYTASKS_BENCH_KEEP`` set."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with target.open("w") as out:
        for pid in watch.cpu_by_pid:
            out.write(f"== {pid} {watch.names.get(pid, '')}\n")
            out.flush()
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([py_spy, "dump", "--pid", str(pid)], stdout=out, stderr=out, timeout=60)
    print(f"stalled: stacks in {target}", file=sys.stderr)


def kill_tree(process: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """SIGTERM a process started in its own session and everything under it, SIGKILL what is left."""
    import psutil

    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


# -- the emulators ----------------------------------------------------------------------------
class Emulators:
    """``benchmarks/emulators.py`` in its own process: one account per connection, queries held
    until :meth:`go`.

    :param per_platform: queries per platform.
    :param accounts: accounts (emulators) per platform.
    :param durations: (min, max) seconds each query runs after :meth:`go`.
    :param limits: enforce the platforms' published rate limits.
    """

    def __init__(
        self, per_platform: int, accounts: int, durations: tuple[float, float], limits: bool
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="querytasks-realtrig-emu-"))
        self.state_file = self.folder / "state.json"
        command = [
            *(sys.executable, str(ROOT / "benchmarks" / "emulators.py"), str(self.state_file)),
            *(str(per_platform), str(durations[0]), str(durations[1])),
            *("--accounts", str(accounts), "--hold", *(["--limits"] if limits else [])),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )
        self.state: dict[str, Any] = {}
        self.answered: dict[str, Any] = {}
        self.go_at = 0.0

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + 300
        while not self.state_file.exists() or not self.state_file.stat().st_size:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator process did not start")
            time.sleep(0.1)
        time.sleep(0.2)
        self.state = json.loads(self.state_file.read_text())
        return self.state

    def go(self) -> float:
        """Start every query's duration now; returns when (``time.time()``)."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        go_file = self.state_file.with_name("state.json.go")
        deadline = time.monotonic() + 30
        while not go_file.exists() or not go_file.stat().st_size:
            if time.monotonic() > deadline:
                raise RuntimeError("the emulators did not start their queries")
            time.sleep(0.01)
        self.go_at = float(json.loads(go_file.read_text()))
        return self.go_at

    def stop(self) -> dict[str, Any]:
        """Stop the emulators; returns their 429 answers and requests per operation."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        answered = self.state_file.with_name("state.json.answered")
        if answered.exists():
            self.answered = json.loads(answered.read_text())
        shutil.rmtree(self.folder, ignore_errors=True)
        return self.answered


def api_calls(answered: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """All requests the emulators received, and per operation (``platform: METHOD /path``)."""
    per_operation = {
        f"{platform}: {operation}": count
        for platform, operations in answered.get("requests", {}).items()
        for operation, count in operations.items()
    }
    return sum(per_operation.values()), per_operation


def split_waits(waits: int, accounts: int) -> tuple[int, int]:
    """Queries per platform and accounts per platform (the three platforms share both)."""
    return max(1, round(waits / 3)), max(1, round(accounts / 3))


# -- the Airflow side ---------------------------------------------------------------------------


def run_checked(
    args: list[str], env: dict[str, str], timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run a step of the set-up; fail with the end of its stderr."""
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{what} failed: {done.stderr[-3000:]}")
    return done


class AirflowHome:
    """A throwaway Airflow home with its metadata DB (PostgreSQL 15, Unix socket only).

    :param waits: triggers the triggerer must hold at once (its capacity is set above).
    """

    def __init__(self, waits: int) -> None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from e2e_distributed import PostgresCluster

        self.home = Path(tempfile.mkdtemp(prefix="querytasks-realtrig-"))
        os.chmod(self.home, 0o755)  # PostgreSQL runs as another user below it
        (self.home / "dags").mkdir()
        self.postgres = PostgresCluster(self.home / "postgresql")
        from cryptography.fernet import Fernet

        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__TRIGGERER__CAPACITY": str(waits + 100),
            "AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD": str(BLOCKED_THRESHOLD),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONWARNINGS": "ignore",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def __enter__(self) -> AirflowHome:
        try:
            self.postgres.start()
            run_checked(
                [sys.executable, "-m", "airflow", "db", "migrate"], self.env, 600, "airflow db migrate"
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.postgres.stop()
        finally:
            if os.environ.get(KEEP_VARIABLE):
                print(f"(kept the Airflow home {self.home})", file=sys.stderr)
            else:
                shutil.rmtree(self.home, ignore_errors=True)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        connection = self.postgres.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            connection.close()


def connections_of(state: dict[str, Any], phase: str) -> dict[str, list[dict[str, Any]]]:
    """One connection per emulated account, named after the phase and the account."""
    return {
        platform: [
            {**account["connection"], "conn_id": f"rt_{phase}_{platform}_{i}"}
            for i, account in enumerate(state["accounts"][platform])
        ]
        for platform in PLATFORMS
    }


def triggerer_phase(
    home: AirflowHome, phase: str, args: dict[str, Any], coalesce: bool | None, floor: bool = False
) -> dict[str, Any]:
    """One triggerer run over freshly deferred waits; ``coalesce`` sets the provider's switch
    (``None``: left at its default). ``floor``: the same task instances deferred on Airflow's own
    ``DateTimeTrigger`` for the moment each query ends instead: what the triggerer costs with
    no polling at all."""
    per_platform, accounts = split_waits(args["waits"], args["accounts"])
    emulators = Emulators(per_platform, accounts, args["durations"], limits=True)
    triggerer: subprocess.Popen[bytes] | None = None
    log_path = home.home / f"triggerer-{phase}.out"
    try:
        state = emulators.wait_ready()
        connections = connections_of(state, phase)
        spec: dict[str, Any] = {
            "dag_id": f"bench_real_triggerer_{phase}",
            "connections": [c for group in connections.values() for c in group],
            "waits": {
                platform: [
                    [conn["conn_id"], query_id]
                    for conn, account in zip(connections[platform], state["accounts"][platform], strict=True)
                    for query_id in account["ids"]
                ]
                for platform in PLATFORMS
            },
        }
        if floor:
            lead = FLOOR_LEAD_S + FLOOR_LEAD_PER_WAIT_S * args["waits"]
            spec["floor"] = {"start": time.time() + lead, "durations": state["durations"]}
        spec_file = home.home / f"spec-{phase}.json"
        spec_file.write_text(json.dumps(spec))
        done = run_checked(
            [sys.executable, __file__, "setup", str(spec_file)],
            home.env,
            1800,
            "setting up the deferred waits",
        )
        setup = json.loads(done.stdout.strip().splitlines()[-1])
        env = dict(home.env)
        if coalesce is not None:
            env["AIRFLOW__QUERYTASKS__COALESCE_POLLS"] = str(coalesce)
        if floor:
            go_at = spec["floor"]["start"]
            if time.time() > go_at:
                raise RuntimeError("setting up took longer than planned: the floor's moments passed")
            time.sleep(go_at - time.time())
        else:
            go_at = emulators.go()
        with log_path.open("wb") as log:
            triggerer = subprocess.Popen(
                [sys.executable, "-m", "airflow", "triggerer"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        watch = TreeWatch(triggerer.pid)
        run_id = setup["run_id"]
        timeout = args["durations"][1] + args["timeout"]
        deferred = per_platform * 3
        last_check = 0.0
        # Progress: a wait finished, or the triggerer used CPU (a slow triggerer still starting
        # thousands of triggers is busy; two processes blocked on each other use none).
        progress_at, busy_cpu = go_at, 0.0
        stalled = False
        while True:
            watch.sample()
            if triggerer.poll() is not None:
                raise RuntimeError(f"the triggerer exited ({triggerer.returncode}); see {log_path}")
            now = time.time()
            if now - last_check >= 2.0:
                last_check = now
                ((still,),) = home.query(
                    "SELECT count(*) FROM task_instance WHERE run_id=%s AND state='deferred'", run_id
                )
                if still != deferred or watch.cpu - busy_cpu >= STALL_CPU_S:
                    deferred, progress_at, busy_cpu = still, now, watch.cpu
                if deferred == 0:
                    break
                if now - progress_at > STALL_S:
                    stalled = True
                    dump_stacks(watch, home.home / f"stall-{phase}.txt")
                    break
            if now - go_at > timeout:
                break
            time.sleep(0.5)
        watch.sample()
        ended_at = time.time()
        cpu = watch.cpu
    finally:
        if triggerer is not None:
            kill_tree(triggerer)
        answered = emulators.stop()
    rows = home.query(
        "SELECT task_id, map_index, state, extract(epoch from updated_at), next_kwargs::text "
        "FROM task_instance WHERE run_id=%s AND task_id LIKE '%%_wait'",
        run_id,
    )
    statuses: Counter[str] = Counter()
    deferred_s = 0.0
    late: list[float] = []
    for task_id, map_index, ti_state, updated, next_kwargs in rows:
        if ti_state == "deferred":
            statuses["still deferred"] += 1
            deferred_s += ended_at - go_at
            continue
        statuses[_event_status(next_kwargs)] += 1
        deferred_s += float(updated) - go_at
        query_id = spec["waits"][task_id.removesuffix("_wait")][map_index][1]
        late.append(float(updated) - go_at - state["durations"][query_id])
    blocked = blocked_loop_lines(log_path, go_at)
    started_s, first_polls_s = trigger_log_times(home.home / "logs", run_id, go_at)
    after_first_polls = [lag for at, lag in blocked if first_polls_s is not None and at > first_polls_s]
    calls, per_operation = api_calls(answered)
    runner = max(watch.peak_rss_by_pid.items(), key=lambda item: item[1])[0] if watch.peak_rss_by_pid else 0
    runner_cpu = max((c for pid, c in watch.cpu_by_pid.items() if pid != triggerer.pid), default=0.0)
    return {
        "phase": phase,
        "waits": len(rows),
        "accounts": accounts * 3,
        "finished": len(rows) - statuses["still deferred"],
        "statuses": dict(statuses),
        "api_calls": calls,
        "api_calls_per_operation": per_operation,
        "http_429": sum(answered.get("http_429", {}).values()),
        "stalled": stalled,
        "wall_s": round(ended_at - go_at, 1),
        "setup_s": setup["seconds"],
        "cpu_s": round(cpu, 1),
        "wait_hours": round(deferred_s / 3600, 3),
        "cpu_s_per_wait_hour": round(cpu / (deferred_s / 3600), 3),
        # The supervisor (the root: loads triggers, routes their log lines, stores events) and
        # the trigger runner (the child with the most CPU: the waits' event loop).
        "cpu_s_supervisor": round(watch.cpu_by_pid.get(triggerer.pid, 0.0), 1),
        "cpu_s_runner": round(runner_cpu, 1),
        "runner_cpu_s_per_wait_hour": round(runner_cpu / (deferred_s / 3600), 3),
        "cpu_s_by_process": {
            f"{pid} {watch.names.get(pid, '')}": round(seconds, 1)
            for pid, seconds in watch.cpu_by_pid.items()
        },
        "peak_rss_mib": round(watch.peak_rss / 2**20, 1),
        "largest_process_peak_rss_mib": round(watch.peak_rss_by_pid.get(runner, 0) / 2**20, 1),
        "seen_late_s_median": round(sorted(late)[len(late) // 2], 1) if late else None,
        "seen_late_s_max": round(max(late), 1) if late else None,
        "all_triggers_started_s": started_s,
        "every_wait_polled_once_s": first_polls_s,
        "blocked_loop_warnings": len(blocked),
        "worst_loop_lag_ms": max((lag for _, lag in blocked), default=None),
        "worst_loop_lag_after_first_polls_ms": max(after_first_polls, default=None),
        "worst_loop_lags": [[round(at, 1), lag] for at, lag in sorted(blocked, key=lambda b: -b[1])[:8]],
    }


def _log_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def blocked_loop_lines(log_path: Path, go_at: float) -> list[tuple[float, int]]:
    """The trigger runner's blocked-loop warnings: (seconds after ``go_at``, lag in ms)."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = BLOCKED_LINE.search(line)
        if match:
            lag = round((float(match.group(1)) - WATCHDOG_SLEEP) * 1000)
            found.append((_log_time(line.split()[0]) - go_at, lag))
    return found


def trigger_log_times(logs: Path, run_id: str, go_at: float) -> tuple[float | None, float | None]:
    """From the per-trigger log files: when the last trigger started, and when the last wait made
    its first poll (its second line: the wait loop logs the first state it sees), in seconds after
    ``go_at``; ``None`` for the latter when some wait never logged a poll."""
    starts, first_polls, files = [], [], 0
    for path in logs.rglob(f"run_id={run_id}/**/*.trigger.*.log"):
        files += 1
        with path.open(encoding="utf-8", errors="replace") as log:
            lines = [line for _, line in zip(range(2), log, strict=False)]
        with contextlib.suppress(ValueError, KeyError, IndexError):
            starts.append(_log_time(json.loads(lines[0])["timestamp"]) - go_at)
            first_polls.append(_log_time(json.loads(lines[1])["timestamp"]) - go_at)
    last_start = round(max(starts), 1) if starts else None
    return last_start, round(max(first_polls), 1) if first_polls and len(first_polls) == files else None


def _event_status(next_kwargs: str | None) -> str:
    """The trigger event's ``status`` stored in a resumed task instance's ``next_kwargs``."""
    found = re.search(r'"status"\W+(\w+)', next_kwargs or "")
    return found.group(1) if found else "no event status"


def setup_waits(spec_file: str) -> None:
    """Inside the Airflow environment: connections, the DAG, one run with its waits deferred."""
    started = time.monotonic()
    spec = json.loads(Path(spec_file).read_text())
    import importlib

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.connection import Connection
    from airflow.models.dagbag import DBDagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    floor = spec.get("floor")
    sensors = {}
    for platform, path in SENSORS.items():
        module, _, name = path.rpartition(".")
        sensors[platform] = getattr(importlib.import_module(module), name)
    with create_session() as session:
        for conn in spec["connections"]:
            session.add(
                Connection(
                    conn_id=conn["conn_id"],
                    conn_type=conn["conn_type"],
                    host=conn.get("host"),
                    login=conn.get("login"),
                    password=conn.get("password"),
                    extra=json.dumps(conn.get("extra") or {}),
                )
            )
    # The DAG as a user would write it: per platform, a task listing the queries to wait for and
    # a deferrable sensor mapped over its output. (Mapped over its output, not over a literal
    # list: the triggerer deserializes the DAG for every trigger it takes up, and thousands of
    # literal inputs would make that, not the waits, the figure.)
    with DAG(spec["dag_id"], schedule=None, start_date=datetime(2026, 11, 1)) as dag:
        for platform in spec["waits"]:
            listed = PythonOperator(task_id=f"{platform}_queries", python_callable=list)
            sensors[platform].partial(task_id=f"{platform}_wait", deferrable=True).expand_kwargs(
                listed.output
            )
    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session
        )
    run_id = f"bench__{spec['dag_id']}"
    now = datetime.now(timezone.utc)
    with create_session() as session:
        serialized = DBDagBag().get_latest_version_of_dag(spec["dag_id"], session=session)
        assert serialized is not None
        dag_run = serialized.create_dagrun(
            run_id=run_id,
            run_after=now,
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING,
            start_date=now,
            session=session,
        )
        session.flush()
        existing = {
            (ti.task_id, ti.map_index): ti
            for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id))
        }
        version_id = dag_run.created_dag_version_id
        pairs = []
        for platform, waits in spec["waits"].items():
            task = serialized.get_task(f"{platform}_wait")
            sensor_class = sensors[platform]
            for map_index, (conn_id, query_id) in enumerate(waits):
                # Expanded as the scheduler does once the listing task has run.
                ti = TaskInstance(task, run_id=run_id, map_index=map_index, dag_version_id=version_id)
                session.add(ti)
                if floor:  # Airflow's own timer, firing when the query ends: no polling at all
                    ends = floor["start"] + floor["durations"][query_id]
                    trigger = DateTimeTrigger(moment=datetime.fromtimestamp(ends, timezone.utc))
                else:  # the trigger the sensor itself defers with (its deadline, schedule, start)
                    sensor = sensor_class(
                        task_id="probe", conn_id=conn_id, query_id=query_id, deferrable=True
                    )
                    trigger = sensor.build_trigger(
                        query_id, deadline=time.time() + 7 * 86400, cancel_on_kill=False
                    )
                row = Trigger.from_object(trigger)
                session.add(row)
                pairs.append((ti, row))
        for (task_id, _), ti in existing.items():
            if task_id.endswith("_queries"):  # the listing tasks have run
                ti.state = TaskInstanceState.SUCCESS
                ti.try_number = 1
                ti.start_date = ti.end_date = now
            else:  # the mapped tasks' unexpanded placeholders (map_index -1)
                session.delete(ti)
        session.flush()  # the trigger rows get their ids
        for ti, row in pairs:
            ti.state = TaskInstanceState.DEFERRED
            ti.trigger_id = row.id
            ti.next_method = "execute_complete"
            ti.next_kwargs = {}
            ti.try_number = max(ti.try_number or 0, 1)
            ti.start_date = now
            ti.queued_dttm = now
    print(json.dumps({"run_id": run_id, "seconds": round(time.monotonic() - started, 1)}))


# -- the baseline: bare GETs on the same schedule -----------------------------------------------
def bare_phase(home: AirflowHome | None, args: dict[str, Any]) -> dict[str, Any]:
    """The same waits (fresh queries, same durations) waited on by bare aiohttp GETs."""
    per_platform, accounts = split_waits(args["waits"], args["accounts"])
    emulators = Emulators(per_platform, accounts, args["durations"], limits=False)
    baseline: subprocess.Popen[bytes] | None = None
    folder = Path(tempfile.mkdtemp(prefix="querytasks-realtrig-bare-"))
    try:
        state = emulators.wait_ready()
        headers, waits = _bare_requests(state)
        spec_file = folder / "spec.json"
        chance = random.Random(11)
        spec_file.write_text(
            json.dumps(
                {
                    "headers": headers,
                    "schedule": DEFAULT_SCHEDULE,
                    # [url, headers index, platform, first poll after (s)]
                    "waits": [[*w, chance.uniform(0, DEFAULT_SCHEDULE["initial"])] for w in waits],
                }
            )
        )
        go_at = emulators.go()
        baseline = subprocess.Popen(
            [sys.executable, __file__, "bare", str(spec_file)],
            start_new_session=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        watch = TreeWatch(baseline.pid)
        while baseline.poll() is None:
            watch.sample()
            time.sleep(0.5)
        if baseline.returncode:
            raise RuntimeError(f"the baseline process failed (exit {baseline.returncode})")
        # A file, not a pipe: the result (every wait's time) outgrows a pipe nobody reads yet.
        result = json.loads(spec_file.with_name("result.json").read_text())
        # The process has exited: its own rusage is the exact figure (the sampler is a cross-check).
        cpu = result["cpu_s"]
    finally:
        if baseline is not None and baseline.poll() is None:
            kill_tree(baseline)
        answered = emulators.stop()
        shutil.rmtree(folder, ignore_errors=True)
    seen = result["seen"]  # seconds after its start that each wait saw its query finished
    deferred_s = sum(seen)
    calls, per_operation = api_calls(answered)
    return {
        "phase": "bare aiohttp GET per wait per poll",
        "waits": len(seen),
        "accounts": accounts * 3,
        "finished": sum(s > 0 for s in seen),
        "api_calls": calls,
        "api_calls_per_operation": per_operation,
        "gets": result["gets"],
        "http_429": sum(answered.get("http_429", {}).values()),
        "wall_s": round(result["wall_s"], 1),
        "cpu_s": round(cpu, 1),
        "cpu_s_sampled": round(watch.cpu, 1),
        "wait_hours": round(deferred_s / 3600, 3),
        "cpu_s_per_wait_hour": round(cpu / (deferred_s / 3600), 3),
        "peak_rss_mib": round(watch.peak_rss / 2**20, 1),
        "started_after_go_s": round(result["started"] - go_at, 2),
    }


def _bare_requests(state: dict[str, Any]) -> tuple[list[dict[str, str]], list[list[Any]]]:
    """Per account the headers of an authenticated status GET (tokens fetched here, once), and
    per wait ``[url, headers index, platform]``."""
    from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
    from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
    from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
    from airflow_provider_querytasks.testing import connection_env

    hooks = {"shoplazza": ShoplazzaHook, "data_kiosk": DataKioskHook, "adobe": AdobeQueryServiceHook}
    headers: list[dict[str, str]] = []
    waits: list[list[Any]] = []
    for platform, conns in connections_of(state, "bare").items():
        for conn, account in zip(conns, state["accounts"][platform], strict=True):
            name, value = connection_env(conn)
            os.environ[name] = value
            api = account["urls"]["api"]
            first_url = STATUS_URLS[platform].format(api=api, id=account["ids"][0])
            headers.append(hooks[platform](conn["conn_id"]).client.credential_headers(first_url, "bench"))
            waits.extend(
                [STATUS_URLS[platform].format(api=api, id=query_id), len(headers) - 1, platform]
                for query_id in account["ids"]
            )
    return headers, waits


def bare_waits(spec_file: str) -> None:
    """The baseline process: plain asyncio and aiohttp, one GET per wait per poll."""
    import asyncio
    import resource

    import aiohttp

    spec = json.loads(Path(spec_file).read_text())
    schedule = spec["schedule"]
    started = time.time()
    seen: list[float] = []
    gets = [0]

    def next_interval(elapsed: float) -> float:
        return float(max(schedule["initial"], min(schedule["maximum"], schedule["proportion"] * elapsed)))

    async def wait(
        session: aiohttp.ClientSession, url: str, headers: dict[str, str], platform: str, first: float
    ) -> None:
        begun = time.monotonic()
        await asyncio.sleep(first)
        while True:
            async with session.get(url, headers=headers) as answer:
                body = await answer.read()
            gets[0] += 1
            document = json.loads(body)
            document = document.get("data", document) if isinstance(document, dict) else document
            remote = document.get("query_status", document.get("processingStatus", document.get("state")))
            if answer.status == 200 and remote not in RUNNING[platform]:
                seen.append(time.monotonic() - begun)
                return
            await asyncio.sleep(next_interval(time.monotonic() - begun))

    async def run_all() -> None:
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(
                *(
                    wait(session, url, spec["headers"][index], platform, first)
                    for url, index, platform, first in spec["waits"]
                )
            )

    begun = time.monotonic()
    asyncio.run(run_all())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "started": started,
        "seen": seen,
        "gets": gets[0],
        "wall_s": time.monotonic() - begun,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    target = Path(spec_file).with_name("result.json")
    partial = target.with_name("result.json.part")
    partial.write_text(json.dumps(result))
    partial.replace(target)


# -- the section --------------------------------------------------------------------------------
def has_coalescing() -> bool:
    """Whether this build of the provider has the ``[querytasks] coalesce_polls`` switch."""
    from airflow_provider_querytasks.get_provider_info import get_provider_info

    options = get_provider_info().get("config", {}).get("querytasks", {}).get("options", {})
    return "coalesce_polls" in options


#: Benchmark 7's phases, in the order they run (``--real-phases`` picks some).
PHASES = ("per_wait", "coalesced", "floor", "bare")


def real_triggerer(
    waits: int,
    accounts: int,
    durations: tuple[float, float],
    timeout: float,
    phases_wanted: tuple[str, ...] = PHASES,
) -> dict[str, Any]:
    """Benchmark 7: per-wait and coalesced polling in a real triggerer, Airflow's floor (the same
    task instances on ``DateTimeTrigger``) and the bare-GET baseline, all in this run (or the
    phases in ``phases_wanted``; the ratios need all four)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)  # leave through the finally blocks
    args = {"waits": waits, "accounts": accounts, "durations": durations, "timeout": timeout}
    phases: list[dict[str, Any]] = []
    coalescing = has_coalescing()
    if "coalesced" in phases_wanted and not coalescing:
        raise SystemExit("--real-phases coalesced: this build has no [querytasks] coalesce_polls switch")
    if {"per_wait", "coalesced", "floor"} & set(phases_wanted):
        with AirflowHome(waits) as home:
            if "per_wait" in phases_wanted:
                phases.append(triggerer_phase(home, "per_wait", args, coalesce=False))
            if "coalesced" in phases_wanted:
                phases.append(triggerer_phase(home, "coalesced", args, coalesce=None))
            if "floor" in phases_wanted:
                phases.append(triggerer_phase(home, "floor", args, coalesce=None, floor=True))
    if "bare" in phases_wanted:
        phases.append(bare_phase(None, args))
    if set(phases_wanted) != set(PHASES):
        return {
            "summary": {"phases": ",".join(phases_wanted), "ratios": "need every phase"},
            "phases": phases,
        }
    per_wait, measured, floor, bare = phases
    all_finished = measured["finished"] == measured["waits"]
    summary = {
        "waits": measured["waits"],
        "accounts": measured["accounts"],
        "query_durations_s": f"{durations[0]:g}-{durations[1]:g} (uniform, after the phase starts)",
        "schedule": "default: 5 s, +10% of elapsed, <= 60 s",
        "build": "coalesced polling" if coalescing else "per-wait polling only (no coalesce_polls switch)",
        "all_finished": all_finished,
        # Calls and CPU of waits that never finished (a stalled triggerer) compare with nothing.
        "api_calls_vs_per_wait": round(measured["api_calls"] / per_wait["api_calls"], 3)
        if all_finished
        else None,
        "api_calls_vs_bare_gets": round(measured["api_calls"] / bare["api_calls"], 3)
        if all_finished
        else None,
        "cpu_per_wait_hour_vs_bare": (
            round(measured["cpu_s_per_wait_hour"] / bare["cpu_s_per_wait_hour"], 2) if all_finished else None
        ),
        "cpu_s_vs_bare_same_waits": round(measured["cpu_s"] / bare["cpu_s"], 2) if all_finished else None,
        "runner_cpu_per_wait_hour_vs_bare": (
            round(measured["runner_cpu_s_per_wait_hour"] / bare["cpu_s_per_wait_hour"], 2)
            if all_finished
            else None
        ),
        "per_wait_cpu_per_wait_hour_vs_bare": round(
            per_wait["cpu_s_per_wait_hour"] / bare["cpu_s_per_wait_hour"], 2
        ),
        # Airflow's own cost of holding the same deferred task instances with no polling at all
        # (DateTimeTrigger): no provider goes below it; what the provider adds is above it.
        "floor_cpu_per_wait_hour_vs_bare": round(
            floor["cpu_s_per_wait_hour"] / bare["cpu_s_per_wait_hour"], 2
        ),
        "above_floor_cpu_per_wait_hour_vs_bare": (
            round(
                (measured["cpu_s_per_wait_hour"] - floor["cpu_s_per_wait_hour"])
                / bare["cpu_s_per_wait_hour"],
                2,
            )
            if all_finished
            else None
        ),
        "floor_worst_loop_lag_ms": floor["worst_loop_lag_ms"],
        "worst_loop_lag_ms": measured["worst_loop_lag_ms"],
        "worst_loop_lag_after_first_polls_ms": measured["worst_loop_lag_after_first_polls_ms"],
        "targets": "all finish; calls <= 0.1x per-wait; cpu/wait-hour <= 0.5x bare; lag < 100 ms",
    }
    return {"summary": summary, "phases": phases}


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # A timeout (CI, `timeout`) sends SIGTERM: stop the triggerer, emulators and PostgreSQL first.
    raise SystemExit(128 + signum)


def main() -> None:
    role, spec_file = sys.argv[1], sys.argv[2]
    if role == "setup":
        setup_waits(spec_file)
    elif role == "bare":
        bare_waits(spec_file)
    else:
        raise SystemExit(f"unknown role {role!r}: setup or bare")


if __name__ == "__main__":
    main()
