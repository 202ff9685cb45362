"""MkDocs hook (``mkdocs.yml``): the benchmark tables, built from ``benchmarks/results/*.json``.

A page writes ``<!-- benchmark: scale -->`` where the table of ``benchmarks/results/scale.json``
goes. Each file holds one section of ``benchmarks/run.py``: the machine it was measured on, and
per row the figures and the exact command that reproduces them. A marker naming no file, or a
results file no page shows, is a warning (``mkdocs build --strict`` fails on it).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.querytasks.benchmarks")

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
MARKER = re.compile(r"<!-- benchmark: (?P<name>[a-z_-]+) -->")
#: What ``benchmarks/run`` writes on every run: not a published figure.
UNPUBLISHED = {"latest.json"}

_shown: set[str] = set()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def benchmark_section(name: str) -> str:
    """The Markdown of one results file: its table, the commands that reproduce it, its notes."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        log.warning("No benchmark results %s", path)
        return ""
    data: dict[str, Any] = json.loads(path.read_text())
    out = [data.get("about", ""), ""]
    out += ["| row | benchmark | result | baseline (same run) | target |", "|---|---|---|---|---|"]
    for row in data["rows"]:
        cells = [row["id"], row["benchmark"], row["result"], row["baseline"], row["target"]]
        out.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    out += [
        "",
        f"*Machine:* {data['machine']}.",
        "",
        "*Reproduce* (from the repository, with the Python of `scripts/bootstrap`'s `.venv`):",
        "",
    ]
    commands: dict[str, list[str]] = {}
    for row in data["rows"]:
        commands.setdefault(row["command"], []).append(row["id"])
    for command, ids in commands.items():
        out.append(f"- row{'s' if len(ids) > 1 else ''} {', '.join(ids)}: `{command}`")
    if data.get("notes"):
        out += ["", "*Notes:*", ""] + [f"- {note}" for note in data["notes"]]
    if data.get("probes"):
        out += [
            "",
            "Measured with probe scripts that alternate the variants in one process (not part of "
            "`benchmarks/run.py`), on the same machine:",
            "",
            "| what | figures |",
            "|---|---|",
        ]
        out += [f"| {_cell(p['what'])} | {_cell(p['figures'])} |" for p in data["probes"]]
    _shown.add(path.name)
    return "\n".join(out) + "\n"


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Start each build with no table shown (``mkdocs serve`` rebuilds in one process)."""
    _shown.clear()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    """Replace every benchmark marker of a page with its section."""
    return MARKER.sub(lambda match: benchmark_section(match.group("name")), markdown)


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Every published results file is shown on some page."""
    for path in sorted(RESULTS.glob("*.json")):
        if path.name not in UNPUBLISHED and path.name not in _shown:
            log.warning(
                "benchmarks/results/%s is on no page (add <!-- benchmark: %s -->)", path.name, path.stem
            )
