"""Apache Airflow provider for asynchronous query tasks.

Shoplazza data query tasks, Amazon Selling Partner API Data Kiosk queries and Adobe Experience
Platform Query Service queries: submit, wait (deferrable), fetch.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
