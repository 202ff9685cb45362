"""Without the ``openlineage`` extra nothing of OpenLineage is imported: operators load as before."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    f"airflow_provider_querytasks.{kind}.{platform}"
    for kind in ("operators", "sensors", "links")
    for platform in ("adobe_query_service", "amazon_data_kiosk", "shoplazza")
    if not (kind == "links" and platform != "adobe_query_service")
]

# Blocks the OpenLineage client and the provider's code (as if the extra were not installed; Airflow
# itself may still read the installed provider's metadata), then imports the modules.
PROGRAM = f"""
import importlib, sys

def blocked(name):
    return name == "openlineage" or name.startswith("openlineage.") or (
        name.startswith("airflow.providers.openlineage.")
        and name != "airflow.providers.openlineage.get_provider_info"
    )

class NoOpenLineage:
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ImportError(f"blocked: {{name}}")
        return None

sys.meta_path.insert(0, NoOpenLineage())
for module in {MODULES!r}:
    importlib.import_module(module)
loaded = sorted(m for m in sys.modules if blocked(m))
print("loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_operator_modules_import_nothing_of_openlineage() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
