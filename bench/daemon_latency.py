"""Daemon latency: how long a local change takes to show up in the container.

Starts the emulator (``cntr-sync emulator --port 0 --control``) and the daemon
(``cntr-sync run --config FILE``) as two separate processes, both on 127.0.0.1,
with one pair (quiet_period 1.0 unless ``--quiet-period``, requests_per_second
1000, ``http_listen = "127.0.0.1:0"``), and waits for the daemon's ``/readyz``
to answer 200. Then it makes ``--changes`` changes one at a time, alternating:

  create   a new file ``new/fNNN.txt``
  modify   rewrite one of the pre-existing files ``base/bNN.txt``

Each change is a small text file holding a unique marker. The clock starts when
the file is closed. A poller lists the container through ``ContainersClient``
every 20 ms; any file of that name with an id it has not checked yet is
downloaded, and the change has landed when the content holds the marker. The
figure is the time from the close to the end of the listing that first showed
the new file, so its resolution is the 20 ms polling interval plus one listing.
Each change must land (bounded, 30 s) before the next one is made.

It prints min, p50, p95 and max latency, per kind and overall, and "p50 minus
quiet period": what the daemon adds beyond its debounce (event delivery, the
scan, the listing and the upload).

The process, config and /status helpers live in ``bench/_support.py``, shared
with the other benchmarks.

Run: ``.venv/bin/python bench/daemon_latency.py [--changes 50] [--quiet-period 1.0]``.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from _support import (
    API_KEY,
    HTTP_TIMEOUT_S,
    backdate,
    emulator_and_daemon,
    log_events,
    problem_lines,
    run_main,
    user_files,
)
from cntr_sync.api import ContainersClient

POLL_INTERVAL_S = 0.02
LAND_TIMEOUT_S = 30.0
BASE_FILES = 10


# -- figures --------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (fraction in 0..1)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# -- the changes ------------------------------------------------------------------------------


@dataclass
class Change:
    number: int
    kind: str  # "create" | "modify"
    relpath: str
    marker: str
    latency_s: float | None = None
    downloads: int = 0
    listings: int = 0


@dataclass
class Poller:
    """Finds a change in the container: a file of that name, not checked before, whose
    content holds the marker."""

    client: ContainersClient
    container_id: str
    checked: dict[str, set[str]] = field(default_factory=dict)  # relpath -> ids checked

    def names(self) -> dict[str, list[str]]:
        by_name: dict[str, list[str]] = {}
        for name, item in user_files(self.client, self.container_id):
            by_name.setdefault(name, []).append(item.id)
        return by_name

    def wait_for(self, change: Change, written_at: float, timeout_s: float) -> None:
        checked = self.checked.setdefault(change.relpath, set())
        deadline = written_at + timeout_s
        while time.monotonic() < deadline:
            listing = self.names()
            seen_at = time.monotonic()
            change.listings += 1
            for file_id in listing.get(change.relpath, []):
                if file_id in checked:
                    continue
                buffer = io.BytesIO()
                self.client.download_file(self.container_id, file_id, buffer)
                change.downloads += 1
                checked.add(file_id)
                if change.marker.encode() in buffer.getvalue():
                    change.latency_s = seen_at - written_at
                    return
            time.sleep(max(0.0, POLL_INTERVAL_S - (time.monotonic() - seen_at)))


def make_change(root: Path, number: int, created: int) -> Change:
    """Change ``number``: even ones create ``new/fNNN.txt``, odd ones rewrite a base file."""
    marker = f"marker-{number:04d}-{uuid.uuid4().hex}"
    if number % 2 == 0:
        relpath = f"new/f{created:03d}.txt"
        kind = "create"
    else:
        relpath = f"base/b{(number // 2) % BASE_FILES:02d}.txt"
        kind = "modify"
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    # Sizes vary with the number, so a modify usually changes the size too (not required:
    # the marker decides).
    with path.open("w") as handle:
        handle.write(f"{marker}\n" + "x" * (number * 7 % 200) + "\n")
    return Change(number, kind, relpath, marker)


def run(args: argparse.Namespace, work_dir: Path) -> list[Change]:
    root = work_dir / "tree"
    (root / "base").mkdir(parents=True)
    for number in range(BASE_FILES):
        (root / "base" / f"b{number:02d}.txt").write_text(f"base file {number}\n")
    backdate(root)
    changes: list[Change] = []
    with emulator_and_daemon(
        work_dir,
        root,
        container="bench-daemon-latency",
        requests_per_second=args.requests_per_second,
        pair_options={
            "quiet_period": args.quiet_period,
            "max_delay": max(10.0, args.quiet_period),
        },
    ) as (emulator, daemon):
        ready_s = daemon.wait_ready()
        container_id = daemon.pair()["container_id"]
        print(
            f"emulator {emulator.base_url} (pid {emulator.child.pid}), daemon "
            f"{daemon.http_url} (pid {daemon.child.pid}), ready {ready_s:.2f} s after start; "
            f"container {container_id}",
            flush=True,
        )
        with ContainersClient(
            API_KEY, base_url=emulator.base_url, timeout=HTTP_TIMEOUT_S
        ) as client:
            poller = Poller(client, container_id)
            # Everything there now is "already checked": only new ids can be a change.
            for name, ids in poller.names().items():
                poller.checked.setdefault(name, set()).update(ids)
            created = 0
            for number in range(args.changes):
                change = make_change(root, number, created)
                written_at = time.monotonic()  # after the close
                created += change.kind == "create"
                poller.wait_for(change, written_at, LAND_TIMEOUT_S)
                changes.append(change)
                shown = f"{change.latency_s:.3f} s" if change.latency_s is not None else "LOST"
                if args.verbose:
                    print(f"  {number:3d} {change.kind:6s} {change.relpath:16s} {shown}")
                elif change.latency_s is None:
                    print(f"  change {number} ({change.kind} {change.relpath}) did not land")
        pair = daemon.pair()
        print(
            f"daemon: {pair['passes']} passes, last {pair['last_pass'].get('reason')} "
            f"({pair['last_result']}), watch {pair['watch']}; log levels "
            f"{log_events(daemon.child.log_lines())}"
        )
        for line in problem_lines(daemon.child.log_lines()):
            print(f"  daemon log: {line}")
    return changes


def report(changes: list[Change], quiet_period: float) -> None:
    print()
    print(f"{'latency (s)':12s} {'n':>4s} {'min':>7s} {'p50':>7s} {'p95':>7s} {'max':>7s}")
    groups = [
        ("create", [c for c in changes if c.kind == "create"]),
        ("modify", [c for c in changes if c.kind == "modify"]),
        ("all", changes),
    ]
    for label, group in groups:
        values = [c.latency_s for c in group if c.latency_s is not None]
        if not values:
            print(f"{label:12s} {0:4d}")
            continue
        print(
            f"{label:12s} {len(values):4d} {min(values):7.3f} {percentile(values, 0.5):7.3f} "
            f"{percentile(values, 0.95):7.3f} {max(values):7.3f}"
        )
    landed = [c.latency_s for c in changes if c.latency_s is not None]
    if landed:
        p50 = percentile(landed, 0.5)
        print(
            f"\np50 minus quiet period ({quiet_period:g} s): {p50 - quiet_period:.3f} s "
            f"(mean {statistics.fmean(landed) - quiet_period:.3f} s)"
        )
    listings = sum(c.listings for c in changes)
    print(
        f"landed {len(landed)}/{len(changes)}; the poller made {listings} listings "
        f"({listings / max(1, len(changes)):.0f} per change) and "
        f"{sum(c.downloads for c in changes)} downloads"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50, help="changes to make (default 50)")
    parser.add_argument(
        "--quiet-period",
        type=float,
        default=1.0,
        help="the pair's quiet_period in seconds (default 1.0, the daemon's default)",
    )
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=1000.0,
        help="the daemon's client-side rate limit (default 1000)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every change")
    args = parser.parse_args()
    if args.changes < 1:
        parser.error("--changes must be at least 1")
    if not 0 < args.quiet_period <= 20:
        parser.error("--quiet-period must be in (0, 20] (each change must land within 30 s)")

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.changes} changes, "
        f"quiet_period {args.quiet_period:g} s, requests_per_second {args.requests_per_second:g}, "
        f"polling every {POLL_INTERVAL_S * 1000:.0f} ms"
    )
    with tempfile.TemporaryDirectory(prefix="cntr-bench-latency-") as work:
        changes = run(args, Path(work))
    report(changes, args.quiet_period)
    return 0 if all(c.latency_s is not None for c in changes) else 1


if __name__ == "__main__":
    run_main(main)
