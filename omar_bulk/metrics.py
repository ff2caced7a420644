"""Metrics for monitoring, in Prometheus' text exposition format.

Two views, both gauges (each write replaces the last, so nothing here is a counter):

- ``fetch --metrics FILE``: how the last run went, written at its end whatever the ending
  (finished, failed, interrupted, aborted, or stopped before it began), atomically for
  node_exporter's textfile collector: ``omar_bulk_fetch_*``.
- ``status OUT --prometheus``: what the archive holds, from the journal: ``omar_bulk_coverage_*``.

Every series carries an ``out`` label, the output folder, so several backfills on one machine
can write beside each other in one textfile folder without clashing.

``prometheus_client`` writes the format (its own ``CollectorRegistry``, never the default one
with its process metrics). It is imported only here, and this module only when metrics are asked
for, so a run without them does not pay for the import.

Retries are counted by ``RetryCounter``, a wrapper around the run's observer: the engine tells
its observer before every further attempt at an item, so the count is exact and needs nothing
from the engine. Login retries are not items and are not counted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from .errors import LocalWriteError, UsageError

if TYPE_CHECKING:
    from .coverage import Coverage
    from .plan import Item
    from .results import ItemResult, Observer, RunResult

#: The statuses an item of a run can end in, as the report's summary counts them.
RUN_STATUSES = (
    "downloaded",
    "skipped",
    "empty",
    "failed",
    "revised",
    "unchanged",
    "not_attempted",
    "interrupted",
    "superseded",
)
LAST_SUCCESS = "omar_bulk_fetch_last_success_timestamp_seconds"
#: The previous metrics file is read back (for its last success time) only up to this size:
#: one run's gauges take a few kilobytes.
_READ_BACK_MAX = 1 << 20


class RetryCounter:
    """An observer that counts further attempts at items and passes every event on."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.retries = 0

    def planned(self, total: int) -> None:
        self.inner.planned(total)

    def started(self, item: Item, path: Path, attempt: int) -> None:
        self.inner.started(item, path, attempt)

    def received(self, item: Item, nbytes: int, expected: int | None) -> None:
        self.inner.received(item, nbytes, expected)

    def retrying(self, item: Item, attempt: int, reason: str, delay: float) -> None:
        self.retries += 1
        self.inner.retrying(item, attempt, reason, delay)

    def finished(self, result: ItemResult) -> None:
        self.inner.finished(result)

    def notice(self, message: str) -> None:
        self.inner.notice(message)

    def pool(self, level: int, maximum: int) -> None:
        self.inner.pool(level, maximum)


class RunRecorder:
    """Writes a run's metrics when it ends, however it ends; counts its retries meanwhile."""

    def __init__(
        self, path: Path, out: Path, report: Path | None = None, state: Path | None = None
    ) -> None:
        check_target(path, out, report, state)
        self.path = path
        self.out = out
        self._counter: RetryCounter | None = None

    def watch(self, observer: Observer) -> Observer:
        """The observer to give the run: ``observer``, with its retries counted."""
        self._counter = RetryCounter(observer)
        return self._counter

    def ended(self, result: RunResult | None, exit_code: int, warn: Callable[[str], None]) -> int:
        """Write the metrics; return the exit code, 4 if the run was fine but this failed."""
        retries = self._counter.retries if self._counter else 0
        try:
            write_run_metrics(self.path, self.out, result, exit_code=exit_code, retries=retries)
        except LocalWriteError as exc:
            warn(str(exc))
            return exit_code or exc.exit_code
        return exit_code


def check_target(
    path: Path, out: Path | None = None, report: Path | None = None, state: Path | None = None
) -> None:
    """Refuse, before a run, a metrics file that could never be written, or that would
    overwrite the journal (in OUT or in the state folder ``state``), a data file or the run's
    own report. ``-`` is standard output; a FIFO or a device is written in place."""
    import os
    import stat

    from .storage import claimed
    from .userfiles import check_output, is_stdio, own_stream

    def stream(target: Path) -> int | None:
        return 1 if is_stdio(target) else own_stream(target)

    if stream(path) is not None:
        if report is not None and stream(report) == stream(path):
            what = "standard output" if stream(path) == 1 else f"descriptor {stream(path)}"
            raise UsageError(f"--metrics {path} and --report {report} both name {what}: choose one")
        check_output(path, "--metrics")  # a descriptor that is not open
        return
    if out is not None and claimed(out, path, state):
        where = f"{out} or in its state folder {state}" if state is not None else str(out)
        raise UsageError(
            f"--metrics {path} is among the files omar-bulk keeps in {where} (its journal or"
            " its data): give a file in node_exporter's textfile folder"
        )
    if (
        report is not None
        and stream(report) is None
        and os.path.realpath(path) == os.path.realpath(report)
        and not (path.exists() and stat.S_ISCHR(path.stat().st_mode))  # /dev/null for both
    ):
        raise UsageError(f"--metrics {path} is the report's file too: give each its own")
    if path.is_dir():
        raise UsageError(f"--metrics {path} is a folder: give a file name ending in .prom")
    check_output(path, "--metrics")
    if not path.parent.is_dir():
        raise UsageError(f"--metrics {path}: the folder {path.parent} does not exist")


def run_registry(
    out: Path,
    result: RunResult | None,
    *,
    exit_code: int,
    retries: int,
    finished_at: float | None = None,
    last_success: float | None = None,
) -> CollectorRegistry:
    """The gauges of one run. ``result`` is None when the run stopped before it began (a bad
    certificate, a locked folder): then only the exit code and times are known."""
    registry = CollectorRegistry(auto_describe=True)
    label = {"out": _folder(out)}
    finished_at = time.time() if finished_at is None else finished_at
    if exit_code == 0:
        last_success = finished_at

    made: dict[str, Gauge] = {}

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        metric = made.get(name)
        if metric is None:  # one family, several label sets
            metric = made[name] = Gauge(name, doc, ["out", *labels], registry=registry)
        metric.labels(**label, **labels).set(value)

    gauge("omar_bulk_fetch_exit_code", "Exit code of the last fetch (0 all good).", exit_code)
    gauge(
        "omar_bulk_fetch_last_run_timestamp_seconds",
        "When the last fetch ended, Unix time.",
        finished_at,
    )
    if last_success is not None:
        gauge(LAST_SUCCESS, "When the last fetch that exited 0 ended, Unix time.", last_success)
    if result is None:
        return registry
    summary = result.summary
    counts = {
        "downloaded": summary.downloaded,
        "skipped": summary.skipped,
        "empty": summary.empty,
        "failed": summary.failed,
        "revised": summary.revised,
        "unchanged": summary.unchanged,
        "not_attempted": summary.not_attempted,
        "interrupted": summary.interrupted_items,
        "superseded": summary.superseded,
    }
    for status in RUN_STATUSES:
        gauge(
            "omar_bulk_fetch_items",
            "Items of the last fetch by outcome, as in its report's summary.",
            counts[status],
            status=status,
        )
    gauge("omar_bulk_fetch_planned_items", "Items the last fetch planned.", summary.planned)
    gauge(
        "omar_bulk_fetch_downloaded_bytes",
        "Bytes of data the last fetch downloaded and kept (new and revised files).",
        summary.bytes,
    )
    gauge("omar_bulk_fetch_duration_seconds", "How long the last fetch ran.", summary.seconds)
    gauge(
        "omar_bulk_fetch_retries",
        "Further attempts at items in the last fetch (logins not counted).",
        retries,
    )
    gauge(
        "omar_bulk_fetch_interrupted",
        "1 if the last fetch was interrupted (Ctrl-C, SIGTERM).",
        int(summary.interrupted),
    )
    gauge(
        "omar_bulk_fetch_aborted",
        "1 if the last fetch was aborted by a fatal error (TLS, authentication, disk).",
        int(result.aborted is not None),
    )
    for figure in ("max", "lowest", "final"):
        if figure in summary.concurrency:
            gauge(
                "omar_bulk_fetch_concurrency",
                "Downloads allowed at once in the last fetch: max is --concurrency, lowest the"
                " level push-back brought it down to, final where it ended.",
                summary.concurrency[figure],
                level=figure,
            )
    if "decreases" in summary.concurrency:
        gauge(
            "omar_bulk_fetch_pushbacks",
            "Times the server pushed back (the pool halved) in the last fetch.",
            summary.concurrency["decreases"],
        )
    return registry


def write_run_metrics(
    path: Path,
    out: Path,
    result: RunResult | None,
    *,
    exit_code: int,
    retries: int = 0,
    finished_at: float | None = None,
) -> None:
    """Write one run's gauges to ``path`` (``_replace``: a file atomically, ``-`` to stdout,
    a FIFO or a device in place).

    The last success time is carried over from the file being replaced (a regular file only)
    when this run did not succeed, so an alert on "no success for 36 hours" survives a string
    of failed runs.
    """
    registry = run_registry(
        out,
        result,
        exit_code=exit_code,
        retries=retries,
        finished_at=finished_at,
        last_success=_previous_success(path, out),
    )
    try:
        _replace(path, generate_latest(registry))
    except OSError as exc:
        raise LocalWriteError(
            f"the metrics were not written to {path}: {exc.strerror or exc}"
        ) from None
    except LocalWriteError as exc:  # a FIFO without a reader, or one that stopped reading
        raise LocalWriteError(f"the metrics were not written: {exc}") from None


def coverage_registry(view: Coverage, *, per_id: bool = False, planned: bool) -> CollectorRegistry:
    """Gauges of what the journal (and, when ``planned``, a manifest) says is on disk."""
    from .coverage import MISSING, SEVERITY

    registry = CollectorRegistry(auto_describe=True)
    out = _folder(view.out)
    states = [s for s in SEVERITY if planned or s != MISSING]
    files = _gauges(
        registry,
        "omar_bulk_coverage_files",
        "Files by state and kind: downloaded, revised, empty, failed, and missing (planned by"
        " --manifest, never fetched).",
        ["out", "kind", "state"],
    )
    revisions = _gauges(
        registry,
        "omar_bulk_coverage_revisions",
        "Times data was revised (resubmitted and fetched again), by kind.",
        ["out", "kind"],
    )
    by_kind: dict[str, dict[str, int]] = {}
    revised: dict[str, int] = {}
    for series in view.series:
        counts = by_kind.setdefault(series.kind, dict.fromkeys(states, 0))
        for state in states:
            counts[state] += series.files.get(state, 0)
        revised[series.kind] = revised.get(series.kind, 0) + series.revisions
    for kind in ("meter", "group"):
        counts = by_kind.get(kind, dict.fromkeys(states, 0))
        for state in states:
            files.labels(out=out, kind=kind, state=state).set(counts[state])
        revisions.labels(out=out, kind=kind).set(revised.get(kind, 0))
    complete = _gauges(
        registry,
        "omar_bulk_coverage_complete",
        "1 when nothing is failed"
        + (" or missing" if planned else "")
        + ", else 0 (as status's exit code).",
        ["out"],
    )
    complete.labels(out=out).set(int(view.complete))
    if view.last_fetch is not None:
        last = _gauges(
            registry,
            "omar_bulk_coverage_last_fetch_timestamp_seconds",
            "When the journal last recorded a file, Unix time.",
            ["out"],
        )
        last.labels(out=out).set(view.last_fetch)
    if per_id:
        each = _gauges(
            registry,
            "omar_bulk_coverage_id_files",
            "Files by state per meter or group id (one series per id: mind the cardinality).",
            ["out", "kind", "id", "format", "time_type", "state"],
        )
        for series in view.series:
            for state in states:
                each.labels(
                    out=out,
                    kind=series.kind,
                    id=series.id,
                    format=series.format,
                    time_type=series.time_type,
                    state=state,
                ).set(series.files.get(state, 0))
    return registry


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``userfiles.write_output``: a file is written whole
    beside it and renamed, so node_exporter never reads half a file; a FIFO or a device is
    written in place. 0644, unlike everything else omar-bulk writes: the collector usually
    runs as another user, and the file holds counts, never meter data or secrets."""
    from .userfiles import write_output

    with write_output(path, mode=0o644) as handle:
        handle.write(data)


def exposition(registry: CollectorRegistry) -> str:
    """The registry in the text exposition format."""
    return generate_latest(registry).decode()


def _gauges(registry: CollectorRegistry, name: str, doc: str, labels: list[str]) -> Gauge:
    return Gauge(name, doc, labels, registry=registry)


def _folder(out: Path) -> str:
    with contextlib.suppress(OSError):
        return str(out.resolve())
    return str(out)


def _previous_success(path: Path, out: Path) -> float | None:
    """The last success time recorded for ``out`` in the file about to be replaced."""
    from prometheus_client.parser import text_string_to_metric_families

    from .userfiles import read_back

    data = read_back(path, _READ_BACK_MAX)  # a regular file only: never a FIFO or a device
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    folder = _folder(out)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("out") == folder:
                    return float(sample.value)
    except ValueError:  # a damaged file: start afresh
        return None
    return None


__all__ = [
    "RUN_STATUSES",
    "RetryCounter",
    "RunRecorder",
    "check_target",
    "coverage_registry",
    "exposition",
    "run_registry",
    "write_run_metrics",
]
