"""Target 3: a no-change pass over N files, default settings, against a bare walk + listing.

Builds N files (10,000; ``--quick`` 500) and pushes them once with the emulator
answering at once (set-up, not measured; ``--requests-per-second`` lifted so the
set-up does not wait on a client-side cap). Then the emulator adds 25 ms to every
answer and, in the same run:

- ``cntr-sync sync DIR --json`` with every setting at its default, nothing changed:
  the whole process timed, its requests counted by the emulator;
- the reference: a bare ``os.scandir`` walk with a stat of every file, plus paging
  through the same container's listing with plain httpx (100 a page).

Targets: at most ceil(N/100) + 2 requests; wall time at most 2x the reference. It also
runs ``cntr-sync status DIR --json`` (a scan and a listing, nothing sent) and prints the
peak RSS of both commands and of the set-up push, a cold push of the N files (``sync
--json`` into an empty container: N uploads, every one listed in the JSON document),
each the command's own (target 5: at most 150 MB for any command at 100,000 files,
listing included: ``--files 100000``).

Issue 23 adds, in the same run, with no added latency (the emulator answering at once):

- the whole command against its reference (target: at most 2x): a warm no-change
  ``sync`` (listing included) against a bare walk plus paging the same listing with
  plain httpx, ``--rounds`` times each (3; ``--quick`` 1), interleaved; the medians
  with their spread and the load average. Wall time is the target's measure; CPU
  time (the command's own, from ``wait4``, against this process's thread doing the
  walk and the paging, so the emulator's threads are not counted) is the one a busy
  machine does not disturb;
- a lost index (``sync`` and ``status`` with a new, empty state dir; the files
  already in the container): peak RSS (target: at most 143 MiB at 100,000 files).

Run: ``.venv/bin/python bench/no_change.py [--quick] [--json] [--files N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from _emulated import (
    bare_walk,
    build_tree,
    check,
    cli_env,
    emulator_server,
    latency,
    run_cli,
    script_main,
    target_record,
)
from _support import API_KEY, run_main

FILE_BYTES = 1024
TIMEOUT_S = 1800.0


RSS_LIMIT_MIB = 150e6 / 2**20  # 150 MB
LOST_INDEX_RSS_MIB = 143.0  # issue 23


def page_through(base_url: str, container_id: str) -> tuple[int, int]:
    """(files, pages): the whole listing with plain httpx, 100 a page."""
    files = pages = 0
    after: str | None = None
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0) as client:
        while True:
            params: dict[str, str | int] = {"limit": 100}
            if after is not None:
                params["after"] = after
            response = client.get(f"/containers/{container_id}/files", params=params)
            response.raise_for_status()
            body = response.json()
            pages += 1
            files += len(body["data"])
            if not body.get("has_more") or not body["data"]:
                return files, pages
            after = body["data"][-1]["id"]


def spread(values: list[float]) -> dict[str, float]:
    """The median with the lowest and highest of ``values``."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def reference_pass(root: Path, base_url: str, container_id: str) -> tuple[float, float, int]:
    """(wall s, CPU s of this thread, files listed): a bare walk, then the listing paged
    with plain httpx; CPU by ``thread_time`` so the in-process emulator is not counted."""
    wall, cpu = time.perf_counter(), time.thread_time()
    bare_walk(root)
    listed, _pages = page_through(base_url, container_id)
    return time.perf_counter() - wall, time.thread_time() - cpu, listed


def whole_pass(
    root: Path,
    sync_args: list[str],
    env: dict[str, str],
    server_url: str,
    container_id: str,
    rounds: int,
) -> tuple[dict[str, Any], str | None]:
    """Issue 23, item 4: a warm no-change ``sync`` against walk + httpx paging, no
    added latency, ``rounds`` times each, interleaved. (details, failure)."""
    walls: list[float] = []
    cpus: list[float] = []
    ref_walls: list[float] = []
    ref_cpus: list[float] = []
    peaks: list[float] = []
    for _ in range(rounds):
        cli = run_cli(sync_args, env, TIMEOUT_S)
        if cli.failure() is not None:
            return {}, cli.failure()
        walls.append(cli.wall_s)
        cpus.append(cli.cpu_s)
        peaks.append(cli.max_rss_kib / 1024)
        wall, cpu, _listed = reference_pass(root, server_url, container_id)
        ref_walls.append(wall)
        ref_cpus.append(cpu)
    return {
        "rounds": rounds,
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "sync_wall_s": spread(walls),
        "sync_cpu_s": spread(cpus),
        "sync_peak_rss_mib": spread(peaks),
        "reference_wall_s": spread(ref_walls),
        "reference_cpu_s": spread(ref_cpus),
    }, None


def lost_index(sync_args: list[str], env: dict[str, str], work_dir: Path) -> dict[str, Any]:
    """Issue 23, item 2: ``status`` then ``sync`` with a new, empty state dir each."""
    figures: dict[str, Any] = {}
    for command in ("status", "sync"):
        state = work_dir / f"lost-index-{command}"
        args = [command if part == "sync" else part for part in sync_args]
        args[args.index("--state-dir") + 1] = str(state)
        if command == "status":
            args.remove("--json")
        run = run_cli([*args, "--json"] if command == "status" else args, env, TIMEOUT_S)
        figures[command] = {
            "exit_code": run.exit_code,
            "wall_s": round(run.wall_s, 3),
            "cpu_s": round(run.cpu_s, 3),
            "peak_rss_mib": round(run.max_rss_kib / 1024, 1),
            "adopted": run.summary.get("adopted"),
        }
    return figures


def measure(
    work_dir: Path, *, quick: bool, files: int | None = None, rounds: int | None = None
) -> dict[str, Any]:
    count = files or (500 if quick else 10000)
    command = ".venv/bin/python bench/no_change.py" + (" --quick" if quick else "")
    root = work_dir / "tree"
    build_tree(root, count, FILE_BYTES)
    sync_args = [
        "sync",
        str(root),
        "--container",
        "bench-no-change",
        "--state-dir",
        str(work_dir / "state"),
        "--json",
    ]
    details: dict[str, Any] = {"files": count, "latency_ms": 25.0}
    with emulator_server(work_dir / "emulator") as (server, emulator):
        env = cli_env(server.base_url)
        setup = run_cli([*sync_args, "--requests-per-second", "100000"], env, TIMEOUT_S)
        container_id = setup.summary.get("container_id")
        details["setup"] = {
            "exit_code": setup.exit_code,
            "wall_s": round(setup.wall_s, 3),
            "peak_rss_mib": round(setup.max_rss_kib / 1024, 1),
            "uploaded": setup.summary.get("uploaded"),
        }
        if setup.exit_code != 0 or not isinstance(container_id, str):
            reason = "set-up push failed: " + (setup.failure() or "no container id")
            return target_record("3", "no-change pass", command, [], details, reason=reason)
        emulator.set_faults(latency())
        emulator.reset_answers()
        cli = run_cli(sync_args, env, TIMEOUT_S)
        requests = emulator.total()
        details["cntr_sync"] = {
            "exit_code": cli.exit_code,
            "wall_s": round(cli.wall_s, 3),
            "peak_rss_mib": round(cli.max_rss_kib / 1024, 1),
            "cli_seconds": cli.summary.get("seconds"),
            "requests": requests,
            "requests_by_operation": emulator.by_operation(),
            "actions": len(cli.summary.get("actions") or []),
        }
        status_args = [
            "status" if part == "sync" else part for part in sync_args if part != "--json"
        ]
        status = run_cli([*status_args, "--json"], env, TIMEOUT_S)
        details["status"] = {
            "exit_code": status.exit_code,
            "wall_s": round(status.wall_s, 3),
            "peak_rss_mib": round(status.max_rss_kib / 1024, 1),
        }
        # Issue 23, with no added latency: the warm pass against its reference, and a
        # lost index (status first: it writes no index).
        emulator.set_faults(latency(0.0))
        whole, whole_failure = whole_pass(
            root, sync_args, env, server.base_url, container_id, rounds or (1 if quick else 3)
        )
        details["whole_pass_0ms"] = whole
        details["lost_index"] = lost_index(sync_args, env, work_dir)
        emulator.set_faults(latency())
        started = time.perf_counter()
        walked = bare_walk(root)
        walk_s = time.perf_counter() - started
        started = time.perf_counter()
        listed, pages = page_through(server.base_url, container_id)
        list_s = time.perf_counter() - started
        details["reference"] = {
            "walk_s": round(walk_s, 3),
            "walked_files": walked,
            "list_s": round(list_s, 3),
            "listed_files": listed,
            "pages": pages,
        }
    failure = cli.failure() or status.failure() or whole_failure
    if failure is None and details["lost_index"]["sync"]["exit_code"] != 0:
        failure = f"lost-index sync exited {details['lost_index']['sync']['exit_code']}"
    if failure is not None:
        return target_record("3", "no-change pass", command, [], details, reason=failure)
    reference_s = walk_s + list_s
    allowed = math.ceil(count / 100) + 2
    checks = [
        check(
            f"{count} files, requests",
            measured=requests,
            reference=allowed,
            reference_name="ceil(N/100) + 2",
            unit="requests",
            ratio=requests / allowed,
            target="<= ceil(N/100) + 2",
            passed=requests <= allowed,
        ),
        check(
            f"{count} files, cntr-sync / (walk + httpx listing)",
            measured=cli.wall_s,
            reference=reference_s,
            reference_name="scandir+stat + httpx pages",
            ratio=cli.wall_s / reference_s,
            target="<= 2x",
            passed=cli.wall_s <= 2 * reference_s,
        ),
        check(
            f"{count} files, peak RSS of sync / status, listing included",
            measured=max(cli.max_rss_kib, status.max_rss_kib) / 1024,
            reference=RSS_LIMIT_MIB,
            reference_name="150 MB (target 5, at 100,000 files)",
            unit="MiB",
            ratio=max(cli.max_rss_kib, status.max_rss_kib) / 1024 / RSS_LIMIT_MIB,
            target="<= 150 MB",
            passed=max(cli.max_rss_kib, status.max_rss_kib) / 1024 <= RSS_LIMIT_MIB,
        ),
        check(
            f"{count} files, peak RSS of the cold push (the set-up: {count} uploads, --json)",
            measured=setup.max_rss_kib / 1024,
            reference=RSS_LIMIT_MIB,
            reference_name="150 MB (target 5, at 100,000 files)",
            unit="MiB",
            ratio=setup.max_rss_kib / 1024 / RSS_LIMIT_MIB,
            target="<= 150 MB",
            passed=setup.max_rss_kib / 1024 <= RSS_LIMIT_MIB,
        ),
    ]
    checks.extend(issue_23_checks(count, whole, details["lost_index"]))
    return target_record("3", "no-change pass", command, checks, details)


def issue_23_checks(
    count: int, whole: dict[str, Any], lost: dict[str, Any]
) -> list[dict[str, Any]]:
    """The whole warm pass against walk + httpx paging (wall, the target; CPU beside
    it), and the peak RSS of a lost index's sync and status."""
    wall, ref_wall = whole["sync_wall_s"]["median"], whole["reference_wall_s"]["median"]
    cpu, ref_cpu = whole["sync_cpu_s"]["median"], whole["reference_cpu_s"]["median"]
    lost_peak = max(lost["sync"]["peak_rss_mib"], lost["status"]["peak_rss_mib"])
    return [
        check(
            f"{count} files, 0 ms: warm sync / (walk + httpx paging), wall, median",
            measured=wall,
            reference=ref_wall,
            reference_name="scandir+stat + httpx pages, no latency",
            ratio=wall / ref_wall,
            target="<= 2x",
            passed=wall <= 2 * ref_wall,
        ),
        check(
            f"{count} files, 0 ms: the same in CPU time (command / walk + paging thread)",
            measured=cpu,
            reference=ref_cpu,
            reference_name="scandir+stat + httpx pages, no latency",
            ratio=cpu / ref_cpu,
            target="reported",
            passed=True,
        ),
        check(
            f"{count} files, lost index: peak RSS of sync / status",
            measured=lost_peak,
            reference=LOST_INDEX_RSS_MIB,
            reference_name="143 MiB (issue 23, at 100,000 files)",
            unit="MiB",
            ratio=lost_peak / LOST_INDEX_RSS_MIB,
            target="<= 143 MiB",
            passed=lost_peak <= LOST_INDEX_RSS_MIB,
        ),
    ]


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="files (10000; --quick 500)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="warm passes at 0 ms, each beside its reference"
    )


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__.splitlines()[0], options))
