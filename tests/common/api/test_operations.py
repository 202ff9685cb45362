"""Operations written once (common/api/operations.py), run by the sync and the async driver alike."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_querytasks.common.api.calls import ApiRequest, ApiResponse
from airflow_provider_querytasks.common.api.errors import ApiError
from airflow_provider_querytasks.common.api.operations import Steps, arun_steps, one_call, run_steps

pytestmark = pytest.mark.line_independent  # the same on every Airflow line: run on one


def answer(request: ApiRequest) -> ApiResponse:
    """A fake server: echoes the path; a path ending in /missing is 404."""
    status = 404 if request.path.endswith("/missing") else 200
    return ApiResponse(status, {}, f'{{"path": "{request.path}"}}'.encode())


async def aanswer(request: ApiRequest) -> ApiResponse:
    await asyncio.sleep(0)
    return answer(request)


def path_of(response: ApiResponse) -> str:
    return str(response.json_object()["path"])


def two_calls(first: str) -> Steps[list[str]]:
    """A first call, then a second one chosen from the first answer (as a cancel then a re-read)."""
    seen = [path_of((yield ApiRequest("GET", first, "first")))]
    if seen[0].endswith("/a"):
        seen.append((yield from one_call(ApiRequest("GET", "/b", "second"), path_of)))
    return seen


@pytest.mark.parametrize(("first", "expected"), [("/a", ["/a", "/b"]), ("/z", ["/z"])])
def test_sync_and_async_drivers_run_the_same_steps(first: str, expected: list[str]) -> None:
    sent: list[str] = []

    def call(request: ApiRequest) -> ApiResponse:
        sent.append(request.operation)
        return answer(request)

    async def acall(request: ApiRequest) -> ApiResponse:
        sent.append(request.operation)
        return await aanswer(request)

    assert run_steps(two_calls(first), call) == expected
    sync_sent = list(sent)
    sent.clear()
    assert asyncio.run(arun_steps(two_calls(first), acall)) == expected
    assert sent == sync_sent == ["first", "second"][: len(expected)]


def test_a_parser_error_reaches_the_caller_of_either_driver() -> None:
    def strict(response: ApiResponse) -> str:
        if response.status != 200:
            raise ApiError(f"HTTP {response.status}")
        return path_of(response)

    with pytest.raises(ApiError, match="HTTP 404"):
        run_steps(one_call(ApiRequest("GET", "/missing", "get"), strict), answer)
    with pytest.raises(ApiError, match="HTTP 404"):
        asyncio.run(arun_steps(one_call(ApiRequest("GET", "/missing", "get"), strict), aanswer))
