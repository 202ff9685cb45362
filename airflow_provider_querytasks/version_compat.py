"""Airflow version flags, computed once from ``airflow.__version__``.

Read by :mod:`airflow_provider_querytasks.compat` (which turns them into capabilities for the
rest of the package), by :mod:`airflow_provider_querytasks.testing.dags` and by tests.
"""

from __future__ import annotations

from packaging.version import Version


def _airflow_version() -> Version:
    from airflow import __version__

    return Version(Version(__version__).base_version)


AIRFLOW_VERSION = _airflow_version()
AIRFLOW_V_3_0_PLUS = Version("3.0.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_1_PLUS = Version("3.1.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_2_PLUS = Version("3.2.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= AIRFLOW_VERSION

__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
]
