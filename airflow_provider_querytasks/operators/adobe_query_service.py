"""Operators for Adobe Experience Platform Query Service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.transport.fetch import Destination, in_folder
from airflow_provider_querytasks.compat import BaseOperator, Context
from airflow_provider_querytasks.hooks.adobe_query_service import AdobeQueryServiceHook
from airflow_provider_querytasks.links.adobe_query_service import AdobeQueryLink
from airflow_provider_querytasks.operators.base import (
    FailWithoutRetryMixin,
    QueryTaskOperator,
    first_try_started,
    task_instance_name,
)
from airflow_provider_querytasks.protocols.adobe_query_service import (
    AdobeQueryDefinition,
    created_dataset_id,
    errors_text,
    query_record,
    with_marker,
)
from airflow_provider_querytasks.triggers.adobe_query_service import AdobeQueryTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["AdobeExportDatasetOperator", "AdobeQueryOperator"]


class AdobeQueryOperator(QueryTaskOperator[AdobeQueryServiceHook]):
    """Run a Query Service query (SQL or a template): submit, wait, return its outcome.

    Non-interactive queries keep no rows: to get data out, write it with ``ctas_parameters``
    (a new dataset) or ``insert_into_parameters`` (an existing one) and export that dataset with
    :class:`AdobeExportDatasetOperator`.

    Every submission carries its task instance's marker
    ``airflow:<dag_id>:<task_id>:<run_id>:<map_index>`` as the last line of its ``description``
    (the query's ``name`` is ``name`` when given, else the marker). On a retry without a stored
    query id (Airflow before 3.3, or no task state store), the newest query with this marker
    created after the DAG run's attempt began
    (:func:`~airflow_provider_querytasks.operators.base.first_try_started`) is looked up, whatever
    its state: a live or succeeded one is re-attached to, a failed one (or none) is submitted
    again. Another task's or another run's query (a same ``name``, yesterday's run) is never
    adopted.

    Returns ``{"query_id", "state", "row_count", "elapsed_time_ms", "created_dataset_id",
    "errors", "name"}``. FAILED and TIMEOUT fail the task with ``errors[]`` (code, errorType,
    message); KILLED fails it too; a SUCCESS with errors logs them as a warning.

    :param sql: SQL (templated; a path ending in ``.sql`` is read as a template file). Exactly one
        of ``sql`` and ``template_id``.
    :param template_id: a query template id (templated).
    :param query_parameters: values for ``$name`` placeholders, sent as ``queryParameters``
        (never formatted into the SQL by the provider; Adobe substitutes them as text, so quote
        literals in the SQL). Templated.
    :param db_name: ``<sandbox>:all`` by default (templated).
    :param name: the query's name (default: the deterministic submission name above).
    :param description: the query's description (templated).
    :param ctas_parameters: ``{"datasetName", "description"?, "targetSchemaTitle"?}``: CREATE TABLE AS.
    :param insert_into_parameters: ``{"datasetName"}``: INSERT INTO an existing dataset.
    :param conn_id: the ``adobe_experience_platform`` connection.
    :param wait_for_completion: wait for the query (else return its id right after submitting).
    :param deferrable: wait in the triggerer.
    :param poll_interval: longest time between polls (``timedelta`` or seconds).
    :param timeout: total wait, deferred time included (batch queries may run 24 h).
    :param cancel_on_kill: cancel the query when the task is killed or times out.
    :param durable: re-attach on a task retry (stored id on Airflow 3.3+, else by name).
    """

    hook_class = AdobeQueryServiceHook
    trigger_class = AdobeQueryTrigger
    template_fields: Sequence[str] = (
        "conn_id",
        "sql",
        "template_id",
        "query_parameters",
        "db_name",
        "name",
        "description",
        "ctas_parameters",
        "insert_into_parameters",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "query_parameters": "json"}
    ui_color = "#fde2e2"
    operator_extra_links = (AdobeQueryLink(),)

    def __init__(
        self,
        *,
        sql: str | None = None,
        template_id: str | None = None,
        query_parameters: dict[str, Any] | None = None,
        db_name: str | None = None,
        name: str | None = None,
        description: str | None = None,
        ctas_parameters: dict[str, Any] | None = None,
        insert_into_parameters: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.template_id = template_id
        self.query_parameters = query_parameters
        self.db_name = db_name
        self.name = name
        self.description = description
        self.ctas_parameters = ctas_parameters
        self.insert_into_parameters = insert_into_parameters

    def query_definition(self, name: str | None = None, marker: str | None = None) -> AdobeQueryDefinition:
        """The query the (rendered) fields describe, named ``name`` (else the ``name`` field),
        its description ending with ``marker`` when given."""
        return AdobeQueryDefinition(
            sql=self.sql,
            template_id=self.template_id,
            query_parameters=self.query_parameters,
            db_name=self.db_name,
            name=name or self.name,
            description=with_marker(self.description, marker) if marker else self.description,
            ctas_parameters=self.ctas_parameters,
            insert_into_parameters=self.insert_into_parameters,
        )

    def validate_inputs(self) -> None:
        # The connection's sandbox is checked against db_name when submitting (before the call).
        self.query_definition().body()

    def submit(self, context: Context) -> str:
        marker = task_instance_name(context)
        return str(self.hook.create_query(self.query_definition(self.name or marker, marker))["id"])

    def find_submitted_query(self, context: Context) -> str | None:
        """The newest query this task instance submitted in this attempt of its DAG run (any
        state: the base re-attaches to a live or succeeded one and submits again after a failed
        one), found by its marker; ``None`` when the attempt's start is unknown."""
        since = first_try_started(context)
        if since is None:
            self.log.info("The DAG run's start is unknown: no look-up of a previous try's query")
            return None
        found = self.hook.find_submitted_query(task_instance_name(context), since)
        return str(found["id"]) if found else None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the tables the SQL reads and writes, and the CTAS / INSERT INTO target.

        The SQL is parsed by the OpenLineage provider's ``SQLParser`` (the ``openlineage`` extra);
        a template query reports only its target.
        """
        from airflow_provider_querytasks.lineage import adobe_sql_lineage

        settings = self.hook.settings
        target = (self.ctas_parameters or self.insert_into_parameters or {}).get("datasetName")
        return adobe_sql_lineage(
            self.sql,
            org_id=settings.org_id,
            sandbox=(self.db_name or "").split(":", 1)[0] or settings.sandbox,
            target=str(target) if target else None,
        )

    def on_query_finished(self, context: Context, snapshot: StatusSnapshot) -> Any:
        record = query_record(snapshot)
        if record["errors"]:
            self.log.warning("%s succeeded with errors: %s", snapshot.query_id, errors_text(record["errors"]))
        record["name"] = (snapshot.raw.get("request") or {}).get("name") or snapshot.raw.get("name")
        return record


class AdobeExportDatasetOperator(FailWithoutRetryMixin, BaseOperator):
    """Export the output of a CTAS or INSERT INTO query: dataset -> newest batch -> every file.

    The dataset is ``dataset_id``, or found from ``query_id`` (its ``_links.created_dataset``,
    else the ``datasetName`` it wrote to, looked up in Catalog), or ``dataset_name``. The newest
    batch created after the query (when known) is awaited until Catalog shows it ``success``;
    then every Data Access file of it (through pages and directories) is streamed into
    ``destination`` (a folder), each atomically. The files are what Platform stores (Parquet).

    Returns ``{"dataset_id", "batch_id", "record_count", "files": [fetch record, ...]}``.

    :param destination: a folder: local path, object-storage URI or ``ObjectStoragePath`` (templated).
    :param query_id: the CTAS/INSERT INTO query (templated, e.g. from ``AdobeQueryOperator``'s XCom).
    :param dataset_id: the dataset (templated).
    :param dataset_name: the dataset's name (templated).
    :param batch_timeout: how long to wait for the batch to reach ``success``, seconds.
    :param batch_poll_interval: seconds between Catalog polls.
    :param conn_id: the ``adobe_experience_platform`` connection.
    """

    template_fields: Sequence[str] = ("conn_id", "destination", "query_id", "dataset_id", "dataset_name")
    ui_color = "#fde2e2"

    def __init__(
        self,
        *,
        destination: Destination,
        query_id: str | None = None,
        dataset_id: str | None = None,
        dataset_name: str | None = None,
        batch_timeout: float = 900.0,
        batch_poll_interval: float = 10.0,
        conn_id: str = AdobeQueryServiceHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.query_id = query_id
        self.dataset_id = dataset_id
        self.dataset_name = dataset_name
        self.batch_timeout = batch_timeout
        self.batch_poll_interval = batch_poll_interval
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        given = [name for name in ("query_id", "dataset_id", "dataset_name") if getattr(self, name)]
        if len(given) != 1:
            raise InvalidInputError("dataset_id", "give exactly one of query_id, dataset_id and dataset_name")
        in_folder(self.destination, "x")  # rejects an empty destination before any call
        hook = AdobeQueryServiceHook(self.conn_id)
        dataset_id, created_after_ms = self._dataset(hook)
        batch = hook.wait_for_batch(
            dataset_id,
            created_after_ms=created_after_ms,
            timeout=self.batch_timeout,
            poll=self.batch_poll_interval,
        )
        files = hook.export_batch(str(batch["id"]), self.destination)
        self.log.info("Exported %d file(s) of batch %s of dataset %s", len(files), batch["id"], dataset_id)
        return {
            "dataset_id": dataset_id,
            "batch_id": batch["id"],
            "record_count": batch.get("recordCount"),
            "files": files,
        }

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the exported dataset as input, the files written as outputs (final URIs)."""
        from airflow_provider_querytasks.lineage import (
            adobe_dataset,
            fetched_files,
            operator_lineage,
            task_result,
        )

        result = task_result(task_instance) or {}
        hook = AdobeQueryServiceHook(self.conn_id)
        inputs = []
        if result.get("dataset_id"):
            name = self.dataset_name
            if not name:  # named as the CTAS / INSERT INTO that wrote it names it
                try:
                    name = hook.get_dataset(str(result["dataset_id"])).get("name")
                except Exception:
                    self.log.debug("Catalog did not name dataset %s", result["dataset_id"], exc_info=True)
            settings = hook.settings
            inputs.append(adobe_dataset(settings.org_id, settings.sandbox, str(name or result["dataset_id"])))
        return operator_lineage(inputs, fetched_files(result.get("files") or []))

    def _dataset(self, hook: AdobeQueryServiceHook) -> tuple[str, int | None]:
        if self.dataset_id:
            return str(self.dataset_id), None
        if self.dataset_name:
            found = hook.find_dataset_id(str(self.dataset_name))
            if found is None:
                raise InvalidInputError("dataset_name", f"Catalog has no dataset named {self.dataset_name!r}")
            return found, None
        query = hook.get_query(str(self.query_id))
        if query.get("state") != "SUCCESS":
            raise InvalidInputError("query_id", f"query {self.query_id} is {query.get('state')}, not SUCCESS")
        created = query.get("created")
        # Batches the query wrote are created after it was submitted (Catalog times are ms).
        after = (
            int(datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp() * 1000) - 1
            if created
            else None
        )
        dataset_id = created_dataset_id(query)
        if dataset_id:
            return dataset_id, after
        request = query.get("request") or {}
        target = (request.get("ctasParameters") or request.get("insertIntoParameters") or {}).get(
            "datasetName"
        )
        found = hook.find_dataset_id(str(target)) if target else None
        if found is None:
            raise InvalidInputError(
                "query_id",
                f"query {self.query_id} names no output dataset (not a CTAS or INSERT INTO query?)",
            )
        return found, after
