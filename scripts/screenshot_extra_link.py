"""The Adobe task's extra link on a real Airflow 3: REST API check and a headless-browser screenshot.

Starts a throwaway Airflow (api-server, dag-processor, scheduler, triggerer; the same set-up as
scripts/e2e.py, on free ports) against the Adobe emulator, runs the Adobe example DAG, then:

1. asks the REST API for the query task's extra links and checks that "Adobe Query" is the
   Experience Platform page of the query the task submitted;
2. opens the task instance's Details tab in headless Chromium and saves a screenshot (look at
   it: the "Adobe Query" button is under "Extra Links").

Usage: scripts/screenshot-extra-link [VENV] [PNG]  (PNG default: <tmp>/querytasks-extra-link.png).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from e2e import E2E, airflow_version

DAG_ID = "example_adobe_query_service_daily_ctas"
TASK_ID = "daily_page_views"
RUN_ID = "extra_link__check"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1500,1000",
    # The UI is a single-page app: give its scripts time to fetch the task and its links.
    "--virtual-time-budget=20000",
)


class ExtraLinkCheck(E2E):
    def start_emulators(self) -> None:
        from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator

        # Long enough that the task really defers: its link is there while it waits, too.
        self.emulators = {"adobe": AdobeQueryServiceEmulator(duration=8.0).start()}
        for emulator in self.emulators.values():
            os.environ.update(emulator.environment())

    def trigger(self) -> None:
        self.wait_for(
            lambda: self.db_ready() and bool(self.query("SELECT 1 FROM dag WHERE dag_id=?", DAG_ID)),
            180,
            "the Adobe example DAG to be parsed",
        )
        self.airflow("dags", "unpause", DAG_ID)
        self.airflow(
            "dags", "trigger", DAG_ID, "--run-id", RUN_ID, "--logical-date", "2026-11-20T00:00:00+00:00"
        )
        self.wait_for(
            lambda: (
                self.query(
                    "SELECT state FROM task_instance WHERE dag_id=? AND run_id=? AND task_id=?",
                    DAG_ID,
                    RUN_ID,
                    TASK_ID,
                )
                in ([("success",)], [("failed",)])
            ),
            300,
            "the query task to finish",
        )

    def expected_link(self) -> str:
        from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
        from airflow_provider_querytasks.protocols.adobe_query_service import ui_query_url

        (query_id,) = self.emulators["adobe"].queries
        settings = AdobeQueryServiceHook().settings
        return ui_query_url(settings.org_id, settings.sandbox, query_id)

    def check_rest_api(self) -> str:
        answer: Any = self.http(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(RUN_ID)}/taskInstances/{TASK_ID}/links"
        )
        links = (answer or {}).get("extra_links") or {}
        expected = self.expected_link()
        self.check(
            links == {"Adobe Query": expected}, f"REST API extra links {links!r}, expected {expected!r}"
        )
        print(f"REST API: {TASK_ID} extra links = {links}")
        return expected

    def screenshot(self, png: Path) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            raise RuntimeError("chromium is not installed (the wrapper script installs it with apt-get)")
        # Airflow 3.3's UI shows a task's extra links in its Details tab.
        page = f"http://127.0.0.1:{self.api_port}/dags/{DAG_ID}/runs/{quote(RUN_ID)}/tasks/{TASK_ID}/details"
        with tempfile.TemporaryDirectory(prefix="querytasks-chromium-") as profile:
            subprocess.run(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", page],
                check=True,
                capture_output=True,
                timeout=120,
            )
        self.check(png.exists() and png.stat().st_size > 0, f"no screenshot written to {png}")
        print(f"screenshot of {page}: {png}")

    def run_check(self, png: Path) -> int:
        if airflow_version() < (3, 0):
            print("The extra-link screenshot needs Airflow 3 (its REST API and UI).")
            return 1
        self.environment()
        return self.run_steps(lambda: self.take_screenshot(png))

    def take_screenshot(self, png: Path) -> None:
        self.start_emulators()
        self.start_airflow()
        started = time.monotonic()
        self.trigger()
        print(f"{DAG_ID}.{TASK_ID} finished in {time.monotonic() - started:.1f}s")
        self.check_rest_api()
        self.screenshot(png)


if __name__ == "__main__":
    target = Path(
        sys.argv[1] if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "querytasks-extra-link.png"
    )
    sys.exit(ExtraLinkCheck().run_check(target.resolve()))
