"""End to end on a real Airflow: scheduler, executor, a separate triggerer (and 3.x's API server).

Usage: ``python scripts/e2e.py`` with the Python of an environment that has Airflow and this
provider (``scripts/e2e VENV`` does that). From nothing it creates a throwaway ``AIRFLOW_HOME``,
copies ``example_dags/`` and ``tests/e2e/`` DAGs into its DAG folder, migrates the metadata DB,
starts the three emulators on 127.0.0.1 with distinctive secrets, points the default
connections at them through ``AIRFLOW_CONN_*`` variables, starts Airflow's components, triggers
every DAG through the CLI, kills one deferred task through the API (3.x) or the metadata DB
(2.11, as the UI does), waits for every run and stops what it started.

Checks: the example runs succeed and the failing one fails with the remote error text in its
log; every waiting task went through ``deferred``; the fetched files exist with their row
counts; no submission was sent twice; the killed task's query was cancelled remotely; no secret
appears in any log file. Prints one line per DAG run and exits non-zero on any failed check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOGICAL_DATE = "2026-11-20T00:00:00+00:00"
#: dag id -> (expected state, tasks that must have been deferred).
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "example_shoplazza_daily_export": ("success", ("export_purchases",)),
    "example_shoplazza_backfill_with_sensor": ("success", ("export_three_days", "wait_for_pageviews")),
    "example_data_kiosk_sales_and_traffic": ("success", ("sales_and_traffic_by_date",)),
    "example_adobe_query_service_daily_ctas": ("success", ("daily_page_views",)),
    "e2e_adobe_query_fails": ("failed", ("failing_query",)),
    "e2e_adobe_query_killed": ("failed", ("long_query",)),
    # Query Service's PostgreSQL interface (a real PostgreSQL behind the emulator): no deferral.
    "example_adobe_sql_quality_and_export": ("success", ()),
    "e2e_adobe_sql_check_fails": ("failed", ()),
}
KILLED = ("e2e_adobe_query_killed", "long_query")
#: Runs on the asset event of the sales query's SQS notification (Airflow 3 with the messaging extra).
NOTIFIED = "example_data_kiosk_on_notification"
RUN_TIMEOUT = 420.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def has_messaging() -> bool:
    try:
        import airflow.providers.common.messaging  # noqa: F401
    except ImportError:
        return False
    return True


def airflow_version() -> tuple[int, ...]:
    from airflow import __version__

    return tuple(int(part) for part in __version__.split(".")[:2])


class E2E:
    #: What a query of the metadata DB raises while it is not there or not migrated yet.
    db_error: type[Exception] = sqlite3.Error
    #: A failed run's Airflow home is kept only when this environment variable is set (``None``:
    #: always kept).
    keep_home_variable: str | None = None

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="querytasks-e2e-"))
        self.output = self.home / "output"
        self.v3 = airflow_version() >= (3, 0)
        self.event_driven = self.v3 and has_messaging()
        self.api_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.secrets: list[str] = []
        self.emulators: dict[str, Any] = {}
        self.failures: list[str] = []
        self.begun = time.monotonic()

    # -- setup --------------------------------------------------------------------------------
    def environment(self) -> None:
        dags = self.home / "dags"
        shutil.copytree(ROOT / "example_dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "tests" / "e2e" / "e2e_failures.py", dags / "e2e_failures.py")
        shutil.copy(ROOT / "tests" / "e2e" / "e2e_adobe_sql.py", dags / "e2e_adobe_sql.py")
        env = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Only the runs this script triggers: no scheduled run beside them.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW_VAR_QUERYTASKS_OUTPUT_DIR": str(self.output),
            "QUERYTASKS_EXAMPLE_POLL_SECONDS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        if self.v3:
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
                    "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
                    "AIRFLOW__API__PORT": str(self.api_port),
                    "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                }
            )
        os.environ.update(env)

    def start_emulators(self) -> None:
        from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator
        from airflow_provider_querytasks.testing.amazon_data_kiosk import DataKioskEmulator
        from airflow_provider_querytasks.testing.shoplazza import ShoplazzaEmulator

        tag = uuid.uuid4().hex[:12]
        secrets: dict[str, dict[str, Any]] = {
            "shoplazza": {"access_token": f"shz-token-{tag}"},
            "data_kiosk": {
                "client_secret": f"dk-secret-{tag}",
                "refresh_token": f"Atzr|dk-refresh-{tag}",
                "aws_secret_access_key": f"aws-secret-{tag}",
            },
            "adobe": {"client_secret": f"adobe-secret-{tag}"},
        }
        self.emulators = {
            # Queries run for 12 s: long enough that every wait really is deferred (a deferral
            # resumed within a scheduler loop can race the executor's report of the first part).
            # Shoplazza's run 20 s: its sensor starts only after the submitting task has ended,
            # and on a loaded machine 12 s were gone by its first poke (nothing left to defer).
            "shoplazza": ShoplazzaEmulator(duration=20.0, **secrets["shoplazza"]).start(),
            "data_kiosk": DataKioskEmulator(duration=12.0, **secrets["data_kiosk"]).start(),
            "adobe": AdobeQueryServiceEmulator(duration=12.0, **secrets["adobe"]).start(),
        }
        from airflow_provider_querytasks.testing.postgres import LocalPostgres

        # Query Service's PostgreSQL interface: its environment() then has the SQL connection too.
        self.emulators["adobe"].attach_postgres(LocalPostgres().start())
        self.secrets = [value for group in secrets.values() for value in group.values()]
        for emulator in self.emulators.values():
            # With Data Kiosk's, the SQS queue that the notification-driven example DAG (Airflow 3
            # with the messaging extra) watches for the sales query's completion notification.
            os.environ.update(emulator.environment())

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, timeout=300
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done

    def start(
        self, *args: str, log_name: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` in its own process group, output to ``<log_name>.out``.

        ``env`` adds to this process's environment (what differs between two of a kind).
        """
        log = (self.home / f"{log_name or args[0]}.out").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self.processes.append(process)
        return process

    def start_airflow(self) -> None:
        self.airflow("db", "migrate")
        if self.v3:
            self.start("api-server", "--port", str(self.api_port))
            self.wait_for(
                lambda: self.http("GET", "/api/v2/monitor/health") is not None, 120, "the API server"
            )
            self.start("dag-processor")
        self.start("scheduler")
        self.scheduler = self.processes[-1]
        self.start("triggerer")

    # -- helpers ------------------------------------------------------------------------------
    def http(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.loads(answer.read() or b"null")
        except OSError:
            return None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """A REST API call (3.x) that raises on any error, with the answer's text."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from None

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db", timeout=30) as db:
            return db.execute(sql, params).fetchall()

    @staticmethod
    def wait_for(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(1)
        raise TimeoutError(f"timed out waiting for {what}")

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)

    # -- the run ------------------------------------------------------------------------------
    def trigger_all(self) -> dict[str, float]:
        def parsed() -> bool:
            found = {row[0] for row in self.query("SELECT dag_id FROM dag")} if self.db_ready() else set()
            return set(EXPECTED) | ({NOTIFIED} if self.event_driven else set()) <= found

        self.wait_for(parsed, 180, "every DAG to be parsed")
        return {dag_id: self.trigger(dag_id, LOGICAL_DATE) for dag_id in EXPECTED}

    def trigger(
        self, dag_id: str, logical_date: str | None = None, conf: dict[str, Any] | None = None
    ) -> float:
        """Unpause the DAG and start run ``e2e__<dag_id>``; returns when (``time.monotonic()``).

        Through the REST API on 3.x (a CLI call costs seconds of CPU: Airflow is imported each
        time), the CLI on 2.11.
        """
        run_id = f"e2e__{dag_id}"
        if self.v3:
            self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            self.api(
                "POST",
                f"/api/v2/dags/{dag_id}/dagRuns",
                {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf or {}},
            )
        else:
            self.airflow("dags", "unpause", dag_id)
            when = ["--exec-date", logical_date] if logical_date else []
            extra = ["--conf", json.dumps(conf)] if conf else []
            self.airflow("dags", "trigger", dag_id, "--run-id", run_id, *when, *extra)
        return time.monotonic()

    def db_ready(self) -> bool:
        try:
            self.query("SELECT 1 FROM dag LIMIT 1")
            return True
        except self.db_error:
            return False

    def task_state(self, dag_id: str, task_id: str) -> str | None:
        rows = self.query(
            "SELECT state FROM task_instance WHERE dag_id=? AND task_id=? AND run_id=?",
            dag_id,
            task_id,
            f"e2e__{dag_id}",
        )
        return rows[0][0] if rows else None

    def kill_deferred_task(self) -> None:
        dag_id, task_id = KILLED
        run_id = f"e2e__{dag_id}"
        self.wait_for(lambda: self.task_state(dag_id, task_id) == "deferred", 180, f"{task_id} to defer")
        # Kill it while the triggerer is polling it (its query is the one with the duration marker).
        adobe = self.emulators["adobe"]
        (query_id,) = [
            q.id for q in adobe.queries.values() if "emulator-duration" in str(q.request.get("sql"))
        ]
        # Its own GET or a list page: coalesced polling may answer the wait from GET /queries.
        self.wait_for(lambda: adobe.polls_of(query_id) > 0, 120, "the trigger to poll")
        if self.v3:
            answer = self.http(
                "PATCH",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                {"new_state": "failed"},
            )
            self.check(answer is not None, "marking the deferred task failed through the API did not answer")
        else:
            subprocess.run(
                [sys.executable, "-c", _MARK_FAILED_211, dag_id, run_id, task_id],
                check=True,
                timeout=120,
                capture_output=True,
            )

    def wait_for_runs(self, started: dict[str, float]) -> dict[str, tuple[str, float]]:
        finished: dict[str, tuple[str, float]] = {}

        def all_done() -> bool:
            for dag_id in EXPECTED:
                rows = self.query(
                    "SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", dag_id, f"e2e__{dag_id}"
                )
                if dag_id not in finished and rows and rows[0][0] in ("success", "failed"):
                    finished[dag_id] = (rows[0][0], time.monotonic() - started[dag_id])
            return len(finished) == len(EXPECTED)

        try:
            self.wait_for(all_done, RUN_TIMEOUT, "every DAG run to finish")
        except TimeoutError as exc:
            self.failures.append(str(exc))
        return finished

    def task_logs(self, dag_id: str, task_id: str) -> str:
        folder = self.home / "logs"
        texts = [
            path.read_text(errors="replace")
            for path in folder.rglob("*")
            if path.is_file() and f"dag_id={dag_id}" in str(path) and f"task_id={task_id}" in str(path)
        ]
        return "\n".join(texts)

    def verify(self, finished: dict[str, tuple[str, float]]) -> None:
        from airflow import __version__

        for dag_id, (expected_state, deferred_tasks) in EXPECTED.items():
            state, seconds = finished.get(dag_id, ("unfinished", float("nan")))
            deferred = all("DEFERRED" in self.task_logs(dag_id, task).upper() for task in deferred_tasks)
            flag = ("yes" if deferred else "no") if deferred_tasks else "-"  # "-": nothing waits
            print(f"{dag_id:<44} airflow={__version__:<7} state={state:<8} {seconds:6.1f}s deferred={flag}")
            self.check(state == expected_state, f"{dag_id} ended {state}, expected {expected_state}")
            self.check(deferred, f"{dag_id}: a waiting task did not go through the triggerer")
        check_log = self.task_logs("e2e_adobe_sql_check_fails", "unvalidated_columns")
        self.check(
            "null_check" in check_log and "unique_check" in check_log,
            "the failed data-quality check's log does not name the failed checks",
        )
        failing_log = self.task_logs("e2e_adobe_query_fails", "failing_query")
        self.check(
            "Function [varchar] not defined" in failing_log, "the failed query's error text is not in its log"
        )
        adobe = self.emulators["adobe"]

        def cancelled() -> bool:
            patches = adobe.requests_to("api", "PATCH", r"/queries/")
            return any(b'"cancel"' in r.body for r in patches)

        # The run is marked failed first and the triggerer cancels the query just after: when the
        # killed run is the last to end, this check comes before the cancel does.
        try:
            self.wait_for(cancelled, 60, "the killed task's query to be cancelled")
        except TimeoutError:
            self.failures.append("the killed task's query was not cancelled remotely")
        if self.event_driven:
            self.verify_notified_run()
        self.check_submissions()
        self.check_files()

    def check_secrets(self) -> int:
        """No secret in any log: the components' output and every log file (tasks, triggers,
        DAG processing). Returns how many files were read."""
        files = [p for p in self.home.rglob("*.log") if p.is_file()] + list(self.home.glob("*.out"))
        # The IMS tokens still valid (also the PostgreSQL interface's password): never logged.
        self.secrets.extend(self.emulators["adobe"].tokens)
        for path in files:
            text = path.read_text(errors="replace")
            leaked = [secret for secret in self.secrets if secret in text]
            self.check(not leaked, f"{len(leaked)} secret value(s) appear in {path.relative_to(self.home)}")
        return len(files)

    def verify_notified_run(self) -> None:
        """The asset watcher read the notification off the emulator's SQS queue and ran the DAG.

        The scheduler so far ran without ``use_job_schedule`` (only the triggered runs), which
        also keeps it from creating asset-triggered runs: pause the cron DAGs, then restart it
        with the job schedule on, so that the queued asset event becomes a run.
        """
        started = time.monotonic()
        for dag_id in EXPECTED:
            self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
        if self.scheduler is not None:
            # A LocalExecutor scheduler can take minutes to wind its workers down on SIGTERM;
            # every run has ended here, so nothing is lost by killing it after a grace period.
            self.terminate(self.scheduler)
        os.environ["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "True"
        self.start("scheduler", log_name="scheduler-with-job-schedule")

        def finished() -> bool:
            states = {row[0] for row in self.query("SELECT state FROM dag_run WHERE dag_id=?", NOTIFIED)}
            return bool(states & {"success", "failed"})

        try:
            self.wait_for(finished, 180, f"{NOTIFIED} to run on the notification")
        except TimeoutError as exc:
            self.failures.append(str(exc))
            return
        states = [row[0] for row in self.query("SELECT state FROM dag_run WHERE dag_id=?", NOTIFIED)]
        print(
            f"{NOTIFIED:<44} runs={states} on the SQS asset event, "
            f"{time.monotonic() - started:.1f}s after the others ended"
        )
        self.check(states == ["success"], f"{NOTIFIED}: runs ended {states}, expected one success")
        queue = self.emulators["data_kiosk"].sqs.messages("data-kiosk-notifications")
        self.check(not queue, "the notification was not taken off the queue")

    def check_submissions(self) -> None:
        shoplazza = self.emulators["shoplazza"].requests_to("api", "GET", r"/data/query$")
        keys = [(r.param("event"), r.param("beginTime"), r.param("endTime")) for r in shoplazza]
        self.check(len(keys) == len(set(keys)) == 5, f"Shoplazza submissions: {keys}")
        for name, path in (("data_kiosk", r"/queries$"), ("adobe", r"/queries$")):
            bodies = [r.body for r in self.emulators[name].requests_to("api", "POST", path)]
            self.check(len(bodies) == len(set(bodies)), f"{name}: a query was submitted twice")

    def check_files(self) -> None:
        files = {p.relative_to(self.output).as_posix(): p for p in self.output.rglob("*") if p.is_file()}
        sql_exports = [p for name, p in files.items() if name.startswith("example_adobe_sql_")]
        self.check(
            len(sql_exports) == 1
            and sql_exports[0].name == "page_summary.csv"
            and sql_exports[0].read_text().startswith("page_name,events,page_views,revenue\n"),
            f"the Adobe SQL export: {sorted(str(p) for p in sql_exports)}",
        )
        csv = [p for name, p in files.items() if name.endswith(".csv") and p not in sql_exports]
        self.check(len(csv) == 5, f"expected 5 CSV exports, found {sorted(files)}")
        self.check(all(p.read_bytes().count(b"\n") == 101 for p in csv), "a CSV export lacks rows")
        # The sales DAG's page, and on Airflow 3 the same page fetched again by the notified run.
        jsonl = [p for name, p in files.items() if name.endswith(".jsonl")]
        self.check(
            len(jsonl) == (2 if self.event_driven else 1)
            and all(p.read_bytes().count(b"\n") == 10 for p in jsonl),
            f"Data Kiosk pages: {sorted(name for name in files if name.endswith('.jsonl'))}",
        )
        parquet = [p for name, p in files.items() if name.endswith(".parquet")]
        self.check(len(parquet) == 2, "the Adobe export files are missing")
        self.check(
            not any(".part" in name or name.startswith(".") for name in files), "a partial file was left"
        )

    @staticmethod
    def terminate(*processes: subprocess.Popen[bytes], grace: float = 30) -> None:
        """SIGTERM each process group, and SIGKILL the ones still running after ``grace`` seconds."""
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                print(f"({process.args!r} ignored SIGTERM for {grace:.0f}s: killed)")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop(self) -> None:
        self.terminate(*self.processes)
        for emulator in self.emulators.values():
            emulator.stop()
            if getattr(emulator, "postgres", None) is not None:
                emulator.postgres.stop()

    def run(self) -> int:
        self.environment()
        return self.run_steps(self.end_to_end)

    def end_to_end(self) -> None:
        self.start_emulators()
        self.start_airflow()
        started = self.trigger_all()
        self.kill_deferred_task()
        self.verify(self.wait_for_runs(started))
        self.check_secrets()

    def run_steps(self, steps: Callable[[], None]) -> int:
        """Run ``steps`` and stop every component, also when interrupted; print the failures and
        keep the Airflow home of a failed run (see :attr:`keep_home_variable`), else remove it;
        the exit code."""
        try:
            steps()
        except (KeyboardInterrupt, SystemExit) as exc:
            self.failures.append(f"interrupted ({type(exc).__name__})")
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.stop()
        for failure in self.failures:
            print(f"FAILED: {failure}")
        print(f"({time.monotonic() - self.begun:.0f}s in all)")
        variable = self.keep_home_variable
        if self.failures and (variable is None or os.environ.get(variable)):
            print(f"(Airflow home kept for inspection: {self.home})")
        else:
            shutil.rmtree(self.home, ignore_errors=True)
            if self.failures:
                print(f"({variable}=1 keeps the Airflow home, its logs, of a failed run)")
        return 1 if self.failures else 0


# Airflow 2.11 has no API without the webserver: set the state as the UI does, through the models.
_MARK_FAILED_211 = """
import sys
from airflow.models import TaskInstance
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
dag_id, run_id, task_id = sys.argv[1:4]
with create_session() as session:
    ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id).one()
    ti.set_state(TaskInstanceState.FAILED, session=session)
"""


if __name__ == "__main__":
    sys.exit(E2E().run())
