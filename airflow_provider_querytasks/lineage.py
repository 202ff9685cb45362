"""OpenLineage for the query operators: what each task read and wrote.

Used by the operators' ``get_openlineage_facets_on_complete(task_instance)`` when the optional
``openlineage`` extra (``apache-airflow-providers-openlineage``) is installed. Every import of
OpenLineage is inside a function: without the extra nothing here is ever imported.

Naming (namespace / name), following OpenLineage's ``scheme://authority`` convention:

- Adobe Query Service: ``adobe-experience-platform://<IMS org id>`` / ``<sandbox>.<table>``
  (tables parsed from the SQL by the OpenLineage provider's ``SQLParser``; the CTAS or INSERT
  INTO target named by ``ctas_parameters`` / ``insert_into_parameters`` is an output).
- Data Kiosk: ``amazon-sp-api://<selling partner id>`` (or ``rt-<hash>`` of the refresh token
  when no ``selling_partner_id`` is set: one authorisation is one account) /
  ``<dataset>.<query>``, e.g. ``analytics_salesAndTraffic_2024_04_24.salesAndTrafficByDate``.
- Shoplazza: ``shoplazza://<shop host>`` / ``realtime_events.<event>`` (every event lives in
  the ``realtime_events`` table; ``realtime_events`` alone where the event is not known).
- Fetched files: their final URIs in OpenLineage's file and object-storage naming
  (``file`` / ``/abs/path``, ``s3://bucket`` / ``key``...); never a temporary ``.part`` name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset

ADOBE_SCHEME = "adobe-experience-platform"
DATA_KIOSK_SCHEME = "amazon-sp-api"
SHOPLAZZA_SCHEME = "shoplazza"
SHOPLAZZA_TABLE = "realtime_events"
#: Object stores whose OpenLineage namespace is ``<scheme>://<bucket>`` (and the name the key).
_OBJECT_STORE_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "hdfs": "hdfs"}


def dataset(namespace: str, name: str) -> Dataset:
    """An OpenLineage dataset."""
    from openlineage.client.event_v2 import Dataset

    return Dataset(namespace=namespace, name=name)


def file_dataset(uri: str) -> Dataset:
    """The OpenLineage dataset of a written file: a local path or an object-storage URI.

    Local files use the naming of Airflow's common-io provider (namespace ``file``, the absolute
    path as name); object stores ``<scheme>://<bucket>`` and the key.
    """
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        path = unquote(parts.path) if parts.scheme else uri
        return dataset("file", os.path.abspath(path))
    scheme = _OBJECT_STORE_SCHEMES.get(parts.scheme, parts.scheme)
    return dataset(f"{scheme}://{parts.netloc}", unquote(parts.path).lstrip("/"))


def fetched_files(records: Iterable[dict[str, Any] | None]) -> list[Dataset]:
    """The datasets of the files a task wrote, from its fetch records (``None`` skipped)."""
    return [file_dataset(str(record["uri"])) for record in records if record and record.get("uri")]


def operator_lineage(
    inputs: Sequence[Dataset] = (),
    outputs: Sequence[Dataset] = (),
    job_facets: dict[str, Any] | None = None,
    run_facets: dict[str, Any] | None = None,
) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=list(inputs),
        outputs=list(outputs),
        job_facets=job_facets or {},
        run_facets=run_facets or {},
    )


def task_result(task_instance: Any) -> Any:
    """What the finished task returned (its ``return_value`` XCom), or ``None``."""
    if task_instance is None:
        return None
    map_index = getattr(task_instance, "map_index", -1)
    kwargs: dict[str, Any] = {"task_ids": task_instance.task_id, "key": "return_value"}
    if isinstance(map_index, int) and map_index >= 0:
        kwargs["map_indexes"] = map_index
    return task_instance.xcom_pull(**kwargs)


# -- Adobe Experience Platform Query Service -------------------------------------------------
def adobe_namespace(org_id: str) -> str:
    return f"{ADOBE_SCHEME}://{org_id}"


def adobe_dataset(org_id: str, sandbox: str, table: str) -> Dataset:
    """A Query Service table (or the dataset a CTAS / INSERT INTO writes) in a sandbox."""
    return dataset(adobe_namespace(org_id), f"{sandbox}.{table}")


def adobe_sql_lineage(
    sql: str | None,
    *,
    org_id: str,
    sandbox: str,
    target: str | None = None,
) -> OperatorLineage:
    """Inputs and outputs of a Query Service SQL statement, parsed by OpenLineage's ``SQLParser``.

    :param sql: the SQL sent (``None`` for a template query: only ``target`` is known).
    :param target: the dataset named by ``ctasParameters`` / ``insertIntoParameters``: an output.
    """
    inputs: list[Dataset] = []
    outputs: list[Dataset] = []
    job_facets: dict[str, Any] = {}
    run_facets: dict[str, Any] = {}
    if sql:
        from airflow.providers.openlineage.sqlparser import SQLParser
        from openlineage.client.facet_v2 import extraction_error_run, sql_job

        # Query Service speaks PostgreSQL (its PG interface, and the SQL it accepts over REST).
        parser = SQLParser(dialect="postgres")
        job_facets["sql"] = sql_job.SQLJobFacet(query=SQLParser.normalize_sql(sql))
        parsed = parser.parse(SQLParser.split_sql_string(sql))
        if parsed is not None:
            inputs = [adobe_dataset(org_id, sandbox, table.qualified_name) for table in parsed.in_tables]
            outputs = [adobe_dataset(org_id, sandbox, table.qualified_name) for table in parsed.out_tables]
            if parsed.errors:
                run_facets["extractionError"] = extraction_error_run.ExtractionErrorRunFacet(
                    totalTasks=1,
                    failedTasks=len(parsed.errors),
                    errors=[
                        extraction_error_run.Error(
                            errorMessage=error.message,
                            stackTrace=None,
                            task=error.origin_statement,
                            taskNumber=error.index,
                        )
                        for error in parsed.errors
                    ],
                )
    if target:
        output = adobe_dataset(org_id, sandbox, target)
        if all(o.name != output.name for o in outputs):
            outputs.append(output)
    return operator_lineage(inputs, outputs, job_facets=job_facets, run_facets=run_facets)


# -- Amazon Selling Partner API Data Kiosk ---------------------------------------------------
def data_kiosk_namespace(account: str) -> str:
    return f"{DATA_KIOSK_SCHEME}://{account}"


def data_kiosk_query_name(query: str) -> str:
    """``<dataset>.<query field>`` of a GraphQL query (what it selects), e.g.
    ``analytics_salesAndTraffic_2024_04_24.salesAndTrafficByDate``; ``query`` if unparsable."""
    from graphql import GraphQLError, OperationDefinitionNode, parse

    try:
        document = parse(query)
    except GraphQLError:
        return "query"
    names: list[str] = []
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        for root in definition.selection_set.selections:
            root_name = getattr(getattr(root, "name", None), "value", None)
            if not root_name:
                continue
            children = getattr(getattr(root, "selection_set", None), "selections", None) or []
            fields = [getattr(getattr(child, "name", None), "value", None) for child in children]
            if any(fields):
                names.extend(f"{root_name}.{field}" for field in fields if field)
            else:
                names.append(root_name)
    return ",".join(sorted(set(names))) or "query"


# -- Shoplazza -------------------------------------------------------------------------------
def shoplazza_namespace(shop: str) -> str:
    return f"{SHOPLAZZA_SCHEME}://{shop}"


def shoplazza_event_dataset(shop: str, event: str | None) -> Dataset:
    return dataset(shoplazza_namespace(shop), f"{SHOPLAZZA_TABLE}.{event}" if event else SHOPLAZZA_TABLE)
