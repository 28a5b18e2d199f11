"""Daemon soak: memory, file descriptors, threads and requests of the daemon under churn.

Issue 13, target 7: "20 minutes of a change a second on 2,000 files: RSS and open
descriptors flat (slope reported), requests per change constant."

Starts the emulator (``cntr-sync emulator --port 0 --control``) and the daemon
(``cntr-sync run --config FILE``) as separate processes on 127.0.0.1, with one pair
at the product's defaults: no ``requests_per_second`` (the adaptive pacer, no
client-side cap), quiet_period 1, max_delay 10, rescan_interval 600,
remote_poll_interval 60 (each can be set with an option). The tree starts with
``--files`` (2,000) files of 0 to 4 KiB in nested directories (depth 0 to 3) and is
backdated an hour, so the first pass uploads everything.

Once ``/readyz`` answers 200, a writer churns for ``--minutes`` (20): on a clock
schedule, one change every ``--interval`` (1 s) on average (each gap seeded random
between half and one and a half times that; a late step does not shift the ones
after it), it creates, modifies (always to a new size), renames (often into another
directory) or deletes one file. Creating and deleting are weighted towards
``--files``, so the tree stays between half and one and a half times that size.

A sampler thread, every 10 s (more often for runs under 2 minutes, so that there
are at least 12 samples), reads the daemon's ``VmRSS`` and ``Threads`` from
``/proc/PID/status`` and counts ``/proc/PID/fd``; the emulator's RSS; the pass count
and pending changes from the daemon's ``/status``; the requests the emulator has
answered, per operation, from its control surface (``GET /_emulator/counts``, which
counts every API request it received and is not itself counted); the changes the
writer has made; and, from the daemon's log, its passes that listed the container
(full) and those that did not (incremental: only the paths the events named).
``/status`` shows only the last pass's ``listed``, so every pass is read from its
``sync pass`` log line instead.

At the end the writer stops and the script waits (bounded) for the daemon to
settle: ``/status`` shows no pending changes, an idle pair, and a pass that
started after the last change, with nothing deferred or failed. The last sample is
taken then, so that the requests of the last changes are counted. Then it lists
the container and compares it with the tree by name and size (MATCH or MISMATCH
with a count of differing names), sends SIGTERM to the daemon and times the stop.

It prints the RSS at 1 minute, at the end and its peak; the RSS, open-fd and
thread slopes per hour (least squares over the samples after the first 5 minutes;
for runs of 5.5 minutes or less after the first third, at most 1 minute, marked
indicative); fds and threads at the start and the end; the requests the churn
cost by operation, per change overall and against the least possible (1 for a
create or delete, 2 for a modify or rename: upload, then delete the old copy);
requests per change in the first, middle and last third of the run, the last
over the first, and the least-squares slope of the per-sample-interval
requests per change (so "constant" can be judged); the daemon's own count of its
requests (its passes' ``requests``) against the emulator's; its passes by reason
and full or incremental; the writer's achieved rate; the settling, the mirror
check and the daemon's exit code.

It asserts no figure; it exits 1 when the mirror does not match, the daemon did
not settle or did not exit 0. ``--csv PATH`` writes one row per sample as the run
goes; ``--summary PATH`` writes the figures as one JSON document (what
``python -m bench`` reads for target 7).

Run: ``.venv/bin/python bench/daemon_soak.py [--minutes 20] [--csv PATH]``;
``--minutes 2`` is a quick check that everything works.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from _support import (
    API_KEY,
    HTTP_TIMEOUT_S,
    READY_TIMEOUT_S,
    Daemon,
    backdate,
    emulator_and_daemon,
    local_files,
    log_events,
    mib,
    problem_lines,
    proc_status,
    random_dir_parts,
    run_main,
    user_files,
)
from cntr_sync.api import ContainersClient
from cntr_sync.emulator import EmulatorControl

MIB_KIB = 1024
SAMPLE_INTERVAL_S = 10.0
MIN_SAMPLES = 12
SETTLE_TIMEOUT_S = 180.0
SLOPE_AFTER_S = 300.0
LONG_RUN_S = 330.0  # runs longer than 5.5 minutes fit after SLOPE_AFTER_S
MAX_FILE_BYTES = 4 * 1024
OPERATIONS = ("create", "modify", "rename", "delete")
# The fewest requests a change can cost: the API has no overwrite and no rename, so a
# modify or a rename is an upload and a delete of the old copy.
LEAST_REQUESTS = {"create": 1, "modify": 2, "rename": 2, "delete": 1}
LIST_OPERATIONS = ("list_files", "list_containers")
PASS_REASONS = ("initial", "changes", "overdue", "rescan", "poll", "flush")


def fit_after_s(churn_s: float) -> float:
    """Where the slope fits start: after 5 minutes (the start-up's settling), or for a
    run of 5.5 minutes or less after its first third, at most 1 minute."""
    return SLOPE_AFTER_S if churn_s > LONG_RUN_S else min(60.0, churn_s / 3)


# -- /proc readings ----------------------------------------------------------------


def open_fds(pid: int) -> int | None:
    try:
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None


# -- the tree and the writer ------------------------------------------------------------


class WorkingSet:
    """The tree's files as relpaths: O(1) add, remove and random pick."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, relpath: str) -> None:
        self._where[relpath] = len(self._items)
        self._items.append(relpath)

    def remove(self, relpath: str) -> None:
        index = self._where.pop(relpath)
        last = self._items.pop()
        if index < len(self._items):
            self._items[index] = last
            self._where[last] = index

    def pick(self, rng: random.Random) -> str:
        return self._items[rng.randrange(len(self._items))]


@dataclass
class Writer:
    root: Path
    rng: random.Random
    target: int
    files: WorkingSet = field(default_factory=WorkingSet)
    counts: Counter[str] = field(default_factory=Counter)
    serial: int = 0

    @property
    def changes(self) -> int:
        return sum(self.counts.values())

    @property
    def least_requests(self) -> int:
        return sum(LEAST_REQUESTS[op] * n for op, n in self.counts.items())

    def _write(self, relpath: str, size: int) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.rng.randbytes(size))

    def _new_name(self, prefix: str) -> str:
        self.serial += 1
        return "/".join([*random_dir_parts(self.rng), f"{prefix}{self.serial:06d}.bin"])

    def build(self) -> None:
        for _ in range(self.target):
            relpath = self._new_name("f")
            self._write(relpath, self.rng.randint(0, MAX_FILE_BYTES))
            self.files.add(relpath)

    def choose(self) -> str:
        # Creates and deletes lean towards the target size; bounded to 0.5x..1.5x of it.
        count = len(self.files)
        if count <= self.target // 2:
            return "create"
        if count >= self.target * 3 // 2:
            return "delete"
        lean = (self.target - count) / self.target  # -0.5 .. 0.5
        weights = (1.0 + 2 * lean, 2.0, 1.0, 1.0 - 2 * lean)
        return self.rng.choices(OPERATIONS, weights)[0]

    def step(self) -> str:
        operation = self.choose()
        if operation == "create":
            relpath = self._new_name("c")
            self._write(relpath, self.rng.randint(0, MAX_FILE_BYTES))
            self.files.add(relpath)
        elif operation == "modify":
            relpath = self.files.pick(self.rng)
            old_size = (self.root / relpath).stat().st_size
            size = self.rng.randint(0, MAX_FILE_BYTES)
            if size == old_size:  # a new size, so no stat check can miss it
                size = old_size + 1 if old_size < MAX_FILE_BYTES else old_size - 1
            self._write(relpath, size)
        elif operation == "rename":
            relpath = self.files.pick(self.rng)
            target = self._new_name("r")
            (self.root / target).parent.mkdir(parents=True, exist_ok=True)
            (self.root / relpath).rename(self.root / target)
            self.files.remove(relpath)
            self.files.add(target)
        else:
            relpath = self.files.pick(self.rng)
            (self.root / relpath).unlink()
            self.files.remove(relpath)
        self.counts[operation] += 1
        return operation


@dataclass
class Timing:
    """How closely the writer kept to its schedule."""

    gaps: list[float] = field(default_factory=list)
    late_max_s: float = 0.0
    step_max_s: float = 0.0


# -- the daemon's log ------------------------------------------------------------------------


@dataclass
class PassLog:
    """The daemon's ``sync pass`` log lines, read as the log grows (complete lines only)."""

    path: Path
    offset: int = 0
    full: int = 0
    incremental: int = 0
    failed: int = 0
    requests: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def passes(self) -> int:
        return self.full + self.incremental + self.failed

    def read(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(event, dict):
                continue
            if event.get("event") == "sync pass":
                self.reasons[str(event.get("reason"))] += 1
                self.requests += int(event.get("requests") or 0)
                if event.get("listed"):
                    self.full += 1
                else:
                    self.incremental += 1
            elif event.get("event") == "sync pass failed":
                self.reasons[str(event.get("reason"))] += 1
                self.failed += 1


# -- the sampler ----------------------------------------------------------------------------


CSV_FIELDS = (
    "elapsed_s",
    "rss_kib",
    "fds",
    "threads",
    "emulator_rss_kib",
    "passes",
    "pending_changes",
    "local_files",
    "changes",
    "requests",
    "list_requests",
    "create_file",
    "delete_file",
    "least_requests",
    "full_passes",
    "incremental_passes",
    "interval_changes",
    "interval_requests",
    "interval_requests_per_change",
)


@dataclass(frozen=True)
class Sample:
    """One reading. ``changes``, ``requests`` and the per-operation counts are cumulative
    since the churn started; the passes since the daemon started; ``interval_*`` since
    the previous sample."""

    elapsed_s: float
    rss_kib: int | None
    fds: int | None
    threads: int | None
    emulator_rss_kib: int | None
    passes: int | None
    pending_changes: int | None
    local_files: int
    changes: int
    requests: int | None
    by_operation: dict[str, int]
    least_requests: int
    full_passes: int
    incremental_passes: int
    interval_changes: int
    interval_requests: int | None

    @property
    def list_requests(self) -> int:
        return sum(self.by_operation.get(op, 0) for op in LIST_OPERATIONS)

    @property
    def interval_requests_per_change(self) -> float | None:
        if self.interval_requests is None or self.interval_changes == 0:
            return None
        return self.interval_requests / self.interval_changes

    def row(self) -> list[Any]:
        per_change = self.interval_requests_per_change
        values: list[Any] = [
            self.rss_kib,
            self.fds,
            self.threads,
            self.emulator_rss_kib,
            self.passes,
            self.pending_changes,
            self.local_files,
            self.changes,
            self.requests,
            self.list_requests if self.requests is not None else None,
            self.by_operation.get("create_file") if self.requests is not None else None,
            self.by_operation.get("delete_file") if self.requests is not None else None,
            self.least_requests,
            self.full_passes,
            self.incremental_passes,
            self.interval_changes,
            self.interval_requests,
            None if per_change is None else f"{per_change:.3f}",
        ]
        return [f"{self.elapsed_s:.1f}", *("" if value is None else value for value in values)]


class Sampler:
    """Every ``interval_s``: the daemon's RSS, fds and threads, the emulator's RSS, the
    pass count from /status, the emulator's request counts and the daemon's log (each
    on a connection of its own)."""

    def __init__(
        self,
        daemon_pid: int,
        emulator_pid: int,
        status_url: str,
        emulator_url: str,
        pass_log: PassLog,
        writer: Writer,
        interval_s: float,
        csv_handle: TextIO | None,
    ) -> None:
        self._daemon_pid = daemon_pid
        self._emulator_pid = emulator_pid
        self._http = httpx.Client(base_url=status_url, timeout=HTTP_TIMEOUT_S)
        self._control = EmulatorControl(emulator_url, timeout=HTTP_TIMEOUT_S)
        self._pass_log = pass_log
        self._writer = writer
        self.interval_s = interval_s
        self._csv = csv.writer(csv_handle) if csv_handle is not None else None
        self._csv_handle = csv_handle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.started = time.monotonic()
        self.samples: list[Sample] = []
        self.baseline: dict[str, int] = {}
        self.count_errors = 0
        if self._csv is not None:
            self._csv.writerow(CSV_FIELDS)

    def _passes(self) -> tuple[int | None, int | None]:
        try:
            response = self._http.get("/status")
            response.raise_for_status()
            pair = response.json()["pairs"]["bench"]
            return int(pair["passes"]), int(pair["pending_changes"])
        except (httpx.HTTPError, KeyError, ValueError):
            return None, None

    def _counts(self) -> dict[str, int] | None:
        try:
            return {op: int(n) for op, n in self._control.counts().items()}
        except (httpx.HTTPError, ValueError, AttributeError):
            self.count_errors += 1
            return None

    def sample(self) -> Sample:
        passes, pending = self._passes()
        counts = self._counts()
        self._pass_log.read()
        by_operation = (
            {op: n - self.baseline.get(op, 0) for op, n in counts.items()}
            if counts is not None
            else {}
        )
        requests = sum(by_operation.values()) if counts is not None else None
        previous = self.samples[-1] if self.samples else None
        changes = self._writer.changes
        interval_requests = None
        if requests is not None and previous is not None and previous.requests is not None:
            interval_requests = requests - previous.requests
        sample = Sample(
            elapsed_s=time.monotonic() - self.started,
            rss_kib=proc_status(self._daemon_pid, "VmRSS"),
            fds=open_fds(self._daemon_pid),
            threads=proc_status(self._daemon_pid, "Threads"),
            emulator_rss_kib=proc_status(self._emulator_pid, "VmRSS"),
            passes=passes,
            pending_changes=pending,
            local_files=len(self._writer.files),
            changes=changes,
            requests=requests,
            by_operation=by_operation,
            least_requests=self._writer.least_requests,
            full_passes=self._pass_log.full,
            incremental_passes=self._pass_log.incremental,
            interval_changes=changes - previous.changes if previous is not None else 0,
            interval_requests=interval_requests,
        )
        self.samples.append(sample)
        if self._csv is not None and self._csv_handle is not None:
            self._csv.writerow(sample.row())
            self._csv_handle.flush()
        return sample

    def _run(self) -> None:
        next_at = self.started + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.sample()
            next_at += self.interval_s

    def start(self) -> None:
        """The baseline counts (the initial upload's requests), the first sample, then
        the thread."""
        self.baseline = self._counts() or {}
        self.started = time.monotonic()
        self.sample()
        self._thread.start()

    def stop(self, *, final_sample: bool = False) -> None:
        """End the thread; then, if asked, take one last sample (the end figures)."""
        self._stop.set()
        self._thread.join(timeout=2 * HTTP_TIMEOUT_S + 5)
        try:
            if final_sample:
                self.sample()
        finally:
            self._http.close()
            self._control.close()


# -- settling and the mirror -----------------------------------------------------------------


def wait_settled(
    daemon: Daemon, last_change_wall: float, timeout_s: float
) -> tuple[bool, float, dict[str, Any]]:
    """Until /status shows no pending change, an idle pair and a clean pass that started
    after the last change (bounded); returns (settled, seconds, the pair's status)."""
    started = time.monotonic()
    pair: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        try:
            pair = daemon.pair()
        except (httpx.HTTPError, KeyError):
            time.sleep(0.2)
            continue
        last = pair.get("last_pass") or {}
        pass_started = (pair.get("last_sync_at") or 0.0) - float(last.get("seconds", 0.0))
        if (
            pair.get("pending_changes") == 0
            and pair.get("state") == "idle"
            and pass_started > last_change_wall
            and last.get("deferred") == 0
            and last.get("failed") == 0
        ):
            return True, time.monotonic() - started, pair
        time.sleep(0.1)
    return False, time.monotonic() - started, pair


def compare_mirror(base_url: str, container_id: str, root: Path) -> tuple[int, int, int, int]:
    """(differing names, duplicate remote names, remote files, local files)."""
    remote: dict[str, list[int | None]] = {}
    with ContainersClient(API_KEY, base_url=base_url, timeout=HTTP_TIMEOUT_S) as client:
        for name, item in user_files(client, container_id):
            remote.setdefault(name, []).append(item.bytes)
    local = local_files(root)
    names = set(remote) | set(local)
    differing = sum(1 for name in names if remote.get(name) != [local.get(name)])
    duplicates = sum(1 for sizes in remote.values() if len(sizes) > 1)
    return differing, duplicates, sum(len(s) for s in remote.values()), len(local)


# -- figures ------------------------------------------------------------------------------------


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per hour; None if < 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600


def fitted(
    samples: list[Sample], after_s: float, attribute: str, scale: float = 1.0
) -> dict[str, Any]:
    """{"per_hour", "samples"} for one reading of the samples after ``after_s``."""
    points = [
        (s.elapsed_s, value / scale)
        for s in samples
        if s.elapsed_s >= after_s and (value := getattr(s, attribute)) is not None
    ]
    slope = slope_per_hour(points)
    return {"per_hour": None if slope is None else round(slope, 4), "samples": len(points)}


def at_or_after(samples: list[Sample], elapsed_s: float) -> Sample | None:
    return next((s for s in samples if s.elapsed_s >= elapsed_s), None)


def window(first: Sample, last: Sample) -> dict[str, Any]:
    """Changes, requests and requests per change between two samples."""
    changes = last.changes - first.changes
    least = last.least_requests - first.least_requests
    requests = (
        last.requests - first.requests
        if last.requests is not None and first.requests is not None
        else None
    )
    per_change = requests / changes if requests is not None and changes else None
    return {
        "from_s": round(first.elapsed_s, 1),
        "to_s": round(last.elapsed_s, 1),
        "changes": changes,
        "requests": requests,
        "list_requests": last.list_requests - first.list_requests,
        "full_passes": last.full_passes - first.full_passes,
        "requests_per_change": None if per_change is None else round(per_change, 4),
        "least_per_change": round(least / changes, 4) if changes else None,
    }


def request_figures(samples: list[Sample], churn_s: float) -> dict[str, Any]:
    """Requests per change overall, per third of the run, and the trend of the
    per-interval figure."""
    first, last = samples[0], samples[-1]
    overall = window(first, last)
    # Thirds by churn time; the last third runs to the final sample (after settling),
    # so the requests of the last changes are in it.
    cuts = [first]
    for fraction in (1 / 3, 2 / 3):
        cut = at_or_after(samples, churn_s * fraction)
        cuts.append(cut if cut is not None else last)
    cuts.append(last)
    thirds = [window(a, b) for a, b in itertools.pairwise(cuts)]
    head, tail = thirds[0]["requests_per_change"], thirds[-1]["requests_per_change"]
    points = [
        (s.elapsed_s, per_change)
        for s in samples
        if (per_change := s.interval_requests_per_change) is not None
    ]
    slope = slope_per_hour(points)
    mean = overall["requests_per_change"]
    return {
        "total": overall["requests"],
        "by_operation": {op: n for op, n in last.by_operation.items() if n},
        "changes": overall["changes"],
        "per_change": mean,
        "least_per_change": overall["least_per_change"],
        "over_least": (
            round(mean / overall["least_per_change"], 4)
            if mean is not None and overall["least_per_change"]
            else None
        ),
        "thirds": thirds,
        "last_third_over_first": round(tail / head, 4) if head and tail is not None else None,
        "interval_slope_per_hour": None if slope is None else round(slope, 4),
        "interval_slope_relative_per_hour": (
            round(slope / mean, 4) if slope is not None and mean else None
        ),
        # What the fitted line moves by over the churn, as a fraction of the mean.
        "interval_slope_over_run": (
            round(slope * churn_s / 3600 / mean, 4) if slope is not None and mean else None
        ),
        "intervals": len(points),
    }


@dataclass
class Outcome:
    samples: list[Sample]
    sample_interval_s: float
    counts: Counter[str]
    timing: Timing
    minutes: float
    churn_s: float
    files_end: int
    settled: bool
    settle_s: float
    pair: dict[str, Any]
    differing: int
    duplicates: int
    remote_files: int
    local_files: int
    exit_code: int | None
    stop_s: float
    log_levels: dict[str, int]
    pass_log: PassLog
    passes_at_churn_start: tuple[int, int]
    daemon_requests: int
    emulator_requests: int | None
    count_errors: int
    config: dict[str, Any]
    problems: list[str]


def rss_mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / MIB_KIB, 2)


def summary(out: Outcome) -> dict[str, Any]:
    """The figures, as ``--summary`` writes them and ``python -m bench`` reads them."""
    samples = out.samples
    first, last = samples[0], samples[-1]
    one_minute = at_or_after(samples, 60.0)
    peak = max((s for s in samples if s.rss_kib), key=lambda s: s.rss_kib or 0, default=None)
    after = fit_after_s(out.churn_s)
    gaps = out.timing.gaps
    fds = [s.fds for s in samples if s.fds is not None]
    return {
        "minutes": out.minutes,
        "config": out.config,
        "churn_s": round(out.churn_s, 1),
        "changes": sum(out.counts.values()),
        "changes_by_operation": {op: out.counts.get(op, 0) for op in OPERATIONS},
        "writer": {
            "changes_per_second": round(sum(out.counts.values()) / out.churn_s, 3)
            if out.churn_s
            else None,
            "gap_mean_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
            "gap_min_s": round(min(gaps), 3) if gaps else None,
            "gap_max_s": round(max(gaps), 3) if gaps else None,
            "late_max_s": round(out.timing.late_max_s, 3),
            "step_max_s": round(out.timing.step_max_s, 3),
        },
        "files_start": first.local_files,
        "files_end": out.files_end,
        "samples": len(samples),
        "sample_interval_s": out.sample_interval_s,
        "fit_after_s": round(after, 1),
        "fit_indicative": out.churn_s <= LONG_RUN_S,
        "rss_mib": {
            "start": rss_mib(first.rss_kib),
            "one_minute": rss_mib(one_minute.rss_kib) if one_minute is not None else None,
            "end": rss_mib(last.rss_kib),
            "peak": rss_mib(peak.rss_kib) if peak is not None else None,
            "peak_at_s": round(peak.elapsed_s, 1) if peak is not None else None,
            "slope": fitted(samples, after, "rss_kib", MIB_KIB),
        },
        "fds": {
            "start": first.fds,
            "end": last.fds,
            "min": min(fds, default=None),
            "max": max(fds, default=None),
            "slope": fitted(samples, after, "fds"),
        },
        "threads": {
            "start": first.threads,
            "end": last.threads,
            "slope": fitted(samples, after, "threads"),
        },
        "emulator_rss_mib": {
            "start": rss_mib(first.emulator_rss_kib),
            "end": rss_mib(last.emulator_rss_kib),
        },
        "requests": request_figures(samples, out.churn_s),
        "requests_cross_check": {
            "daemon_counted": out.daemon_requests,
            "emulator_counted": out.emulator_requests,
            "count_errors": out.count_errors,
        },
        "passes": {
            "total": out.pair.get("passes"),
            "during_churn_full": last.full_passes - out.passes_at_churn_start[0],
            "during_churn_incremental": last.incremental_passes - out.passes_at_churn_start[1],
            "full": out.pass_log.full,
            "incremental": out.pass_log.incremental,
            "failed": out.pass_log.failed,
            "by_reason": dict(out.pass_log.reasons.most_common()),
        },
        "settled": out.settled,
        "settle_s": round(out.settle_s, 1),
        "last_pass": out.pair.get("last_pass"),
        "mirror": {
            "match": out.differing == 0 and out.duplicates == 0,
            "differing": out.differing,
            "duplicates": out.duplicates,
            "remote_files": out.remote_files,
            "local_files": out.local_files,
        },
        "exit_code": out.exit_code,
        "stop_s": round(out.stop_s, 2),
        "log_levels": out.log_levels,
        "problems": out.problems,
    }


def per_hour(fit: dict[str, Any], unit: str, fmt: str = "+.2f") -> str:
    if fit["per_hour"] is None:
        return "n/a"
    return f"{fit['per_hour']:{fmt}} {unit}/hour (least squares, {fit['samples']} samples)"


def report(out: Outcome, figures: dict[str, Any]) -> None:
    rss, fds, threads = figures["rss_mib"], figures["fds"], figures["threads"]
    requests, passes, writer = figures["requests"], figures["passes"], figures["writer"]
    after = figures["fit_after_s"]
    window_text = (
        f"after {after / 60:g} min"
        if not figures["fit_indicative"]
        else f"after {after:.0f} s, short run: indicative only"
    )

    def shown(value: float | None, unit: str = "MiB") -> str:
        return "n/a" if value is None else f"{value:.1f} {unit}"

    print()
    print(f"churn: {out.churn_s / 60:.1f} min, {figures['changes']} changes (", end="")
    print(", ".join(f"{op} {out.counts.get(op, 0)}" for op in OPERATIONS) + ")")
    print(
        f"writer: {writer['changes_per_second']} changes/s; gaps mean {writer['gap_mean_s']} s, "
        f"min {writer['gap_min_s']} s, max {writer['gap_max_s']} s; at most "
        f"{writer['late_max_s']} s behind schedule (longest step {writer['step_max_s']} s)"
    )
    print(f"tree: {figures['files_start']} files at the start, {figures['files_end']} at the end")
    print()
    print(f"daemon RSS at start            {shown(rss['start'])}")
    print(f"daemon RSS at 1 min            {shown(rss['one_minute'])}")
    end_min = out.samples[-1].elapsed_s / 60
    print(f"daemon RSS at the end          {shown(rss['end'])} ({end_min:.1f} min)")
    if rss["peak"] is not None:
        print(
            f"daemon RSS peak                {shown(rss['peak'])} "
            f"at {rss['peak_at_s'] / 60:.1f} min"
        )
    print(f"daemon RSS slope ({window_text})  {per_hour(rss['slope'], 'MiB')}")
    print(
        f"daemon open fds start/end      {fds['start']} / {fds['end']} "
        f"(min {fds['min']}, max {fds['max']})"
    )
    print(f"daemon open fds slope          {per_hour(fds['slope'], 'fds')}")
    print(
        f"daemon threads start/end       {threads['start']} / {threads['end']}; "
        f"slope {per_hour(threads['slope'], 'threads')}"
    )
    emu = figures["emulator_rss_mib"]
    print(f"emulator RSS start/end         {shown(emu['start'])} / {shown(emu['end'])}")
    print(
        f"samples                        {figures['samples']} (every {out.sample_interval_s:g} s)"
    )
    print()
    by_op = ", ".join(f"{op} {n}" for op, n in sorted(requests["by_operation"].items()))
    print(f"requests (emulator, churn + settling)  {requests['total']} ({by_op})")
    print(
        f"requests per change            {requests['per_change']} over "
        f"{requests['changes']} changes; "
        f"least possible {requests['least_per_change']} (ratio {requests['over_least']})"
    )
    for name, third in zip(("first", "middle", "last"), requests["thirds"], strict=False):
        print(
            f"  {name:6} third {third['from_s'] / 60:5.1f}-{third['to_s'] / 60:5.1f} min: "
            f"{third['requests_per_change']} requests/change ({third['requests']} requests, "
            f"{third['changes']} changes, {third['list_requests']} listing, "
            f"{third['full_passes']} full passes; least {third['least_per_change']})"
        )
    print(f"requests per change, last third / first  {requests['last_third_over_first']}")
    slope = requests["interval_slope_per_hour"]
    over_run = requests["interval_slope_over_run"]
    print(
        "requests per change, trend     "
        + (
            "n/a"
            if slope is None
            else f"{slope:+.3f} per hour, {100 * over_run:+.1f} % of the mean over the run "
            f"(least squares over {requests['intervals']} sample intervals)"
        )
    )
    check = figures["requests_cross_check"]
    print(
        f"daemon's own request count     {check['daemon_counted']} (its passes' 'requests', since "
        f"start); emulator {check['emulator_counted']}"
        + (f"; {check['count_errors']} count readings failed" if check["count_errors"] else "")
    )
    print()
    reasons = ", ".join(f"{reason} {n}" for reason, n in passes["by_reason"].items())
    print(f"daemon passes (/status)        {passes['total']} ({reasons})")
    print(
        f"passes full / incremental      {passes['full']} / {passes['incremental']} since start "
        f"({passes['during_churn_full']} / {passes['during_churn_incremental']} during the churn); "
        f"failed {passes['failed']}"
    )
    print(
        f"settled after the churn        {'yes' if out.settled else 'NO'} in {out.settle_s:.1f} s "
        f"(last pass: {out.pair.get('last_pass')})"
    )
    verdict = "MATCH" if figures["mirror"]["match"] else "MISMATCH"
    print(
        f"mirror (names and sizes)       {verdict}: {out.differing} names differ, "
        f"{out.duplicates} duplicated; {out.remote_files} remote, {out.local_files} local"
    )
    print(f"daemon stop (SIGTERM)          exit code {out.exit_code} after {out.stop_s:.2f} s")
    print(f"daemon log lines by level      {out.log_levels}")
    for line in out.problems:
        print(f"  daemon log: {line}")


# -- the run --------------------------------------------------------------------------------------


def pair_options(args: argparse.Namespace) -> dict[str, float]:
    """Only the options given: the rest stay at the product's defaults."""
    given = {
        "quiet_period": args.quiet_period,
        "max_delay": args.max_delay,
        "rescan_interval": args.rescan_interval,
        "remote_poll_interval": args.remote_poll_interval,
    }
    return {key: value for key, value in given.items() if value is not None}


def churn(
    args: argparse.Namespace, writer: Writer, sampler: Sampler, timing: Timing
) -> tuple[float, float]:
    """Changes on a clock schedule until the deadline; (churn seconds, wall time of the
    last change)."""
    churn_started = time.monotonic()
    deadline = churn_started + args.minutes * 60
    next_report = churn_started + 60
    last_change_wall = time.time()
    due = churn_started
    previous = churn_started
    while True:
        due += writer.rng.uniform(0.5, 1.5) * args.interval
        if due >= deadline:
            time.sleep(max(0.0, deadline - time.monotonic()))
            break
        time.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        timing.late_max_s = max(timing.late_max_s, now - due)
        timing.gaps.append(now - previous)
        previous = now
        writer.step()
        last_change_wall = time.time()
        timing.step_max_s = max(timing.step_max_s, time.monotonic() - now)
        if time.monotonic() >= next_report:
            next_report += 60
            latest = sampler.samples[-1]
            print(
                f"... {(time.monotonic() - churn_started) / 60:.0f} min: "
                f"{writer.changes} changes, {len(writer.files)} files, "
                f"daemon RSS {mib(latest.rss_kib)}, fds {latest.fds}, "
                f"threads {latest.threads}, passes {latest.passes} "
                f"({latest.full_passes} full), requests {latest.requests}",
                flush=True,
            )
    return time.monotonic() - churn_started, last_change_wall


def run(args: argparse.Namespace, work_dir: Path, csv_handle: TextIO | None) -> Outcome:
    root = work_dir / "tree"
    root.mkdir()
    writer = Writer(root, random.Random(args.seed), args.files)
    writer.build()
    backdate(root)
    options = pair_options(args)
    config = {"requests_per_second": args.requests_per_second, **options}
    interval_s = min(SAMPLE_INTERVAL_S, max(1.0, args.minutes * 60 / MIN_SAMPLES))
    with emulator_and_daemon(
        work_dir,
        root,
        container="bench-daemon-soak",
        requests_per_second=args.requests_per_second,
        pair_options=options,
    ) as (emulator, daemon):
        ready_s = daemon.wait_ready(max(READY_TIMEOUT_S, args.files / 20 + 60))
        container_id = daemon.pair()["container_id"]
        shown = ", ".join(f"{k} {v:g}" for k, v in options.items()) or "all pair defaults"
        rate = args.requests_per_second
        print(
            f"daemon pid {daemon.child.pid} ready {ready_s:.1f} s after start "
            f"({args.files} files uploaded); emulator pid {emulator.child.pid}; "
            f"requests_per_second {'default' if rate is None else f'{rate:g}'}, {shown}; "
            f"churning for {args.minutes:g} min, a change every {args.interval:g} s on average",
            flush=True,
        )
        pass_log = PassLog(daemon.child.log_path)
        sampler = Sampler(
            daemon.child.pid,
            emulator.child.pid,
            daemon.http_url,
            emulator.base_url,
            pass_log,
            writer,
            interval_s,
            csv_handle,
        )
        timing = Timing()
        sampler.start()
        at_start = (pass_log.full, pass_log.incremental)
        try:
            churn_s, last_change_wall = churn(args, writer, sampler, timing)
            settled, settle_s, pair = wait_settled(daemon, last_change_wall, SETTLE_TIMEOUT_S)
        except BaseException:
            sampler.stop()
            raise
        sampler.stop(final_sample=True)  # the end figures, taken once settled
        daemon_requests = pass_log.requests
        final = sampler.samples[-1]
        emulator_requests = (
            None if final.requests is None else final.requests + sum(sampler.baseline.values())
        )
        differing, duplicates, remote_count, local_count = compare_mirror(
            emulator.base_url, container_id, root
        )
        pair = daemon.pair()
        exit_code, stop_s = daemon.child.stop()
        lines = daemon.child.log_lines()
        pass_log.read()
    return Outcome(
        samples=sampler.samples,
        sample_interval_s=interval_s,
        counts=writer.counts,
        timing=timing,
        minutes=args.minutes,
        churn_s=churn_s,
        files_end=len(writer.files),
        settled=settled,
        settle_s=settle_s,
        pair=pair,
        differing=differing,
        duplicates=duplicates,
        remote_files=remote_count,
        local_files=local_count,
        exit_code=exit_code,
        stop_s=stop_s,
        log_levels=log_events(lines),
        pass_log=pass_log,
        passes_at_churn_start=at_start,
        daemon_requests=daemon_requests,
        emulator_requests=emulator_requests,
        count_errors=sampler.count_errors,
        config=config,
        problems=problem_lines(lines),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=20.0, help="minutes of churn (default 20; 2 = quick)"
    )
    parser.add_argument(
        "--files", type=int, default=2000, help="working-set size of the tree (default 2000)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="mean seconds between changes (default 1: a change a second)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the tree and the churn")
    parser.add_argument("--csv", type=Path, default=None, help="write the samples to this CSV")
    parser.add_argument(
        "--summary", type=Path, default=None, help="write the figures to this JSON file"
    )
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=None,
        help="the daemon's client-side cap (default: none, the product's adaptive pacer)",
    )
    for name in ("quiet-period", "max-delay", "rescan-interval", "remote-poll-interval"):
        parser.add_argument(
            f"--{name}", type=float, default=None, help="seconds (default: the product's)"
        )
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.files < 10:
        parser.error("--files must be at least 10")
    if args.interval <= 0:
        parser.error("--interval must be positive")

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.files} files, "
        f"{args.minutes:g} min of churn, seed {args.seed}; started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}",
        flush=True,
    )
    csv_handle = args.csv.open("w", newline="") if args.csv is not None else None
    try:
        with tempfile.TemporaryDirectory(prefix="cntr-bench-soak-") as work:
            outcome = run(args, Path(work), csv_handle)
    finally:
        if csv_handle is not None:
            csv_handle.close()
    figures = summary(outcome)
    report(outcome, figures)
    if args.csv is not None:
        print(f"samples written to {args.csv}")
    if args.summary is not None:
        args.summary.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.summary}")
    ok = (
        outcome.settled
        and outcome.differing == 0
        and outcome.duplicates == 0
        and outcome.exit_code == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
