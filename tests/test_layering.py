"""The package's rooms and what each may import (docs/architecture.md draws them).

Every module belongs to one room: a sub-package of ``common/`` (what is sent, how it is sent, how
we wait), a by-kind folder (``hooks/``, ``triggers/``, ``operators/``...) or a top-level module.
:data:`MAY_IMPORT` lists, per room, the rooms its modules may import from this package, at any
level (inside functions too); anything else is a violation. On top of that, no two modules import
each other, directly or through others, at module level.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one

PACKAGE = "airflow_provider_querytasks"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Top-level modules every room above the wire may use: the Airflow compatibility layer, the
#: connection forms' declaration and the package's version.
AIRFLOW_GLUE = ("compat", "version_compat", "connection_forms", "__init__")

#: Room -> the rooms (prefixes of module paths below the package) its modules may import.
#: A room may always import itself. ``hooks.base`` / ``triggers.base`` name the base classes in
#: the by-kind folders (a wait needs a hook's interface; the wait mixin builds a trigger).
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    # what is sent: the call model, validation, the status model, errors. No Airflow.
    "common.api": (),
    # the platforms' calls, described once; token sources describe the token call.
    "protocols": ("common.api", "common.transport.tokens"),
    # how it is sent: clients, rate limits, tokens and their store, fetch, process state.
    "common.transport": ("common.api", "compat", "version_compat", "__init__"),
    "hooks": ("common.api", "common.transport", "common.wait.loop", "protocols", "lineage", *AIRFLOW_GLUE),
    # how we wait: the loop, coalescing, the deadline, notifications, the operator/sensor mixin.
    "common.wait": ("common.api", "common.transport", "hooks.base", "triggers.base", "compat"),
    "notification_sources": ("common.api", "common.transport", "common.wait"),
    "triggers": ("common", "hooks", "notification_sources", "compat"),
    "links": ("protocols", "hooks", "compat"),
    "operators": (
        "common",
        "hooks",
        "protocols",
        "triggers",
        "notification_sources",
        "links",
        "lineage",
        *AIRFLOW_GLUE,
    ),
    # a sensor is an operator: sensors may use operators.base, not a platform's operator module.
    "sensors": (
        "common",
        "hooks",
        "protocols",
        "triggers",
        "notification_sources",
        "links",
        "operators.base",
        *AIRFLOW_GLUE,
    ),
    # the emulators are written from the platforms' specs, not from the client (Airflow's
    # compatibility layer only serves ``testing.dags``, which runs a DAG).
    "testing": ("version_compat", "compat"),
    "compat": ("version_compat",),
    "version_compat": (),
    "connection_forms": (),
    "get_provider_info": ("connection_forms", "__init__"),
    "lineage": (),
    "__init__": (),
    "common": (),  # the package of the three rooms holds no code
}


#: What :func:`imports` names as the "function" of an import under ``if TYPE_CHECKING:``.
TYPE_CHECKING = "TYPE_CHECKING"


def imports(source: str, module: str) -> list[tuple[str, str | None]]:
    """``(imported module, enclosing function or None)`` for every import in ``source``."""
    package = module.rsplit(".", 1)[0]
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == TYPE_CHECKING:
                visit(child, TYPE_CHECKING)  # for the type checker only: never run
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                # ``from pkg.sensors import adobe`` imports pkg.sensors.adobe: count both.
                found.append((base, function))
                found.extend((f"{base}.{alias.name}", function) for alias in child.names)
            visit(child, function)

    visit(ast.parse(source), None)
    return found


def room_of(relative: str) -> str:
    """The room of a module path below the package (``common.wait.loop`` -> ``common.wait``)."""
    for room in sorted(MAY_IMPORT, key=len, reverse=True):
        if relative == room or relative.startswith(f"{room}."):
            return room
    raise KeyError(f"{relative} is in no room: add it to MAY_IMPORT and docs/architecture.md")


def allowed(relative_target: str, room: str) -> bool:
    """Whether a module of ``room`` may import ``relative_target``."""
    if relative_target == "" or relative_target == room or relative_target.startswith(f"{room}."):
        return True
    for prefix in MAY_IMPORT[room]:
        if relative_target == prefix or relative_target.startswith(f"{prefix}."):
            return True
        # ``from pkg.common import wait`` names the room's parent package on its way down.
        if prefix.startswith(f"{relative_target}."):
            return True
    return relative_target == "__version__" and "__init__" in MAY_IMPORT[room]


def relative_name(module: str) -> str:
    """``airflow_provider_querytasks.common.wait.loop`` -> ``common.wait.loop`` (the package's own
    ``__init__`` is ``__init__``)."""
    return module.split(".", 1)[1] if "." in module else "__init__"


def violations(source: str, module: str) -> list[str]:
    """What ``module`` (``airflow_provider_querytasks....``) imports against :data:`MAY_IMPORT`."""
    room = room_of(relative_name(module))
    bad = []
    for target, function in imports(source, module):
        parts = target.split(".")
        if parts[0] != PACKAGE:
            continue
        relative = ".".join(parts[1:])
        if not allowed(relative, room):
            bad.append(f"{module} imports {target}" + (f" (in {function})" if function else ""))
    return sorted(set(bad))


def package_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        modules.append((".".join((PACKAGE, *parts)), path))
    return modules


def test_every_module_imports_only_what_its_room_may() -> None:
    found = [v for module, path in package_modules() for v in violations(path.read_text(), module)]
    assert found == []


def test_every_module_is_in_a_room() -> None:
    for module, _ in package_modules():
        room_of(relative_name(module))


def test_no_import_cycle_at_module_level() -> None:
    """A module-level import graph without cycles: the rooms' order holds module by module."""
    known = {module for module, _ in package_modules()}
    graph: dict[str, set[str]] = {}
    for module, path in package_modules():
        targets = set()
        for target, function in imports(path.read_text(), module):
            while function is None and target and target not in known:
                target = target.rpartition(".")[0]
            if function is None and target in known and target != module and target != PACKAGE:
                targets.add(target)
        graph[module] = targets
    done: set[str] = set()
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            walk(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        walk(module, [])
    assert cycles == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (f"{PACKAGE}.common.api.calls", f"from {PACKAGE}.common.transport.clients import SyncApiClient"),
        (f"{PACKAGE}.common.transport.fetch", f"from {PACKAGE}.common.wait.loop import WaitLoop"),
        (f"{PACKAGE}.common.wait.loop", f"def f():\n    import {PACKAGE}.protocols.shoplazza"),
        (f"{PACKAGE}.common.wait.coalesce", f"from {PACKAGE}.hooks.amazon_data_kiosk import DataKioskHook"),
        (f"{PACKAGE}.hooks.base", f"from {PACKAGE}.common.wait.coalesce import coalesced_wait"),
        (f"{PACKAGE}.hooks.shoplazza", f"from {PACKAGE}.triggers.shoplazza import T"),
        (f"{PACKAGE}.protocols.shoplazza", f"from {PACKAGE}.common.transport.clients import X"),
        (f"{PACKAGE}.sensors.amazon_data_kiosk", f"from {PACKAGE}.operators import amazon_data_kiosk"),
        (f"{PACKAGE}.operators.adobe_query_service", "from ..sensors.adobe_query_service import X"),
        (f"{PACKAGE}.operators.adobe_query_service", f"def helper():\n    from {PACKAGE}.sensors import x"),
        (f"{PACKAGE}.testing.amazon_data_kiosk", f"from {PACKAGE}.protocols.amazon_data_kiosk import X"),
        (f"{PACKAGE}.testing.shoplazza", f"from {PACKAGE}.common.api.validation import required_id"),
    ],
)
def test_the_check_sees_an_import_a_room_may_not_make(module: str, source: str) -> None:
    assert violations(source, module)


def test_the_check_allows_what_the_rooms_may_import() -> None:
    down = f"from {PACKAGE}.common.wait.loop import WaitLoop\nfrom {PACKAGE}.triggers.shoplazza import T\n"
    assert violations(down, f"{PACKAGE}.sensors.shoplazza") == []
    base = f"from {PACKAGE}.operators.base import FailWithoutRetryMixin\n"
    assert violations(base, f"{PACKAGE}.sensors.base") == []
    tokens = f"from {PACKAGE}.common.transport.tokens import TokenSource\n"
    assert violations(tokens, f"{PACKAGE}.protocols.shoplazza") == []


def test_adobe_operators_module_does_not_load_the_sensors() -> None:
    code = (
        "import sys\n"
        f"import {PACKAGE}.operators.adobe_query_service\n"
        f"print({PACKAGE!r} + '.sensors.adobe_query_service' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


#: Rooms that must not import Airflow at module level (directly or through the compat modules):
#: what the protocol layer stands on.
AIRFLOW_FREE_ROOMS = ("common.api", "protocols")
AIRFLOW_FREE_MODULES = (
    "common.transport.tokens",
    "common.transport.process_state",
    "common.transport.ratelimit",
    "common.wait.loop",
    "common.wait.notifications",
)
AIRFLOW_MODULES = ("airflow", f"{PACKAGE}.compat", f"{PACKAGE}.version_compat")


def airflow_imports(source: str, module: str) -> list[str]:
    """The module-level imports of Airflow (directly or through the compat modules) in ``source``."""
    return sorted(
        {
            target
            for target, function in imports(source, module)
            if function is None and any(target == m or target.startswith(f"{m}.") for m in AIRFLOW_MODULES)
        }
    )


def airflow_free_modules() -> list[str]:
    names = [
        relative_name(module)
        for module, _ in package_modules()
        if room_of(relative_name(module)) in AIRFLOW_FREE_ROOMS
    ]
    return sorted({*names, *AIRFLOW_FREE_MODULES})


@pytest.mark.parametrize("name", airflow_free_modules())
def test_modules_of_the_protocol_layer_import_no_airflow(name: str) -> None:
    path = ROOT.joinpath(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    assert airflow_imports(path.read_text(), f"{PACKAGE}.{name}") == []


def test_the_airflow_check_sees_an_airflow_import() -> None:
    module = f"{PACKAGE}.common.transport.tokens"
    assert airflow_imports(f"from {PACKAGE}.compat import mask_secret\n", module)
    assert airflow_imports("from airflow.models import Variable\n", module)
    assert airflow_imports("def f():\n    from airflow.models import Variable\n", module) == []


def test_the_protocol_layer_loads_no_airflow_at_all() -> None:
    """Transitively: importing the three protocol modules loads no ``airflow`` module (a fresh
    interpreter, since this test process has Airflow loaded already)."""
    protocols = [f"{PACKAGE}.protocols.{path.stem}" for path in sorted((ROOT / "protocols").glob("[!_]*.py"))]
    assert len(protocols) == 3, protocols
    probe = (
        "import importlib, sys\n"
        f"for name in {protocols!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT.parent
    ).stdout.strip()
    assert loaded == "[]", loaded


#: What is Amazon-only: the amazon provider, the AWS SDKs, and this package's SQS source.
AMAZON_MODULES = (
    "airflow.providers.amazon",
    "boto3",
    "botocore",
    "aiobotocore",
    "aioboto3",
    f"{PACKAGE}.notification_sources.amazon_sqs",
)


def amazon_imports(source: str, module: str) -> list[str]:
    """Imports of Amazon-only modules in ``source``, at any level (inside functions too)."""
    return sorted(
        {
            target
            for target, _ in imports(source, module)
            if any(target == m or target.startswith(f"{m}.") for m in AMAZON_MODULES)
        }
    )


def common_modules() -> list[tuple[str, Path]]:
    return [(module, path) for module, path in package_modules() if module.split(".")[1:2] == ["common"]]


def test_common_imports_nothing_amazon() -> None:
    found = {module: amazon_imports(path.read_text(), module) for module, path in common_modules()}
    assert {module: names for module, names in found.items() if names} == {}


@pytest.mark.parametrize(
    "source",
    [
        "import boto3",
        "def f():\n    from airflow.providers.amazon.aws.hooks.sqs import SqsHook",
        "async def f():\n    import aiobotocore.session",
        f"from {PACKAGE}.notification_sources.amazon_sqs import SqsNotificationSource",
    ],
)
def test_the_amazon_check_sees_an_amazon_import(source: str) -> None:
    assert amazon_imports(source, f"{PACKAGE}.common.wait.notifications")


def test_common_loads_nothing_amazon_at_all() -> None:
    """Transitively: importing every ``common`` module loads no Amazon module beyond what Airflow
    itself loads (it reads every installed provider's ``get_provider_info``), in a fresh
    interpreter."""
    names = [module for module, _ in common_modules()]
    probe = (
        "import importlib, sys\n"
        f"amazon = {AMAZON_MODULES!r}\n"
        "def loaded():\n"
        "    return {m for m in sys.modules if any(m == a or m.startswith(a + '.') for a in amazon)}\n"
        f"importlib.import_module({PACKAGE + '.compat'!r})\n"
        "airflow_own = loaded()\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(loaded() - airflow_own))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT.parent,
        timeout=120,
    ).stdout.strip()
    assert loaded.splitlines()[-1] == "[]", loaded
