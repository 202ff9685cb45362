"""Operators for the Amazon Selling Partner API Data Kiosk."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_querytasks.common.api.errors import InvalidInputError, QueryTaskError
from airflow_provider_querytasks.common.api.status import QueryState, StatusSnapshot
from airflow_provider_querytasks.common.api.validation import required_id
from airflow_provider_querytasks.common.transport.fetch import Destination, destination_for, in_folder
from airflow_provider_querytasks.common.wait.loop import to_seconds
from airflow_provider_querytasks.common.wait.mixin import raise_for_final_state
from airflow_provider_querytasks.compat import AirflowSkipException, BaseOperator, Context
from airflow_provider_querytasks.hooks.amazon_data_kiosk import DataKioskHook
from airflow_provider_querytasks.notification_sources.amazon_sqs import (
    DEFAULT_AWS_CONN_ID,
    SqsNotificationWaitMixin,
)
from airflow_provider_querytasks.operators.base import (
    FailWithoutRetryMixin,
    QueryTaskOperator,
    first_try_started,
    task_instance_name,
)
from airflow_provider_querytasks.protocols.amazon_data_kiosk import (
    MAX_QUERY_LENGTH,
    QueryFinishedNotification,
    account_key,
    mark_query,
    minimal_query_length,
    page_record,
    query_marker,
    validate_query,
)
from airflow_provider_querytasks.triggers.amazon_data_kiosk import DataKioskQueryTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage


#: ``task_state_store`` key prefix of the next page a notification's handling submitted.
NEXT_PAGE_KEY = "querytasks_next_page"


def page_filename(page: int) -> str:
    """``page-0001.jsonl``: the data document of result page ``page`` (1-based)."""
    return f"page-{page:04d}.jsonl"


class DataKioskQueryOperator(SqsNotificationWaitMixin[DataKioskHook], QueryTaskOperator[DataKioskHook]):
    """Run a Data Kiosk GraphQL query: submit, wait, follow result pages, optionally fetch.

    The query is validated before anything is sent: non-empty, at most 8,000 characters with all
    the whitespace, commas and comments GraphQL does not need removed, and valid against the
    shipped Data Kiosk schemas (unknown fields and missing arguments are named). When a DONE
    query carries ``pagination.nextToken`` and ``follow_pagination`` is on, the query text it
    echoes is submitted again with that token, inside the same task (a chain of queries, waited
    for in the worker or deferred), until a page has no token.

    Each page's data document is fetched (when ``destination`` is set) as its own file,
    ``<destination>/page-0001.jsonl``, ``page-0002.jsonl``...: the pages are written as they
    finish and a failure later leaves the earlier pages complete. A DONE query without a data
    document produced no data: the page is recorded with ``data_document_id`` ``None`` and no
    file is written.

    Returns ``{"query_id" (the first page's), "status", "pages": [page, ...], "rows"}`` where a
    page is ``{"query_id", "status", "data_document_id", "error_document_id", "next_token",
    "fetch"}``.

    :param query: the GraphQL query (templated; a path ending in ``.graphql`` is read as a
        template file from the DAG folder or ``template_searchpath``).
    :param destination: a folder (local path, object-storage URI or ``ObjectStoragePath``) for the
        pages' data documents (templated); ``None``: do not fetch.
    :param follow_pagination: submit the next page's query until there is none.
    :param validate_schema: validate against the shipped schemas (turn off for a dataset
        version newer than the provider).
    :param accept_cancelled: a CANCELLED query ends the task successfully instead of failing it.
    :param conn_id: the ``amazon_sp_api`` connection (``amazon_sp_api_default``).
    :param wait_for_completion: wait for the query (else return its id right after submitting).
    :param deferrable: wait in the triggerer.
    :param poll_interval: longest time between polls (``timedelta`` or seconds).
    :param timeout: total wait, deferred time included; on timeout the current query is cancelled.
    :param cancel_on_kill: cancel the current query when the task is killed.
    :param durable: on a task retry, re-attach to the query the previous try stored (Airflow
        3.3+), else to a query of this task instance found with getQueries: every query is
        submitted with its operation named for the task instance (``airflow_`` and 32 hex digits
        of the hash of dag, task, run and map index; an existing name gets it as a suffix), and
        only a query with that name created since the DAG run started is adopted (none, a walk
        over 5 pages, or a chain with further pages: submitted again).
    :param notification_queue_url: the SQS queue the account's
        ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` notifications go to (templated; needs the
        ``amazon`` extra). The wait then ends when the query's notification arrives, and getQuery
        is polled only as a safety net, every ``notification_poll_interval`` at most.
    :param aws_conn_id: the ``aws`` connection that reads the queue (templated).
    :param notification_poll_interval: with a queue, the longest time between safety-net polls.
    """

    hook_class = DataKioskHook
    trigger_class = DataKioskQueryTrigger

    template_fields: Sequence[str] = (
        "conn_id",
        "query",
        "destination",
        "notification_queue_url",
        "aws_conn_id",
    )
    template_ext: Sequence[str] = (".graphql",)
    template_fields_renderers = {"query": "graphql"}
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        query: str,
        destination: Destination | None = None,
        follow_pagination: bool = True,
        validate_schema: bool = True,
        accept_cancelled: bool = False,
        notification_queue_url: str | None = None,
        aws_conn_id: str = DEFAULT_AWS_CONN_ID,
        notification_poll_interval: timedelta | float = timedelta(minutes=15),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.query = query
        self.destination = destination
        self.follow_pagination = follow_pagination
        self.validate_schema = validate_schema
        self.accept_cancelled = accept_cancelled
        self.notification_queue_url = notification_queue_url
        self.aws_conn_id = aws_conn_id
        self.notification_poll_interval = to_seconds(notification_poll_interval, "notification_poll_interval")

    def validate_inputs(self) -> None:
        validate_query(self.query, validate_schema=self.validate_schema)
        self._validate_destination()
        self.notification_source()
        self.resume_state = {}  # the chain's state: one record per page

    def _validate_destination(self) -> None:
        if self.destination is not None:
            if not self.wait_for_completion:
                raise InvalidInputError(
                    "destination",
                    "fetching needs wait_for_completion=True; or use DataKioskDownloadDocumentOperator",
                )
            in_folder(self.destination, page_filename(1))  # rejects an empty destination

    def _marked_query(self, context: Context) -> str | None:
        """The query with its operation named for this task instance (see
        :func:`~..protocols.amazon_data_kiosk.query_marker`), or ``None`` when it cannot be."""
        return mark_query(self.query, query_marker(task_instance_name(context)))

    def submit(self, context: Context) -> str:
        text = self._marked_query(context)
        if text is None:
            self.log.warning(
                "The query cannot be marked for this task instance (it is not one GraphQL "
                "operation): a retry will submit it again rather than re-attach"
            )
            text = self.query
        elif minimal_query_length(text) > MAX_QUERY_LENGTH:
            self.log.warning(
                "Naming the query's operation for this task instance would take it over %d "
                "characters: submitted unnamed, so a retry will submit it again rather than re-attach",
                MAX_QUERY_LENGTH,
            )
            text = self.query
        return self.hook.create_query(text, validate_schema=False)  # validated above

    def find_submitted_query(self, context: Context) -> str | None:
        """A query a previous try of this task instance submitted: one whose operation name
        carries this task instance's marker, created since its first try can have started."""
        text = self._marked_query(context)
        since = first_try_started(context)
        if text is None or since is None:
            self.log.info(
                "No look-up for a previous try's query (%s): submitting again",
                "the query cannot be marked" if text is None else "the DAG run's start is unknown",
            )
            return None
        found = self.hook.find_submitted_query(query_marker(task_instance_name(context)), since.timestamp())
        return str(found["queryId"]) if found else None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the account's dataset the query selects as input, the pages' data
        documents fetched as outputs (final URIs)."""
        from airflow_provider_querytasks.lineage import (
            data_kiosk_namespace,
            data_kiosk_query_name,
            dataset,
            fetched_files,
            operator_lineage,
            task_result,
        )

        result = task_result(task_instance) or {}
        source = dataset(data_kiosk_namespace(self.hook.settings.account), data_kiosk_query_name(self.query))
        return operator_lineage(
            [source], fetched_files(page.get("fetch") for page in result.get("pages") or [])
        )

    def next_query(self, context: Context, snapshot: StatusSnapshot) -> str | None:
        record = page_record(snapshot)
        page = len(self.chain.records) + 1
        if self.destination is not None and record["data_document_id"]:
            target = in_folder(self.destination, page_filename(page))
            record["fetch"] = self.hook.download_document(record["data_document_id"], target)
        self.chain.add_record(record)
        token = record["next_token"]
        if snapshot.state is QueryState.SUCCEEDED and token and self.follow_pagination:
            self.log.info("Page %d has more results: submitting page %d", page, page + 1)
            # The next page repeats the text the Query object echoes (as the model says).
            text = str(snapshot.raw.get("query") or self._marked_query(context) or self.query)
            return self.hook.create_query(text, token, validate_schema=False)
        return None

    def on_query_finished(self, context: Context, snapshot: StatusSnapshot) -> Any:
        pages = self.chain.records
        return {
            "query_id": pages[0]["query_id"],
            "status": snapshot.remote_status,
            "pages": pages,
            "rows": sum((page["fetch"] or {}).get("rows", 0) for page in pages),
        }


class DataKioskNotificationOperator(FailWithoutRetryMixin, BaseOperator):
    """Handle delivered ``DATA_KIOSK_QUERY_PROCESSING_FINISHED`` notifications: one page each.

    For event-driven DAGs (Airflow 3): an ``Asset`` watched by an ``AssetWatcher`` with the
    common-messaging provider's ``MessageQueueTrigger`` on the SQS queue the notifications go
    to. One DAG run may carry several notifications (a receive returns a batch, and queued asset
    events can share a run): every one is handled. Every page's query sends its own
    notification, so each is handled as exactly the notified query: validated and matched to the
    account (other accounts' are skipped); DONE fetches the data document into
    ``<destination>/<queryId>.jsonl``; when the page has a ``nextToken`` and ``follow_pagination``
    is on, the next page's query is submitted and not waited for (its own notification starts a
    later run). FATAL (with the error document's message) and CANCELLED (unless
    ``accept_cancelled``) fail the task once the others are handled. On a task retry, the next
    page the failed try submitted is reused on Airflow 3.3+ (``task_state_store``); elsewhere it
    is submitted again (its text must be the notified query's, so nothing marks it as this task
    instance's: a look-up could adopt another run's page).

    Returns a list of page records (``query_id``, ``status``, ``data_document_id``,
    ``error_document_id``, ``next_token``, ``fetch``, ``next_query_id``), one per notification.

    :param notification: what was delivered (templated): an envelope (dict or JSON text), the SQS
        message carrying it, a list of those, or the SQS trigger's ``{"message_batch": [...]}``.
        ``None``: the payloads of the asset events that triggered the DAG run.
    :param account_id: the selling partner account to accept (default: the connection's
        ``selling_partner_id`` extra, when set); when no notification is for it, the task skips.
    :param destination: a folder for the data documents (templated); ``None``: do not fetch.
    :param follow_pagination: submit the next page's query when there is one.
    :param accept_cancelled: a CANCELLED query does not fail the task.
    :param conn_id: the ``amazon_sp_api`` connection (``amazon_sp_api_default``).
    """

    template_fields: Sequence[str] = ("conn_id", "destination", "notification", "account_id")
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        notification: Any = None,
        account_id: str | None = None,
        destination: Destination | None = None,
        follow_pagination: bool = True,
        accept_cancelled: bool = False,
        conn_id: str = DataKioskHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.notification = notification
        self.account_id = account_id
        self.destination = destination
        self.follow_pagination = follow_pagination
        self.accept_cancelled = accept_cancelled
        self.conn_id = conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        delivered = [
            n for payload in self._payloads(context) for n in QueryFinishedNotification.parse_all(payload)
        ]
        if self.destination is not None:
            in_folder(self.destination, "query.jsonl")  # rejects an empty destination
        hook = DataKioskHook(self.conn_id)
        expected = self.account_id or hook.settings.selling_partner_id
        # Compared in one form: a notification says amzn1.merchant.o.<merchant token> where the
        # connection usually holds the bare merchant token (account_key).
        mine = [n for n in delivered if not expected or account_key(n.account_id) == account_key(expected)]
        if not mine:
            accounts = ", ".join(sorted({n.account_id for n in delivered}))
            self.log.warning(
                "Notifications for account %s; this task accepts account %s (%s): skipping. "
                "If they are this seller's, set selling_partner_id to the merchant token Seller "
                "Central shows under Settings > Account Info > Business Information > Merchant Token",
                accounts,
                expected,
                "the account_id parameter" if self.account_id else f"selling_partner_id of {self.conn_id}",
            )
            raise AirflowSkipException(f"Notifications for account {accounts}, not {expected}: nothing to do")
        records, failures = [], []
        for notification in mine:
            try:
                records.append(self._handle(context, hook, notification))
            except QueryTaskError as exc:  # the other pages are still handled
                self.log.error("%s", exc)
                failures.append(exc)
        if failures:
            raise failures[0]
        return records

    def _handle(
        self, context: Context, hook: DataKioskHook, notification: QueryFinishedNotification
    ) -> dict[str, Any]:
        self.log.info(
            "Notification: %s ended %s",
            hook.describe_query(notification.query_id),
            notification.processing_status,
        )
        snapshot = notification.snapshot()
        raise_for_final_state(hook, snapshot, accept_cancelled=self.accept_cancelled)
        record: dict[str, Any] = {**page_record(snapshot), "next_query_id": None}
        if self.destination is not None and record["data_document_id"]:
            target = in_folder(self.destination, f"{notification.query_id}.jsonl")
            record["fetch"] = hook.download_document(record["data_document_id"], target)
        if snapshot.state is QueryState.SUCCEEDED and record["next_token"] and self.follow_pagination:
            record["next_query_id"] = self._submit_next_page(
                context, hook, notification.query, record["next_token"]
            )
        return record

    def _submit_next_page(self, context: Context, hook: DataKioskHook, query: str, token: str) -> str:
        """Submit the next page (its text is the notified query's: the model requires it, so no
        marker of this task instance can be added). On a retry, the page a previous try
        submitted is re-used only from Airflow 3.3's ``task_state_store``; elsewhere it is
        submitted again (a look-up by text could adopt another run's page)."""
        store = context.get("task_state_store")
        key = f"{NEXT_PAGE_KEY}:{token}"
        ti = context.get("ti")
        if ti is not None and int(getattr(ti, "try_number", 1) or 1) > 1:
            stored = store.get(key) if store is not None else None
            if isinstance(stored, str) and stored:
                self.log.info("Re-using %s submitted by the previous try", hook.describe_query(stored))
                return stored
            self.log.warning(
                "Submitting the next page again: a previous try may have submitted it too "
                "(only Airflow 3.3's task_state_store records it); its notification then starts "
                "another run, which fetches the same page under its own query id"
            )
        next_id = hook.create_query(query, token, validate_schema=False)
        if store is not None:
            store.set(key, next_id)
        self.log.info(
            "Submitted the next page: %s (its notification starts a later run)", hook.describe_query(next_id)
        )
        return next_id

    def _payloads(self, context: Context) -> list[Any]:
        if self.notification is not None:
            return [self.notification]
        events: Any = context.get("triggering_asset_events") or {}
        payloads = [
            (event.extra or {}).get("payload")
            for asset_events in events.values()
            for event in asset_events or []
        ]
        payloads = [p for p in payloads if p is not None]
        if not payloads:
            raise InvalidInputError(
                "notification", "none given and the DAG run was not triggered by an asset event carrying one"
            )
        return payloads


class DataKioskCancelQueryOperator(FailWithoutRetryMixin, BaseOperator):
    """Cancel a Data Kiosk query (IN_QUEUE or IN_PROGRESS); a finished one is left alone.

    :param query_id: the query id (templated).
    :param conn_id: the ``amazon_sp_api`` connection (``amazon_sp_api_default``).
    """

    template_fields: Sequence[str] = ("conn_id", "query_id")
    ui_color = "#ffe8cc"

    def __init__(
        self, *, query_id: str, conn_id: str = DataKioskHook.default_conn_name, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.query_id = query_id
        self.conn_id = conn_id

    def execute(self, context: Context) -> None:
        DataKioskHook(self.conn_id).cancel_query(required_id(self.query_id, "query_id", "query id"))


class DataKioskDownloadDocumentOperator(FailWithoutRetryMixin, BaseOperator):
    """Download a Data Kiosk document (data JSONL or error JSON) to a destination, atomically.

    Returns the fetch record (``uri``, ``bytes``, ``sha256``, ``lines``, ``rows``, ``source``,
    ``document_id``).

    :param document_id: the document id (templated).
    :param destination: a file path, a folder ending in ``/`` (the file is then
        ``<document_id>.jsonl``), an object-storage URI or an ``ObjectStoragePath``. Templated.
    :param conn_id: the ``amazon_sp_api`` connection (``amazon_sp_api_default``).
    """

    template_fields: Sequence[str] = ("conn_id", "document_id", "destination")
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        document_id: str,
        destination: Destination,
        conn_id: str = DataKioskHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.document_id = document_id
        self.destination = destination
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        document_id = required_id(self.document_id, "document_id")
        target = destination_for(self.destination, f"{document_id}.jsonl")
        return DataKioskHook(self.conn_id).download_document(document_id, target)
