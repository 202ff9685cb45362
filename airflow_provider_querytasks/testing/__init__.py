"""Local emulators of the three platforms' APIs, for tests and for DAG authors.

``python -m airflow_provider_querytasks.testing serve shoplazza data_kiosk adobe`` serves them on
127.0.0.1 and prints the ``AIRFLOW_CONN_*`` variables that point connections at them.
"""

from __future__ import annotations

import importlib
from typing import Any

from airflow_provider_querytasks.testing.server import (
    EmulatorClock,
    EmulatorServer,
    Fault,
    RecordedRequest,
    connection_env,
)
from airflow_provider_querytasks.testing.storage import ObjectStorageSite

#: Emulator name -> "module:Class"; imported only when asked for.
EMULATORS: dict[str, str] = {
    "shoplazza": "airflow_provider_querytasks.testing.shoplazza:ShoplazzaEmulator",
    "data_kiosk": "airflow_provider_querytasks.testing.amazon_data_kiosk:DataKioskEmulator",
    "adobe": "airflow_provider_querytasks.testing.adobe_query_service:AdobeQueryServiceEmulator",
}


def emulator_class(name: str) -> type[EmulatorServer]:
    """The emulator class registered under ``name`` (one of :data:`EMULATORS`)."""
    try:
        module_name, _, class_name = EMULATORS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown emulator {name!r}; choose from {', '.join(EMULATORS)}") from None
    cls: Any = getattr(importlib.import_module(module_name), class_name)
    return cls  # type: ignore[no-any-return]


__all__ = [
    "EMULATORS",
    "EmulatorClock",
    "EmulatorServer",
    "Fault",
    "ObjectStorageSite",
    "RecordedRequest",
    "connection_env",
    "emulator_class",
]
