"""The Airflow side of :class:`~airflow_provider_querytasks.common.auth.SharedTokenStore`: Airflow
Variables for the shared records and Airflow's secrets masker for the tokens.

Kept apart from ``common/auth.py`` so the protocol layer imports no Airflow; installed as the
token store backend on import (``common/transport.py`` imports it).
"""

from __future__ import annotations

from airflow_provider_querytasks.common.auth import TokenStoreError, use_token_store_backend
from airflow_provider_querytasks.compat import (
    VariableStoreError,
    aread_variable,
    awrite_variable,
    mask_secret,
    read_variable,
    write_variable,
)


class AirflowVariableTokenStore:
    """Reads and writes the shared token records as Airflow Variables; masks with Airflow's
    secrets masker. Errors of the Variable store become :class:`TokenStoreError`."""

    def read(self, key: str) -> str | None:
        try:
            return read_variable(key)
        except VariableStoreError as error:
            raise TokenStoreError(str(error)) from error

    async def aread(self, key: str) -> str | None:
        try:
            return await aread_variable(key)
        except VariableStoreError as error:
            raise TokenStoreError(str(error)) from error

    def write(self, key: str, value: str, description: str) -> None:
        try:
            write_variable(key, value, description)
        except VariableStoreError as error:
            raise TokenStoreError(str(error)) from error

    async def awrite(self, key: str, value: str, description: str) -> None:
        try:
            await awrite_variable(key, value, description)
        except VariableStoreError as error:
            raise TokenStoreError(str(error)) from error

    def mask(self, secret: str) -> None:
        mask_secret(secret)


use_token_store_backend(AirflowVariableTokenStore())
