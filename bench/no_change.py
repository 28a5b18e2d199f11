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

Run: ``.venv/bin/python bench/no_change.py [--quick] [--json] [--files N]``.
"""

from __future__ import annotations

import argparse
import math
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


def measure(work_dir: Path, *, quick: bool, files: int | None = None) -> dict[str, Any]:
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
    failure = cli.failure() or status.failure()
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
    return target_record("3", "no-change pass", command, checks, details)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="files (10000; --quick 500)")


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__.splitlines()[0], options))
