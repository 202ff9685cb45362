"""The package's layers: nothing imports upwards, and operators and sensors not each other."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = "airflow_provider_querytasks"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Layer -> the layers it must never import. ``common`` is shared machinery and knows no
#: platform (nor Amazon SQS: that source of notifications is ``hooks/amazon_sqs.py``); a
#: platform's operators and sensors sit side by side on its hook, protocol and trigger, which
#: know neither. The emulators (``testing``) are written from the platforms'
#: specs, not from the client: they use only their own test infrastructure
#: (``tests/test_emulator_facts.py`` compares the two sides' facts).
FORBIDDEN = {
    "common": ("hooks", "operators", "sensors", "triggers", "protocols", "testing"),
    "protocols": ("hooks", "operators", "sensors", "triggers"),
    "hooks": ("operators", "sensors", "triggers"),
    "triggers": ("operators", "sensors"),
    "operators": ("sensors",),
    "sensors": ("operators",),
    "testing": ("common", "protocols", "hooks", "operators", "sensors", "triggers"),
}

#: A module-level ``__getattr__`` may import lazily what the module used to re-export (a
#: deprecated import path), in these layers.
LAZY_REEXPORT = "__getattr__"
LAZY_REEXPORT_LAYERS = ("common", "operators", "sensors")


def imports(source: str, module: str) -> list[tuple[str, str | None]]:
    """``(imported module, enclosing function or None)`` for every import in ``source``."""
    package = module.rsplit(".", 1)[0]
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
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


def violations(source: str, module: str) -> list[str]:
    """What ``module`` (``airflow_provider_querytasks.<layer>...``) imports against :data:`FORBIDDEN`."""
    parts = module.split(".")
    layer = parts[1] if len(parts) > 2 else None
    bad = []
    for target, function in imports(source, module):
        target_parts = target.split(".")
        if target_parts[0] != PACKAGE or len(target_parts) < 2 or layer not in FORBIDDEN:
            continue
        if target_parts[1] not in FORBIDDEN[layer]:
            continue
        if layer in LAZY_REEXPORT_LAYERS and function == LAZY_REEXPORT:
            continue
        bad.append(f"{module} imports {target}" + (f" (in {function})" if function else ""))
    return sorted(set(bad))


def package_modules() -> list[tuple[str, Path]]:
    return [
        (".".join((PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)), path)
        for path in sorted(ROOT.rglob("*.py"))
    ]


def test_no_layer_imports_a_layer_it_must_not() -> None:
    found = [v for module, path in package_modules() for v in violations(path.read_text(), module)]
    assert found == []


def test_every_layer_is_checked() -> None:
    layers = {module.split(".")[1] for module, _ in package_modules() if module.count(".") >= 2}
    assert set(FORBIDDEN) <= layers


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (f"{PACKAGE}.common.operators", f"from {PACKAGE}.hooks.shoplazza import ShoplazzaHook"),
        (f"{PACKAGE}.common.wait", f"def f():\n    import {PACKAGE}.protocols.shoplazza"),
        (f"{PACKAGE}.sensors.amazon_data_kiosk", f"from {PACKAGE}.operators import amazon_data_kiosk"),
        (f"{PACKAGE}.operators.adobe_query_service", "from ..sensors.adobe_query_service import X"),
        (f"{PACKAGE}.operators.adobe_query_service", f"def helper():\n    from {PACKAGE}.sensors import x"),
        (f"{PACKAGE}.hooks.shoplazza", f"from {PACKAGE}.triggers.shoplazza import T"),
        (f"{PACKAGE}.testing.amazon_data_kiosk", f"from {PACKAGE}.protocols.amazon_data_kiosk import X"),
        (f"{PACKAGE}.testing.shoplazza", f"from {PACKAGE}.common.api import required_id"),
    ],
)
def test_the_check_sees_an_upward_or_sideways_import(module: str, source: str) -> None:
    assert violations(source, module)


def test_the_check_allows_a_lazy_reexport_and_downward_imports() -> None:
    lazy = f"def __getattr__(name):\n    from {PACKAGE}.sensors import adobe_query_service\n"
    assert violations(lazy, f"{PACKAGE}.operators.adobe_query_service") == []
    moved = f"def __getattr__(name):\n    from {PACKAGE}.hooks import amazon_sqs\n"
    assert violations(moved, f"{PACKAGE}.common.notifications") == []
    down = f"from {PACKAGE}.common.wait import WaitLoop\nfrom {PACKAGE}.triggers.shoplazza import T\n"
    assert violations(down, f"{PACKAGE}.sensors.shoplazza") == []


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


@pytest.mark.parametrize("name", ["AdobeQuerySensor", "AdobeScheduledQueryRunSensor"])
def test_sensors_old_import_path_still_works_with_a_warning(name: str) -> None:
    from airflow_provider_querytasks.operators import adobe_query_service as operators
    from airflow_provider_querytasks.sensors import adobe_query_service as sensors

    with pytest.warns(DeprecationWarning, match=f"{name} from airflow_provider_querytasks.sensors"):
        moved = getattr(operators, name)
    assert moved is getattr(sensors, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'AdobeNothing'"):
            operators.AdobeNothing  # noqa: B018


#: Modules the protocol layer imports that must not import Airflow (at module level: the token
#: store backend is installed by ``common/transport.py``, or imported on first use).
AIRFLOW_FREE = (
    "common.api",
    "common.auth",
    "common.errors",
    "common.notifications",
    "common.operations",
    "common.process_state",
    "common.wait",
    "protocols.adobe_query_service",
    "protocols.amazon_data_kiosk",
    "protocols.shoplazza",
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


@pytest.mark.parametrize("name", AIRFLOW_FREE)
def test_modules_of_the_protocol_layer_import_no_airflow(name: str) -> None:
    path = ROOT.joinpath(*name.split(".")).with_suffix(".py")
    assert airflow_imports(path.read_text(), f"{PACKAGE}.{name}") == []


def test_the_airflow_check_sees_an_airflow_import() -> None:
    module = f"{PACKAGE}.common.auth"
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
    f"{PACKAGE}.hooks.amazon_sqs",
)


def amazon_imports(source: str, module: str) -> list[str]:
    """Imports of Amazon-only modules in ``source``, at any level (inside functions too), but for
    a deprecated path's lazy ``__getattr__``."""
    return sorted(
        {
            target
            for target, function in imports(source, module)
            if function != LAZY_REEXPORT
            and any(target == m or target.startswith(f"{m}.") for m in AMAZON_MODULES)
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
        f"from {PACKAGE}.hooks.amazon_sqs import SqsNotificationSource",
    ],
)
def test_the_amazon_check_sees_an_amazon_import(source: str) -> None:
    assert amazon_imports(source, f"{PACKAGE}.common.notifications")


def test_common_loads_nothing_amazon_at_all() -> None:
    """Transitively: importing every ``common`` module loads no Amazon module beyond what Airflow
    itself loads (it reads every installed provider's ``get_provider_info``), in a fresh
    interpreter; the deprecated ``common.notifications.NotificationSource`` path imports the SQS
    source only when used."""
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


def test_the_sqs_source_old_import_path_still_works_with_a_warning() -> None:
    from airflow_provider_querytasks.common import notifications
    from airflow_provider_querytasks.hooks import amazon_sqs

    with pytest.warns(
        DeprecationWarning, match="SqsNotificationSource from airflow_provider_querytasks.hooks"
    ):
        moved = notifications.NotificationSource  # type: ignore[attr-defined]
    assert moved is amazon_sqs.SqsNotificationSource
    with pytest.warns(DeprecationWarning, match="REQUEUE_AT_RECEIVE_COUNT"):
        assert notifications.REQUEUE_AT_RECEIVE_COUNT == amazon_sqs.REQUEUE_AT_RECEIVE_COUNT  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'subscribe'"):
            notifications.subscribe  # type: ignore[attr-defined]  # noqa: B018
