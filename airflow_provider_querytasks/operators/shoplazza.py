"""Operators for Shoplazza data query tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

import pendulum

from airflow_provider_querytasks.common.api.errors import InvalidInputError
from airflow_provider_querytasks.common.api.status import StatusSnapshot
from airflow_provider_querytasks.common.api.validation import required_id
from airflow_provider_querytasks.common.transport.fetch import (
    Destination,
    destination_for,
    redact_url,
)
from airflow_provider_querytasks.compat import BaseOperator, Context
from airflow_provider_querytasks.hooks.shoplazza import ShoplazzaHook
from airflow_provider_querytasks.operators.base import FailWithoutRetryMixin, QueryTaskOperator
from airflow_provider_querytasks.protocols.shoplazza import (
    TimeWindow,
    reported_timezone,
    result_url,
    shop_timezone,
    split_window,
    utc_offset,
    validate_event,
    zone_name,
)
from airflow_provider_querytasks.triggers.shoplazza import ShoplazzaDataTaskTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

TimeValue = datetime | date | str


def window_filename(event: str, window: TimeWindow) -> str:
    """``purchase_product_20261120T000000_20261121T000000.csv`` (the times as sent)."""
    begin, end = (value.replace("-", "").replace(":", "") for value in (window.begin, window.end))
    return f"{event}_{begin}_{end}.csv"


def split_window_kwargs(
    begin_time: TimeValue, end_time: TimeValue, *, timezone: str = "UTC"
) -> list[dict[str, str]]:
    """``[{"begin_time", "end_time"}, ...]``: windows of at most 24 h of real time, for dynamic
    task mapping; each time with its UTC offset (naive inputs are read in ``timezone``), so the
    mapped operator sends the same instants whichever zone it writes them in.

    Run it in a ``@task`` and map the operator over its result to export the windows in
    parallel (mind the store's 2 requests/s and its task cap)::

        @task
        def windows(data_interval_start=None, data_interval_end=None):
            return split_window_kwargs(data_interval_start, data_interval_end)

        ShoplazzaDataTaskOperator.partial(task_id="export", event="pageview").expand_kwargs(windows())

    :raises InvalidInputError: naming ``begin_time``, ``end_time`` or ``timezone``.
    """
    return [
        {"begin_time": str(window.begin_at), "end_time": str(window.end_at)}
        for window in split_window(begin_time, end_time, timezone=timezone)
    ]


def _agrees(zone: tzinfo, reported: tzinfo) -> bool:
    """Whether a zone agrees with the one the shop reports: the same offset now, or the reported
    one is the zone's standard offset (a shop may report it in summer)."""
    now = pendulum.now("UTC")
    mine, theirs = now.astimezone(zone), now.astimezone(reported)
    standard = (mine.utcoffset() or timedelta(0)) - (mine.dst() or timedelta(0))
    return theirs.utcoffset() in (mine.utcoffset(), standard)


class ShoplazzaDataTaskOperator(QueryTaskOperator[ShoplazzaHook]):
    """Export one event type over a time window as CSV: create task(s), wait, optionally fetch.

    A window longer than 24 h (Shoplazza's limit per task) is split into consecutive windows of
    at most 24 h; they are submitted one after another as a chain (each waited for, in the worker
    or deferred, before the next is created) so the store's task cap and rate limit are not hit,
    and all are fetched. For parallel windows, map the operator over :func:`split_window_kwargs` instead.

    Shoplazza's times carry no offset, and its docs do not say in which zone it reads them; the
    provider sends them in the shop's own time zone (docs/shoplazza.md, "What the specs leave
    open"): ``timezone`` when given (checked against the zone the shop reports), else the zone
    ``GET /shop`` reports (an offset such as ``+0800``, without daylight-saving rules: set
    ``timezone`` for a shop whose zone has them). Aware datetimes (such as
    ``data_interval_start``) are converted to that zone, naive ones are read in it; windows are
    cut every 24 h of real time. The task log says which zone was used and why.

    Returns ``{"event", "window", "status", "windows": [record, ...]}`` where a window is
    ``{"begin", "end"`` (as sent), ``"begin_at", "end_at"`` (the same instants with their UTC
    offsets), ``"timezone"}`` and a record is ``{"query_id", "event", "window", "status", "url",
    "fetch"}`` (``url`` without its query string; ``fetch`` is the fetch record, or ``None``).
    With a single window the record's ``query_id``, ``url`` and ``fetch`` are also at the top
    level.

    :param event: the event type (``purchase_product``, ``pageview``...; see ``EVENTS``). Templated.
    :param begin_time: window start: datetime, pendulum or ISO 8601 string. Templated
        (``{{ data_interval_start }}``).
    :param end_time: window end, after ``begin_time``. Templated.
    :param timezone: the shop's IANA time zone (``America/New_York``), in which the times are
        sent; ``None`` (default): the zone the shop reports (``GET /shop``, needs ``read_shop``).
        Templated.
    :param destination: where to fetch the CSV: a path or an object-storage URI (templated), or an
        ``ObjectStoragePath``. Ending in ``/`` it is a folder and each window's file is named
        ``<event>_<begin>_<end>.csv``; a split window needs a folder. ``None``: do not fetch.
    :param conn_id: the ``shoplazza`` connection (``shoplazza_default``).
    :param wait_for_completion: wait for the task(s) (else return their ids right after creating).
    :param deferrable: wait in the triggerer.
    :param poll_interval: longest time between polls (``timedelta`` or seconds).
    :param timeout: total wait, deferred time included (``timedelta`` or seconds).
    """

    hook_class = ShoplazzaHook
    trigger_class = ShoplazzaDataTaskTrigger
    template_fields: Sequence[str] = (
        "conn_id",
        "event",
        "begin_time",
        "end_time",
        "timezone",
        "destination",
    )
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        event: str,
        begin_time: TimeValue,
        end_time: TimeValue,
        timezone: str | None = None,
        destination: Destination | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.event = event
        self.begin_time = begin_time
        self.end_time = end_time
        self.timezone = timezone
        self.destination = destination

    # -- validation before any call -----------------------------------------------------------
    def validate_inputs(self) -> None:
        validate_event(self.event)
        # Every parameter is checked before the shop's zone is read (the first call).
        provisional = shop_timezone(self.timezone) if self.timezone is not None else "UTC"
        windows = split_window(self.begin_time, self.end_time, timezone=provisional)
        if self.destination is not None:
            if not self.wait_for_completion:
                raise InvalidInputError(
                    "destination",
                    "fetching needs wait_for_completion=True; or use ShoplazzaDownloadResultOperator",
                )
            destination_for(self.destination, "x")  # rejects an empty destination
            if len(windows) > 1 and not str(self.destination).endswith("/"):
                raise InvalidInputError(
                    "destination",
                    f"the window is split into {len(windows)} tasks of at most 24 h: give a folder "
                    f"(ending in '/'), not the single file {str(self.destination)!r}",
                )
        windows = split_window(self.begin_time, self.end_time, timezone=self._zone())
        # The windows are the chain's plan; the chain's state (each finished window's record,
        # the window being waited for) goes beside them, in the same resume_state.
        self.resume_state = {"windows": [w.to_dict() for w in windows]}

    def _zone(self) -> tzinfo:
        """The zone the times are sent in, checked against the shop's; the choice is logged."""
        reported = self.hook.shop_timezone()
        shop_zone = reported_timezone(reported)
        if self.timezone is not None:
            zone = shop_timezone(self.timezone)
            if shop_zone is not None and not _agrees(zone, shop_zone):
                raise InvalidInputError(
                    "timezone",
                    f"{self.timezone!r} is UTC{utc_offset(datetime.now(zone))} now, but the shop "
                    f"reports its time zone as {reported!r}: set the shop's own zone (Shoplazza "
                    "reads beginTime/endTime without offset; a wrong zone shifts every window)",
                )
            self.log.info(
                "Shoplazza's beginTime/endTime carry no offset and its docs do not say in which "
                "zone it reads them: sending them in %s (the timezone parameter; the shop reports %s)",
                self.timezone,
                reported or "no time zone",
            )
            return zone
        if shop_zone is None:
            raise InvalidInputError(
                "timezone",
                "the shop's time zone could not be read (GET /openapi/<version>/shop needs the "
                f"read_shop scope; it answered {reported!r}): set timezone to the shop's IANA time "
                "zone, such as Asia/Shanghai",
            )
        if isinstance(shop_zone, pendulum.FixedTimezone) and shop_zone.offset != 0:
            self.log.warning(
                "Sending beginTime/endTime at the shop's reported offset %s (Shoplazza's times "
                "carry no offset, and its docs do not say in which zone it reads them). The shop "
                "reports an offset, not its daylight-saving rules: if its zone has daylight "
                "saving time, set timezone to its IANA name, or windows on the other side of a "
                "change are shifted by an hour",
                zone_name(shop_zone),
            )
        else:
            self.log.info(
                "Sending beginTime/endTime in the shop's reported time zone %s (Shoplazza's "
                "times carry no offset, and its docs do not say in which zone it reads them)",
                zone_name(shop_zone),
            )
        return shop_zone

    # -- the flow -----------------------------------------------------------------------------
    def _windows(self) -> list[TimeWindow]:
        return [TimeWindow(**w) for w in self.resume_state["windows"]]

    def _submit_window(self, index: int) -> str:
        window = self._windows()[index]
        query_id = self.hook.create_task(self.event, window.begin, window.end)
        self.log.info(
            "Created Shoplazza data task %s: %s from %s to %s (%d/%d)",
            query_id,
            self.event,
            window.begin_at or window.begin,
            window.end_at or window.end,
            index + 1,
            len(self.resume_state["windows"]),
        )
        self.chain.submitted(query_id, window=window.to_dict())
        return query_id

    def submit(self, context: Context) -> str:
        return self._submit_window(len(self.chain.records))

    def submitted_result(self, context: Context, query_id: str) -> Any:
        records = [self._record(query_id, "submitted")]
        for index in range(1, len(self.resume_state["windows"])):
            records.append(self._record(self._submit_window(index), "submitted"))
        return self._result(records, "submitted")

    def next_query(self, context: Context, snapshot: StatusSnapshot) -> str | None:
        url = result_url(snapshot.raw) or ""
        record = self._record(snapshot.query_id, "complete", url=redact_url(url))
        if self.destination is not None:
            window = TimeWindow(**record["window"])
            target = destination_for(self.destination, window_filename(self.event, window))
            record["fetch"] = self.hook.download_result(snapshot.query_id, target)
        done = self.chain.add_record(record)
        if done < len(self.resume_state["windows"]):
            return self._submit_window(done)
        return None

    def on_query_finished(self, context: Context, snapshot: StatusSnapshot) -> Any:
        return self._result(self.chain.records, "complete")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the shop's event as input, the CSV files fetched as outputs (final URIs)."""
        from airflow_provider_querytasks.lineage import (
            fetched_files,
            operator_lineage,
            shoplazza_event_dataset,
            task_result,
        )

        result = task_result(task_instance) or {}
        fetches = [record.get("fetch") for record in result.get("windows") or []]
        return operator_lineage(
            [shoplazza_event_dataset(self.hook.settings.shop, self.event)], fetched_files(fetches)
        )

    def _record(self, query_id: str, status: str, url: str | None = None) -> dict[str, Any]:
        return {
            "query_id": query_id,
            "event": self.event,
            "window": self.chain.step_of(query_id).get("window"),
            "status": status,
            "url": url,
            "fetch": None,
        }

    def _result(self, records: list[dict[str, Any]], status: str) -> dict[str, Any]:
        windows = self.resume_state["windows"]
        first, last = windows[0], windows[-1]
        result: dict[str, Any] = {
            "event": self.event,
            "window": {
                "begin": first["begin"],
                "end": last["end"],
                "begin_at": first.get("begin_at"),
                "end_at": last.get("end_at"),
                "timezone": first.get("timezone"),
            },
            "status": status,
            "windows": records,
        }
        if len(records) == 1:
            result.update({key: records[0][key] for key in ("query_id", "url", "fetch")})
        return result


class ShoplazzaDownloadResultOperator(FailWithoutRetryMixin, BaseOperator):
    """Fetch a complete data task's CSV to a destination (atomically; no Shoplazza header sent).

    Returns the fetch record (``uri``, ``bytes``, ``sha256``, ``lines``, ``rows``, ``source``).

    :param query_id: the task id (templated, e.g. ``{{ ti.xcom_pull('export', key='query_id') }}``).
    :param destination: a file path, a folder ending in ``/`` (the file is then
        ``<query_id>.csv``), an object-storage URI or an ``ObjectStoragePath``. Templated.
    :param conn_id: the ``shoplazza`` connection (``shoplazza_default``).
    """

    template_fields: Sequence[str] = ("conn_id", "query_id", "destination")
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        query_id: str,
        destination: Destination,
        conn_id: str = ShoplazzaHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.query_id = query_id
        self.destination = destination
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        query_id = required_id(self.query_id, "query_id", "task id")
        target = destination_for(self.destination, f"{query_id}.csv")
        return ShoplazzaHook(self.conn_id).download_result(query_id, target)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the shop's events as input (a task does not report its event type), the
        CSV file as output (its final URI)."""
        from airflow_provider_querytasks.lineage import (
            fetched_files,
            operator_lineage,
            shoplazza_event_dataset,
            task_result,
        )

        shop = ShoplazzaHook(self.conn_id).settings.shop
        return operator_lineage(
            [shoplazza_event_dataset(shop, None)], fetched_files([task_result(task_instance)])
        )
