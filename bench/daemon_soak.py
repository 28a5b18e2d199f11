"""Daemon soak: memory, file descriptors and threads of the daemon under hours of churn.

Starts the emulator (``cntr-sync emulator --port 0 --control``) and the daemon
(``cntr-sync run --config FILE``) as separate processes on 127.0.0.1, with one
pair: quiet_period 0.2, max_delay 2, rescan_interval 60, remote_poll_interval 10,
requests_per_second 1000 (the emulator has no rate limit to respect). The tree
starts with ``--files`` (2,000) files of 0 to 4 KiB in nested directories
(depth 0 to 3) and is backdated an hour, so the first pass uploads everything.

Once ``/readyz`` answers 200, a writer churns for ``--minutes`` (60): every 0.2
to 1 s (seeded random) it creates, modifies, renames (often into another
directory) or deletes one file. Creating and deleting are weighted towards
``--files``, so the tree stays between half and one and a half times that size.
A sampler thread reads the daemon's ``VmRSS`` and ``Threads`` from
``/proc/PID/status`` and counts ``/proc/PID/fd`` every 10 s (plus the emulator's
RSS, and the daemon's pass count from ``/status``).

At the end the writer stops and the script waits (bounded) for the daemon to
settle: ``/status`` shows no pending changes, an idle pair, and a pass that
started after the last change, with nothing deferred or failed. Then it lists
the container and compares it with the tree by name and size (MATCH or
MISMATCH with a count of differing names), sends SIGTERM to the daemon and
times the stop.

It prints the RSS at 1 minute, at the end and its peak, the slope (MiB/hour,
least squares over the samples after the first 5 minutes; for shorter runs over
those after 1 minute, marked as indicative), fds and threads at the start and
the end, the daemon's passes, the files churned, and the daemon's exit code.
It asserts no figure; it exits 1 when the mirror does not match, the daemon did
not settle or did not exit 0.

Run: ``.venv/bin/python bench/daemon_soak.py [--minutes 60] [--csv PATH]``;
``--minutes 2`` is a quick check that everything works.
"""

from __future__ import annotations

import argparse
import csv
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

MIB_KIB = 1024
SAMPLE_INTERVAL_S = 10.0
SETTLE_TIMEOUT_S = 180.0
SLOPE_AFTER_S = 300.0
SHORT_SLOPE_AFTER_S = 60.0
MAX_FILE_BYTES = 4 * 1024
OPERATIONS = ("create", "modify", "rename", "delete")


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
)


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    rss_kib: int | None
    fds: int | None
    threads: int | None
    emulator_rss_kib: int | None
    passes: int | None
    pending_changes: int | None
    local_files: int
    changes: int

    def row(self) -> list[Any]:
        return [
            f"{self.elapsed_s:.1f}",
            *(
                "" if value is None else value
                for value in (
                    self.rss_kib,
                    self.fds,
                    self.threads,
                    self.emulator_rss_kib,
                    self.passes,
                    self.pending_changes,
                )
            ),
            self.local_files,
            self.changes,
        ]


class Sampler:
    """Every ``interval_s``: the daemon's RSS, fds and threads, the emulator's RSS, and
    the pass count from /status (on its own connection)."""

    def __init__(
        self,
        daemon_pid: int,
        emulator_pid: int,
        status_url: str,
        writer: Writer,
        interval_s: float,
        csv_handle: TextIO | None,
    ) -> None:
        self._daemon_pid = daemon_pid
        self._emulator_pid = emulator_pid
        self._http = httpx.Client(base_url=status_url, timeout=HTTP_TIMEOUT_S)
        self._writer = writer
        self._interval_s = interval_s
        self._csv = csv.writer(csv_handle) if csv_handle is not None else None
        self._csv_handle = csv_handle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.started = time.monotonic()
        self.samples: list[Sample] = []
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

    def sample(self) -> Sample:
        passes, pending = self._passes()
        sample = Sample(
            elapsed_s=time.monotonic() - self.started,
            rss_kib=proc_status(self._daemon_pid, "VmRSS"),
            fds=open_fds(self._daemon_pid),
            threads=proc_status(self._daemon_pid, "Threads"),
            emulator_rss_kib=proc_status(self._emulator_pid, "VmRSS"),
            passes=passes,
            pending_changes=pending,
            local_files=len(self._writer.files),
            changes=sum(self._writer.counts.values()),
        )
        self.samples.append(sample)
        if self._csv is not None and self._csv_handle is not None:
            self._csv.writerow(sample.row())
            self._csv_handle.flush()
        return sample

    def _run(self) -> None:
        next_at = self.started + self._interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.sample()
            next_at += self._interval_s

    def start(self) -> None:
        self.started = time.monotonic()
        self.sample()
        self._thread.start()

    def stop(self, *, final_sample: bool = False) -> None:
        """End the thread; then, if asked, take one last sample (the end figures)."""
        self._stop.set()
        self._thread.join(timeout=HTTP_TIMEOUT_S + 5)
        try:
            if final_sample:
                self.sample()
        finally:
            self._http.close()


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


def slope_mib_per_hour(samples: list[Sample], after_s: float) -> tuple[float, int] | None:
    """Least-squares slope of RSS over the samples after ``after_s``; None if < 3 samples."""
    points = [(s.elapsed_s, s.rss_kib) for s in samples if s.elapsed_s >= after_s and s.rss_kib]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    slope_kib_per_s = sum((t - mean_t) * (r - mean_r) for t, r in points) / spread
    return slope_kib_per_s * 3600 / MIB_KIB, n


def at_or_after(samples: list[Sample], elapsed_s: float) -> Sample | None:
    return next((s for s in samples if s.elapsed_s >= elapsed_s), None)


@dataclass
class Outcome:
    samples: list[Sample]
    counts: Counter[str]
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
    pass_reasons: Counter[str]
    problems: list[str]


def report(out: Outcome) -> None:
    samples = out.samples
    first, last = samples[0], samples[-1]
    one_minute = at_or_after(samples, 60.0)
    peak = max((s for s in samples if s.rss_kib), key=lambda s: s.rss_kib or 0, default=None)
    print()
    print(f"churn: {out.churn_s / 60:.1f} min, {sum(out.counts.values())} changes (", end="")
    print(", ".join(f"{op} {out.counts.get(op, 0)}" for op in OPERATIONS) + ")")
    print(f"tree: {first.local_files} files at the start, {out.files_end} at the end")
    print()
    print(f"daemon RSS at start            {mib(first.rss_kib)}")
    if one_minute is not None:
        print(f"daemon RSS at 1 min            {mib(one_minute.rss_kib)}")
    else:
        print("daemon RSS at 1 min            n/a (run shorter than 1 min)")
    print(f"daemon RSS at the end          {mib(last.rss_kib)} ({last.elapsed_s / 60:.1f} min)")
    if peak is not None:
        when = f"at {peak.elapsed_s / 60:.1f} min"
        print(f"daemon RSS peak                {mib(peak.rss_kib)} ({when})")
    slope = slope_mib_per_hour(samples, SLOPE_AFTER_S)
    if slope is not None:
        print(
            f"daemon RSS slope after 5 min   {slope[0]:+.2f} MiB/hour "
            f"(least squares, {slope[1]} samples)"
        )
    else:
        short = slope_mib_per_hour(samples, SHORT_SLOPE_AFTER_S)
        shown = (
            f"{short[0]:+.2f} MiB/hour over {short[1]} samples after 1 min (short run: "
            "indicative only)"
            if short is not None
            else "n/a"
        )
        print(f"daemon RSS slope               {shown}")
    print(f"daemon open fds start/end      {first.fds} / {last.fds}")
    print(f"daemon threads start/end       {first.threads} / {last.threads}")
    print(
        f"emulator RSS start/end         {mib(first.emulator_rss_kib)} / "
        f"{mib(last.emulator_rss_kib)}"
    )
    print(f"RSS samples                    {len(samples)} (every {SAMPLE_INTERVAL_S:.0f} s)")
    print()
    passes = out.pair.get("passes", "?")
    reasons = ", ".join(f"{reason} {n}" for reason, n in out.pass_reasons.most_common())
    print(f"daemon passes (/status)        {passes} ({reasons})")
    print(
        f"settled after the churn        {'yes' if out.settled else 'NO'} in {out.settle_s:.1f} s "
        f"(last pass: {out.pair.get('last_pass')})"
    )
    verdict = "MATCH" if out.differing == 0 and out.duplicates == 0 else "MISMATCH"
    print(
        f"mirror (names and sizes)       {verdict}: {out.differing} names differ, "
        f"{out.duplicates} duplicated; {out.remote_files} remote, {out.local_files} local"
    )
    print(f"daemon stop (SIGTERM)          exit code {out.exit_code} after {out.stop_s:.2f} s")
    print(f"daemon log lines by level      {out.log_levels}")
    for line in out.problems:
        print(f"  daemon log: {line}")


# -- the run --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work_dir: Path, csv_handle: TextIO | None) -> Outcome:
    root = work_dir / "tree"
    root.mkdir()
    writer = Writer(root, random.Random(args.seed), args.files)
    writer.build()
    backdate(root)
    with emulator_and_daemon(
        work_dir,
        root,
        container="bench-daemon-soak",
        requests_per_second=args.requests_per_second,
        pair_options={
            "quiet_period": 0.2,
            "max_delay": 2.0,
            "rescan_interval": 60.0,
            "remote_poll_interval": 10.0,
        },
    ) as (emulator, daemon):
        # The first pass uploads the whole tree, at the client-side rate limit.
        ready_s = daemon.wait_ready(max(120.0, 3 * args.files / args.requests_per_second + 60))
        container_id = daemon.pair()["container_id"]
        print(
            f"daemon pid {daemon.child.pid} ready {ready_s:.1f} s after start "
            f"({args.files} files uploaded); emulator pid {emulator.child.pid}; "
            f"churning for {args.minutes:g} min",
            flush=True,
        )
        sampler = Sampler(
            daemon.child.pid,
            emulator.child.pid,
            daemon.http_url,
            writer,
            SAMPLE_INTERVAL_S,
            csv_handle,
        )
        sampler.start()
        try:
            churn_started = time.monotonic()
            deadline = churn_started + args.minutes * 60
            next_report = churn_started + 60
            last_change_wall = time.time()
            while (now := time.monotonic()) < deadline:
                time.sleep(min(writer.rng.uniform(0.2, 1.0), max(0.0, deadline - now)))
                if time.monotonic() >= deadline:
                    break
                writer.step()
                last_change_wall = time.time()
                if time.monotonic() >= next_report:
                    next_report += 60
                    latest = sampler.samples[-1]
                    print(
                        f"... {(time.monotonic() - churn_started) / 60:.0f} min: "
                        f"{sum(writer.counts.values())} changes, {len(writer.files)} files, "
                        f"daemon RSS {mib(latest.rss_kib)}, fds {latest.fds}, "
                        f"threads {latest.threads}, passes {latest.passes}",
                        flush=True,
                    )
            churn_s = time.monotonic() - churn_started
            settled, settle_s, pair = wait_settled(daemon, last_change_wall, SETTLE_TIMEOUT_S)
        except BaseException:
            sampler.stop()
            raise
        sampler.stop(final_sample=True)  # the end figures, taken once settled
        differing, duplicates, remote_count, local_count = compare_mirror(
            emulator.base_url, container_id, root
        )
        pair = daemon.pair()
        exit_code, stop_s = daemon.child.stop()
        lines = daemon.child.log_lines()
    reasons: Counter[str] = Counter()
    for line in lines:
        if '"event": "sync pass"' in line:
            for reason in ("initial", "changes", "overdue", "rescan", "poll", "flush"):
                if f'"reason": "{reason}"' in line:
                    reasons[reason] += 1
    return Outcome(
        samples=sampler.samples,
        counts=writer.counts,
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
        pass_reasons=reasons,
        problems=problem_lines(lines),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="minutes of churn (default 60; 2 = quick)"
    )
    parser.add_argument(
        "--files", type=int, default=2000, help="working-set size of the tree (default 2000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the tree and the churn")
    parser.add_argument("--csv", type=Path, default=None, help="write the samples to this CSV")
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=1000.0,
        help="the daemon's client-side rate limit (default 1000)",
    )
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.files < 10:
        parser.error("--files must be at least 10")

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
    report(outcome)
    if args.csv is not None:
        print(f"samples written to {args.csv}")
    ok = (
        outcome.settled
        and outcome.differing == 0
        and outcome.duplicates == 0
        and outcome.exit_code == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
