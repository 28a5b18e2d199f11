"""Target 4: what one file change costs the daemon, in trees of 1,000 to 100,000 files.

For each size (1,000, 10,000 and 100,000; ``--quick``: 300; or ``--sizes``) it builds a
tree of small files, serves the emulator on 127.0.0.1 (answering at once during the
set-up) and starts ``cntr-sync run --config FILE`` as a child process: one pair, the
product's defaults except ``http_listen = "127.0.0.1:0"`` and, so that nothing but the
change is measured, ``remote_poll_interval`` and ``rescan_interval`` of an hour (a
periodic listing is a cost of its own, bounded by those intervals). A client-side
``requests_per_second`` default, if the product has one, is lifted so that the first
upload of 100,000 files does not take hours; the change itself is one or two requests.

Once the daemon is ready and idle, the emulator adds 25 ms to every answer and the
script makes 20 changes (``--quick``: 4), one at a time, alternating a new file and a
rewrite of an existing one (a new size). For each it notes:

- change-to-listed latency: from the close of the file to the moment the emulator
  stored the upload (from then on any listing shows it; the emulator notes the moment
  itself, so the script sends no request of its own);
- requests: everything the emulator answered from the change until the daemon is idle
  again with a pass that started after it.

Targets, at every size: at most 2 requests for a new file and 3 for a modified one;
p95 latency within quiet_period + 50 ms.

``--direction both`` measures a two-way pair instead (the model writing nothing meanwhile):
an edit then costs a retrieve more, since the old version is seen unchanged before it is
deleted.

Run: ``.venv/bin/python bench/daemon_change.py [--quick] [--json] [--sizes 1000,10000]
[--direction both]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _emulated import (
    LATENCY_MS,
    StoredUpload,
    build_tree,
    check,
    emulator_server,
    latency,
    script_main,
    target_record,
)
from _support import API_KEY, Daemon, daemon_process, run_main
from cntr_sync.config import Settings
from cntr_sync.models import PAIR_DEFAULTS
from cntr_sync.names import remote_names

FILE_BYTES = 512
LAND_TIMEOUT_S = 60.0  # plus 1 ms a file: a daemon that lists the whole tree per change
SETTLE_TIMEOUT_S = 60.0
CHANGES_BUDGET_S = 600.0  # per size: past it, the figures come from the changes made so far
AN_HOUR = 3600.0


def write_config(
    path: Path, base_url: str, work_dir: Path, root: Path, direction: str = "push"
) -> None:
    lines = [
        f"base_url = {json.dumps(base_url)}",
        f"api_key = {json.dumps(API_KEY)}",
        f"state_dir = {json.dumps(str(work_dir / 'state'))}",
        'http_listen = "127.0.0.1:0"',
    ]
    if Settings.model_fields["requests_per_second"].default is not None:
        lines.append("requests_per_second = 100000.0")
    lines += [
        "",
        "[[pairs]]",
        'name = "bench"',
        f"local = {json.dumps(str(root))}",
        'container = "bench-daemon-change"',
        f"direction = {json.dumps(direction)}",
        f"remote_poll_interval = {AN_HOUR!r}",
        f"rescan_interval = {AN_HOUR!r}",
    ]
    path.write_text("\n".join(lines) + "\n")


def wait_idle(daemon: Daemon, since_wall: float, timeout_s: float) -> dict[str, Any]:
    """Until the pair is idle, with nothing pending, after a pass that ended after
    ``since_wall`` (bounded); returns the pair's status."""
    deadline = time.monotonic() + timeout_s
    pair: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pair = daemon.pair()
        if (
            pair.get("state") == "idle"
            and pair.get("pending_changes") == 0
            and float(pair.get("last_sync_at") or 0.0) > since_wall
        ):
            return pair
        time.sleep(0.02)
    raise RuntimeError(f"the daemon was not idle within {timeout_s:.0f} s: {pair}")


def wait_stored(
    emulator_uploads: Callable[[], list[StoredUpload]], name: str, started: float, timeout_s: float
) -> StoredUpload:
    """The first upload of ``name`` the emulator stored after ``started`` (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for upload in emulator_uploads():
            if upload.at >= started and remote_names(upload.path)[0] == name:
                return upload
        time.sleep(0.002)
    raise RuntimeError(f"{name} was not uploaded within {timeout_s:.0f} s")


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def measure_size(
    work_dir: Path, size: int, changes: int, direction: str = "push"
) -> dict[str, Any]:
    root = work_dir / "tree"
    build_started = time.monotonic()
    build_tree(root, size, FILE_BYTES)
    existing = sorted(p for p in root.rglob("*.bin"))
    figures: dict[str, Any] = {
        "files": size,
        "tree_build_s": round(time.monotonic() - build_started, 1),
    }
    with emulator_server(work_dir / "emulator") as (server, emulator):
        config = work_dir / "daemon.toml"
        write_config(config, server.base_url, work_dir, root, direction)
        with daemon_process(config, work_dir) as daemon:
            ready_s = daemon.wait_ready(timeout_s=120.0 + size * 0.05)
            wait_idle(daemon, 0.0, 120.0 + size * 0.01)
            figures["ready_s"] = round(ready_s, 1)
            figures["setup_requests"] = emulator.total()
            emulator.set_faults(latency())
            rows: list[dict[str, Any]] = []
            wait_s = LAND_TIMEOUT_S + size / 1000
            changes_started = time.monotonic()
            for number in range(changes):
                if rows and time.monotonic() - changes_started > CHANGES_BUDGET_S:
                    figures["stopped_early"] = (
                        f"{len(rows)} of {changes} changes made: they took over"
                        f" {CHANGES_BUDGET_S:.0f} s"
                    )
                    break
                kind = "new" if number % 2 == 0 else "modified"
                if kind == "new":
                    path = root / "new" / f"change{number:03d}.txt"
                    path.parent.mkdir(exist_ok=True)
                else:
                    path = existing[(number * 7919) % len(existing)]
                name = path.relative_to(root).as_posix()
                emulator.reset_answers()
                change_wall = time.time()
                started = time.monotonic()
                path.write_bytes(f"change {number} at {change_wall}\n".encode() * (number + 2))
                stored = wait_stored(emulator.uploads, name, started, wait_s)
                pair = wait_idle(daemon, change_wall, SETTLE_TIMEOUT_S + wait_s)
                rows.append(
                    {
                        "kind": kind,
                        "path": name,
                        "latency_s": round(stored.at - started, 4),
                        "requests": emulator.total(),
                        "by_operation": emulator.by_operation(),
                        "pass": pair.get("last_pass"),
                    }
                )
            figures["changes"] = rows
            figures["daemon_exit"] = daemon.child.stop()[0]
    return figures


def measure(
    work_dir: Path,
    *,
    quick: bool,
    sizes: str | None = None,
    changes: int | None = None,
    direction: str = "push",
) -> dict[str, Any]:
    counts = (
        [int(s) for s in sizes.split(",")] if sizes else ([300] if quick else [1000, 10000, 100000])
    )
    per_size = changes or (4 if quick else 20)
    command = ".venv/bin/python bench/daemon_change.py" + (" --quick" if quick else "")
    if direction != "push":
        command += f" --direction {direction}"
    quiet = float(PAIR_DEFAULTS["quiet_period"])
    bound = quiet + 0.05
    details: dict[str, Any] = {
        "quiet_period": quiet,
        "latency_ms": LATENCY_MS,
        "direction": direction,
        "sizes": {},
    }
    checks: list[dict[str, Any]] = []
    problems: list[str] = []
    for size in counts:
        size_dir = work_dir / f"n{size}"
        size_dir.mkdir()
        try:
            figures = measure_size(size_dir, size, per_size, direction)
        except (RuntimeError, OSError) as exc:
            problems.append(f"{size} files: {exc}")
            details["sizes"][str(size)] = {"error": str(exc)[:500]}
            continue
        details["sizes"][str(size)] = figures
        rows = figures["changes"]
        for kind, allowed in (("new", 2), ("modified", 3)):
            requests = [row["requests"] for row in rows if row["kind"] == kind]
            if requests:
                worst = max(requests)
                checks.append(
                    check(
                        f"{size} files, requests per {kind} file (max of {len(requests)})",
                        measured=worst,
                        reference=allowed,
                        unit="requests",
                        ratio=worst / allowed,
                        target=f"<= {allowed}",
                        passed=worst <= allowed,
                    )
                )
        latencies = [row["latency_s"] for row in rows]
        worst_latency = p95(latencies)
        figures["latency_p50_s"] = round(statistics.median(latencies), 4)
        figures["latency_p95_s"] = round(worst_latency, 4)
        checks.append(
            check(
                f"{size} files, change-to-listed p95 of {len(latencies)}",
                measured=worst_latency,
                reference=bound,
                reference_name="quiet period + 50 ms",
                ratio=worst_latency / bound,
                target=f"<= {bound:g} s",
                passed=worst_latency <= bound,
            )
        )
    reason = "; ".join(problems) or None
    record = target_record("4", "daemon one-file change", command, checks, details, reason=reason)
    if problems and checks:
        record["status"] = "miss"
    return record


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=None, help="tree sizes, comma-separated")
    parser.add_argument("--changes", type=int, default=None, help="changes per size (20)")
    parser.add_argument(
        "--direction", choices=("push", "pull", "both"), default="push", help="the pair's"
    )


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__.splitlines()[0], options))
