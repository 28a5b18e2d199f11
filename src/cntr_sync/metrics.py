"""Prometheus metrics of the daemon: one ``Metrics`` object owns every series.

Owns the metric definitions (names, labels, buckets), their registry and the
text exposition. Every metric lives in this object's own ``CollectorRegistry``,
never in prometheus_client's global one, so two daemons or two tests in one
process cannot collide and ``render`` shows exactly our series.

Must not do I/O, serve HTTP (``health`` does), or decide anything: callers report
what happened and this module counts it. A metrics call never raises for bad
numbers (negative counts are ignored) so it cannot take a sync pass down.

Series (all per ``pair`` unless noted):

    cntr_sync_build_info{version}                          gauge, always 1
    cntr_sync_api_requests_total{operation,status}         status "error" = no answer
    cntr_sync_passes_total{pair,result}                    success|noop|partial|error
    cntr_sync_pass_duration_seconds{pair}                  histogram, 10 ms .. 10 min
    cntr_sync_files_transferred_total{pair,action}         upload|delete|download|delete_local
    cntr_sync_bytes_transferred_total{pair,direction}      upload|download
    cntr_sync_conflicts_total{pair}                        files changed on both sides
    cntr_sync_pending_changes{pair}                        gauge
    cntr_sync_last_success_timestamp_seconds{pair}         gauge, unix time
    cntr_sync_container_recreations_total{pair}            counter
    cntr_sync_pair_up{pair}                                gauge, 1 healthy / 0 not
    cntr_sync_pair_paused{pair}                            gauge, 1 paused (cntr-sync pause)
    cntr_sync_hook_runs_total{pair,hook,result}            exec|webhook, ok|failed

No ``*_created`` series: they double the series count, and Prometheus reads a
counter's start from its own scrapes. prometheus_client's switch for that
(``disable_created_metrics``, public API) is process-wide; only the daemon makes a
``Metrics``, and ``cntr-sync run`` is a process of its own.
"""

from __future__ import annotations

import threading
from typing import Literal, TypeVar, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from cntr_sync._version import __version__

PassResult = Literal["success", "noop", "partial", "error"]
PASS_RESULTS: tuple[PassResult, ...] = get_args(PassResult)

# A no-change pass over a small tree takes tens of milliseconds; a first full
# upload of a large tree can take minutes. Past 10 minutes the exact value no
# longer matters for alerting, only that it was slow.
PASS_DURATION_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)

_FILE_ACTIONS = ("upload", "delete", "download", "delete_local")
_DIRECTIONS = ("upload", "download")

_Child = tuple[MetricWrapperBase, tuple[str, ...]]
_M = TypeVar("_M", bound=MetricWrapperBase)


class Metrics:
    """Every cntr-sync series in one private registry; thread-safe."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        # Which labelled children exist per pair, so forget_pair removes all of
        # them without reaching into prometheus_client's private state.
        self._children: dict[str, set[_Child]] = {}

        registry = self.registry
        self._build_info = Gauge(
            "cntr_sync_build_info",
            "cntr-sync build information; the value is always 1.",
            ["version"],
            registry=registry,
        )
        self._build_info.labels(__version__).set(1)
        self._requests = Counter(
            "cntr_sync_api_requests",
            "Containers API requests by operation and HTTP status ('error': no response).",
            ["operation", "status"],
            registry=registry,
        )
        self._passes = Counter(
            "cntr_sync_passes",
            "Reconcile passes by result.",
            ["pair", "result"],
            registry=registry,
        )
        self._pass_duration = Histogram(
            "cntr_sync_pass_duration_seconds",
            "Wall time of one reconcile pass.",
            ["pair"],
            buckets=PASS_DURATION_BUCKETS,
            registry=registry,
        )
        self._files = Counter(
            "cntr_sync_files_transferred",
            "Files uploaded to or deleted from the container.",
            ["pair", "action"],
            registry=registry,
        )
        self._bytes = Counter(
            "cntr_sync_bytes_transferred",
            "Bytes of file content transferred.",
            ["pair", "direction"],
            registry=registry,
        )
        self._pending = Gauge(
            "cntr_sync_pending_changes",
            "Local changes seen but not yet synced.",
            ["pair"],
            registry=registry,
        )
        self._last_success = Gauge(
            "cntr_sync_last_success_timestamp_seconds",
            "Unix time of the end of the last successful (or no-op) pass.",
            ["pair"],
            registry=registry,
        )
        self._conflicts = Counter(
            "cntr_sync_conflicts",
            "Files changed on both sides since they last agreed (pull and both).",
            ["pair"],
            registry=registry,
        )
        self._recreations = Counter(
            "cntr_sync_container_recreations",
            "Containers created again because the previous one expired or vanished.",
            ["pair"],
            registry=registry,
        )
        self._pair_up = Gauge(
            "cntr_sync_pair_up",
            "1 when the pair is healthy, 0 when it is not.",
            ["pair"],
            registry=registry,
        )

        self._paused = Gauge(
            "cntr_sync_pair_paused",
            "1 while the pair is paused (cntr-sync pause), 0 otherwise.",
            ["pair"],
            registry=registry,
        )
        self._hook_runs = Counter(
            "cntr_sync_hook_runs",
            "Hooks run after a pass that changed something, by kind and result.",
            ["pair", "hook", "result"],
            registry=registry,
        )

    def record_request(self, operation: str, status: int | None) -> None:
        """Count one API request; ``status`` None means no HTTP answer at all."""
        self._requests.labels(operation, "error" if status is None else str(status)).inc()

    def record_pass(
        self,
        pair: str,
        result: PassResult,
        seconds: float,
        *,
        uploaded_files: int = 0,
        deleted_files: int = 0,
        uploaded_bytes: int = 0,
        downloaded_files: int = 0,
        deleted_local_files: int = 0,
        downloaded_bytes: int = 0,
        conflicts: int = 0,
    ) -> None:
        """Count one finished pass with its duration and what it transferred."""
        self._ensure_pair(pair)
        self._child(self._passes, pair, result).inc()
        self._child(self._pass_duration, pair).observe(max(0.0, seconds))
        if uploaded_files > 0:
            self._child(self._files, pair, "upload").inc(uploaded_files)
        if deleted_files > 0:
            self._child(self._files, pair, "delete").inc(deleted_files)
        if uploaded_bytes > 0:
            self._child(self._bytes, pair, "upload").inc(uploaded_bytes)
        if downloaded_files > 0:
            self._child(self._files, pair, "download").inc(downloaded_files)
        if deleted_local_files > 0:
            self._child(self._files, pair, "delete_local").inc(deleted_local_files)
        if downloaded_bytes > 0:
            self._child(self._bytes, pair, "download").inc(downloaded_bytes)
        if conflicts > 0:
            self._child(self._conflicts, pair).inc(conflicts)

    def set_pending(self, pair: str, count: int) -> None:
        """Set how many local changes wait for the next pass."""
        self._ensure_pair(pair)
        self._child(self._pending, pair).set(max(0, count))

    def set_last_success(self, pair: str, timestamp: float) -> None:
        """Set the unix time of the last pass that left the container in sync."""
        self._ensure_pair(pair)
        self._child(self._last_success, pair).set(timestamp)

    def record_recreation(self, pair: str) -> None:
        """Count one container created anew for ``pair``."""
        self._ensure_pair(pair)
        self._child(self._recreations, pair).inc()

    def set_pair_up(self, pair: str, up: bool) -> None:
        """Set whether ``pair`` is healthy (1) or not (0)."""
        self._ensure_pair(pair)
        self._child(self._pair_up, pair).set(1 if up else 0)

    def set_paused(self, pair: str, paused: bool) -> None:
        """Set whether ``pair`` is paused (1) or not (0)."""
        self._ensure_pair(pair)
        self._child(self._paused, pair).set(1 if paused else 0)

    def record_hook(self, pair: str, hook: Literal["exec", "webhook"], ok: bool) -> None:
        """Count one hook run of ``pair`` that succeeded or failed."""
        self._ensure_pair(pair)
        self._child(self._hook_runs, pair, hook, "ok" if ok else "failed").inc()

    def forget_pair(self, pair: str) -> None:
        """Remove every series of ``pair``, e.g. when a reload drops it."""
        with self._lock:
            children = self._children.pop(pair, set())
        for metric, labelvalues in children:
            metric.remove(*labelvalues)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _ensure_pair(self, pair: str) -> None:
        # Counters are created at zero on first sight of a pair, so rate() and
        # increase() see the first pass as a step up from 0 rather than a new
        # series with no history.
        with self._lock:
            if pair in self._children:
                return
            self._children[pair] = set()
        for result in PASS_RESULTS:
            self._child(self._passes, pair, result)
        for action in _FILE_ACTIONS:
            self._child(self._files, pair, action)
        for direction in _DIRECTIONS:
            self._child(self._bytes, pair, direction)
        self._child(self._recreations, pair)
        self._child(self._conflicts, pair)
        self._child(self._pass_duration, pair)
        self._child(self._paused, pair)

    def _child(self, metric: _M, pair: str, *rest: str) -> _M:
        labelvalues = (pair, *rest)
        with self._lock:
            self._children.setdefault(pair, set()).add((metric, labelvalues))
        return metric.labels(*labelvalues)
