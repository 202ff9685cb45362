"""Adobe Query Service hook against the emulator.

Connection, headers, tokens, errors, listing, cancel, templates, files.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_provider_querytasks.common.api.errors import (
    AmbiguousSubmissionError,
    ApiError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    QueryTaskError,
    RateLimitedError,
    RemoteQueryFailedError,
)
from airflow_provider_querytasks.common.transport.clients import RetryPolicy
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.protocols.adobe_query_service import (
    AdobeQueryDefinition,
    created_dataset_id,
    link_query_pairs,
)
from airflow_provider_querytasks.testing.adobe_query_service import AdobeQueryServiceEmulator

from ..helpers import use_connection
from .conftest import operator


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("org_id", "not-an-org", "org_id"),
        ("sandbox", "Prod Sandbox", "sandbox"),
        ("endpoint", "http://adobe.io", "endpoint"),
    ],
)
def test_bad_connection_fields(
    emulator: AdobeQueryServiceEmulator, monkeypatch: pytest.MonkeyPatch, field: str, value: str, name: str
) -> None:
    conn = emulator.connection("bad")
    conn["extra"][field] = value
    use_connection(monkeypatch, conn)
    with pytest.raises(InvalidInputError, match=f"'{name}'"):
        AdobeQueryServiceHook("bad").get_query("x")
    assert emulator.requests == []


def test_every_call_carries_the_four_headers(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    query = hook.create_query(sql="SELECT 1")
    token = emulator.requests_to("ims", "POST")[0]
    assert b"grant_type=client_credentials" in token.body and token.param("client_secret") is None
    sent = emulator.requests_to("api", "POST", r"/queries$")[0]
    assert (sent.header("Authorization") or "").startswith("Bearer ")
    assert sent.header("x-api-key") == emulator.client_id
    assert sent.header("x-gw-ims-org-id") == emulator.org_id
    assert sent.header("x-sandbox-name") == "prod"
    assert json.loads(sent.body)["dbName"] == "prod:all"
    assert query["state"] == "SUBMITTED"


def test_expired_token_401_is_refreshed_once(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    query_id = hook.create_query(sql="SELECT 1")["id"]
    emulator.expire_tokens()
    assert hook.get_query(query_id)["id"] == query_id
    assert len(emulator.requests_to("ims", "POST")) == 2


def test_wrong_api_key_is_permission_denied_with_the_gateway_text(
    emulator: AdobeQueryServiceEmulator, hook: AdobeQueryServiceHook
) -> None:
    hook.create_query(sql="SELECT 1")
    emulator.client_id = "another"
    with pytest.raises((PermissionDeniedError, AuthenticationError), match="403003|Api Key is invalid"):
        hook.get_query("x")


def test_syntax_error_400_and_unknown_query_404(hook: AdobeQueryServiceHook) -> None:
    with pytest.raises(QueryTaskError, match="42601"):
        hook.create_query(sql="SELECT syntax error")
    with pytest.raises(NotFoundError, match="Query not found"):
        hook.get_query("no-such-query")


def test_create_is_not_resent_after_a_5xx_but_429_is(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    emulator.inject(
        action="status", site="api", method="POST", path=r"/queries$", status=502, body="bad gateway"
    )
    with pytest.raises(AmbiguousSubmissionError):
        hook.create_query(sql="SELECT 1")
    emulator.inject(
        action="status",
        site="api",
        method="POST",
        path=r"/queries$",
        status=429,
        body={"error_code": "429050", "message": "Too many requests"},
    )
    hook.create_query(sql="SELECT 1")
    assert len(emulator.requests_to("api", "POST", r"/queries$")) == 3 and len(emulator.queries) == 1


def test_throttling_backs_off_until_it_gives_up(emulator: AdobeQueryServiceEmulator) -> None:
    hook = AdobeQueryServiceHook(retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.05, jitter=0.0))
    hook.create_query(sql="SELECT 1")
    emulator.inject(
        action="status",
        site="api",
        status=429,
        body={"error_code": "429050", "message": "Too many requests"},
        times=None,
    )
    with pytest.raises(RateLimitedError, match="429050"):
        hook.get_query("x")


def test_cancel_running_and_finished(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    emulator.duration = 30.0
    query_id = hook.create_query(sql="SELECT 1")["id"]
    hook.cancel_query(query_id)
    assert hook.get_status(query_id).remote_status == "KILLED"
    hook.cancel_query(query_id)  # 409: already terminal, not an error
    assert emulator.requests_to("api", "PATCH")[-1].status == 409
    hook.soft_delete_query(query_id)
    assert query_id not in {q["id"] for q in hook.iter_queries()}
    assert query_id in {q["id"] for q in hook.iter_queries(exclude_soft_deleted=False)}


def test_listing_follows_next_links_past_the_first_page(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator
) -> None:
    emulator.duration = 60.0  # every query still SUBMITTED when listed, however slow the machine
    ids = []
    for _ in range(5):
        ids.append(hook.create_query(sql="SELECT 1")["id"])
        time.sleep(0.002)  # distinct created times (the cursor is a timestamp)
    listed = [q["id"] for q in hook.iter_queries(limit=2)]
    assert listed == list(reversed(ids))
    assert len(emulator.requests_to("api", "GET", r"/queries$")) == 3
    assert [q["id"] for q in hook.iter_queries("state==SUBMITTED", limit=2)] == list(reversed(ids))
    # A walk cut at its page cap is an error naming the list and the cap, never a partial list.
    with pytest.raises(ApiError, match=r"^listQueries: the list did not end within 2 pages"):
        list(hook.iter_queries(limit=2, max_pages=2))


@pytest.mark.parametrize("zone", ["+00:00", "+02:00"])
def test_next_links_with_a_literal_plus_offset_are_followed(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator, zone: str
) -> None:
    emulator.cursor_zone = zone
    ids = []
    for _ in range(5):
        ids.append(hook.create_query(sql="SELECT 1")["id"])
        time.sleep(0.002)  # distinct created times (the cursor is a timestamp)
    listed = [q["id"] for q in hook.iter_queries(limit=2)]
    assert listed == list(reversed(ids))
    # Each next page was asked for with the cursor as the link wrote it, '+' and all.
    starts = [
        r.query["start"][0] for r in emulator.requests_to("api", "GET", r"/queries$") if "start" in r.query
    ]
    assert len(starts) == 2 and all(start.endswith(zone) for start in starts)


def test_link_query_pairs_keep_a_plus_and_decode_percent_escapes() -> None:
    assert link_query_pairs(
        "orderby=%2Bcreated&start=2026-11-20T00:52:34.839+00:00&property=a%3D%3Db&&x"
    ) == [
        ("orderby", "+created"),
        ("start", "2026-11-20T00:52:34.839+00:00"),
        ("property", "a==b"),
        ("x", ""),
    ]


# -- templates, schedules, export ------------------------------------------------------------
def test_templates(hook: AdobeQueryServiceHook) -> None:
    template = hook.create_template("SELECT * FROM t WHERE d = '$day'", "by_day", {"day": "2026-11-20"})
    assert hook.get_template(template["id"])["name"] == "by_day"
    assert [t["id"] for t in hook.list_templates()] == [template["id"]]
    result = operator(template_id=template["id"], query_parameters={"day": "2026-11-21"}).execute({})  # type: ignore[arg-type]
    assert result["state"] == "SUCCESS"


def test_file_download_never_leaves_the_platform_host(hook: AdobeQueryServiceHook) -> None:
    hook.create_query(sql="SELECT 1")
    with pytest.raises(QueryTaskError, match="Refusing to send"):
        hook.client.credential_headers(
            "https://evil.example.com/data/foundation/export/files/x?path=a", "downloadFile"
        )


# -- query definitions and Catalog batches -------------------------------------------------------
def ctas_dataset(hook: AdobeQueryServiceHook) -> str:
    """Run a CTAS query to SUCCESS; the id of the dataset it created."""
    query_id = hook.create_query(
        AdobeQueryDefinition(sql="SELECT 1", ctas_parameters={"datasetName": "out"})
    )["id"]
    deadline = time.monotonic() + 10
    while not hook.get_status(query_id).state.terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    dataset_id = created_dataset_id(hook.get_query(query_id))
    assert dataset_id
    return dataset_id


def test_a_query_definition_or_its_fields_give_the_same_body(
    emulator: AdobeQueryServiceEmulator, hook: AdobeQueryServiceHook
) -> None:
    fields: dict[str, Any] = {
        "sql": "SELECT $x",
        "query_parameters": {"x": 1},
        "name": "n",
        "description": "d",
    }
    hook.create_query(AdobeQueryDefinition(**fields))
    hook.create_query(**fields)
    first, second = (json.loads(r.body) for r in emulator.requests_to("api", "POST", r"/queries$"))
    assert (
        first
        == second
        == {
            "dbName": "prod:all",
            "sql": "SELECT $x",
            "queryParameters": {"x": "1"},
            "name": "n",
            "description": "d",
        }
    )
    with pytest.raises(InvalidInputError, match="'definition'"):
        hook.create_query(AdobeQueryDefinition(sql="SELECT 1"), name="both")
    assert len(emulator.requests_to("api", "POST", r"/queries$")) == 2


def test_wait_for_batch_returns_the_batch_once_catalog_shows_success(
    emulator: AdobeQueryServiceEmulator, hook: AdobeQueryServiceHook
) -> None:
    emulator.batch_delay = 0.3
    dataset_id = ctas_dataset(hook)
    assert emulator.batch_status(next(iter(emulator.batches.values()))) == "processing"
    batch = hook.wait_for_batch(dataset_id, timeout=10, poll=0.05)
    assert batch["status"] == "success" and batch["id"] in emulator.batches
    assert len(emulator.requests_to("api", "GET", r"/batches$")) >= 2


def test_wait_for_batch_fails_on_a_failed_batch(
    emulator: AdobeQueryServiceEmulator, hook: AdobeQueryServiceHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset_id = ctas_dataset(hook)
    monkeypatch.setattr(emulator, "batch_status", lambda batch: "failed")
    with pytest.raises(RemoteQueryFailedError, match=f"of dataset {dataset_id} is failed"):
        hook.wait_for_batch(dataset_id, timeout=10, poll=0.05)


def test_wait_for_batch_gives_up_at_the_timeout(
    emulator: AdobeQueryServiceEmulator, hook: AdobeQueryServiceHook
) -> None:
    emulator.batch_delay = 600.0
    dataset_id = ctas_dataset(hook)
    with pytest.raises(
        RemoteQueryFailedError, match=f"No successful batch of dataset {dataset_id} after 0 s"
    ):
        hook.wait_for_batch(dataset_id, timeout=0.3, poll=0.05)


# -- Data Access downloads (issue 28 item 5) ------------------------------------------------------
def exported_batch(hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator) -> str:
    dataset_id = ctas_dataset(hook)
    return str(hook.wait_for_batch(dataset_id, timeout=5, poll=0.05)["id"])


def file_downloads(emulator: AdobeQueryServiceEmulator) -> list[Any]:
    return [r for r in emulator.requests_to("api", "GET", "/export/files/") if r.param("path")]


def test_file_downloads_accept_the_bytes_the_endpoint_answers(
    hook: AdobeQueryServiceHook, emulator: AdobeQueryServiceEmulator, tmp_path: Any
) -> None:
    emulator.files_per_batch = 1
    records = hook.export_batch(exported_batch(hook, emulator), tmp_path)
    assert records and records[0]["bytes"] == emulator.file_size
    (download,) = file_downloads(emulator)
    assert download.header("Accept") == "application/octet-stream"
    # ...while the JSON calls still ask for JSON.
    listing = emulator.requests_to("api", "GET", "/export/batches/")[0]
    assert listing.header("Accept") == "application/json"


def test_a_download_cut_while_progressing_resumes_without_spending_attempts(
    emulator: AdobeQueryServiceEmulator, tmp_path: Any
) -> None:
    """Each response ends after 1000 bytes (the 60 s limit): 10 cuts for a 10 kB file, with
    3 attempts. Cuts that made progress do not count; the file arrives whole."""
    emulator.files_per_batch, emulator.file_size, emulator.cut_after = 1, 10_000, 1000
    hook = AdobeQueryServiceHook(retry=RetryPolicy(attempts=3, initial=0.01, maximum=0.05, jitter=0.0))
    batch_id = exported_batch(hook, emulator)
    (record,) = hook.export_batch(batch_id, tmp_path)
    assert record["bytes"] == 10_000
    name = record["uri"].rsplit("/", 1)[-1]
    data = (tmp_path / name).read_bytes()
    assert data.startswith(b"PAR1") and data.endswith(b"PAR1") and len(data) == 10_000
    downloads = file_downloads(emulator)
    assert len(downloads) == 10
    assert [d.header("Range") for d in downloads[1:3]] == ["bytes=1000-", "bytes=2000-"]


def test_progressing_cuts_are_bounded(emulator: AdobeQueryServiceEmulator, tmp_path: Any) -> None:
    emulator.files_per_batch, emulator.file_size, emulator.cut_after = 1, 20_000, 100
    hook = AdobeQueryServiceHook(retry=RetryPolicy(attempts=3, initial=0.01, maximum=0.05, jitter=0.0))
    batch_id = exported_batch(hook, emulator)
    with pytest.raises(QueryTaskError, match=r"cut 101 times while progressing \(max_resumes=100\)"):
        hook.export_batch(batch_id, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing left under a final name
