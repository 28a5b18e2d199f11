"""Target 1: a cold push with default settings against the naive SDK script and the ideal.

Builds N files of 4 KiB in nested directories (2,000; ``--quick`` 100), serves the
emulator on 127.0.0.1 with 25 ms added to every answer, and in the same run pushes
the tree twice into two new containers:

- ``cntr-sync sync DIR --json`` with every setting at its default (a clean
  environment: only ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``);
- ``bench/naive_sdk.py``: a sequential loop over the official ``openai`` SDK;

and, as a reference (in the details, not a target), ``bench/parallel_httpx.py``: the
same uploads from a bare loop of as many threads as the default concurrency on one
``httpx.Client``, with nothing of cntr-sync's (no scan, hash, index or retries). The
ideal counts no time per request on either side; this floor counts both.

Both are timed as whole processes (Python start-up included). The ideal is
N x latency / concurrency (the product's default concurrency). Targets: naive /
cntr-sync >= 6, cntr-sync / ideal <= 1.3.

The ideal counts no server time; the emulator runs on the same 2 cores and spools
each upload to a new file. On this machine's /tmp (ext4 on a virtual disk) creating
a file costs about 1 ms of kernel CPU, on tmpfs 30 us, so the emulator spools to
/dev/shm when there is one (``--spool-on-disk`` keeps the work directory); the
details say which.

Run: ``.venv/bin/python bench/cold_push.py [--quick] [--json] [--files N] [--no-naive]``
(``--no-naive``: only cntr-sync against the ideal, without the minute-long naive run).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _emulated import (
    LATENCY_MS,
    CliRun,
    build_tree,
    check,
    cli_env,
    emulator_server,
    latency,
    run_cli,
    run_command,
    script_main,
    target_record,
)
from _support import run_main
from cntr_sync.config import Settings

FILE_BYTES = 4096
TIMEOUT_S = 900.0


def default_concurrency() -> int:
    return int(Settings.model_fields["concurrency"].default)


@contextlib.contextmanager
def spool_dir(work_dir: Path, on_disk: bool) -> Iterator[Path]:
    """Where the emulator spools uploads: a new directory on /dev/shm (tmpfs) unless
    ``on_disk`` or there is none; removed on the way out."""
    shm = Path("/dev/shm")
    if on_disk or not shm.is_dir():
        yield work_dir / "emulator"
        return
    try:
        made = Path(tempfile.mkdtemp(prefix="cntr-bench-cold-", dir=shm))
    except OSError:
        yield work_dir / "emulator"
        return
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def measure(
    work_dir: Path,
    *,
    quick: bool,
    files: int | None = None,
    no_naive: bool = False,
    spool_on_disk: bool = False,
) -> dict[str, Any]:
    count = files or (100 if quick else 2000)
    command = ".venv/bin/python bench/cold_push.py" + (" --quick" if quick else "")
    root = work_dir / "tree"
    build_tree(root, count, FILE_BYTES)
    concurrency = default_concurrency()
    ideal_s = count * (LATENCY_MS / 1000) / concurrency
    details: dict[str, Any] = {
        "files": count,
        "file_bytes": FILE_BYTES,
        "latency_ms": LATENCY_MS,
        "default_concurrency": concurrency,
        "default_requests_per_second": Settings.model_fields["requests_per_second"].default,
        "ideal_s": round(ideal_s, 3),
    }
    with (
        spool_dir(work_dir, spool_on_disk) as spool,
        emulator_server(spool, latency()) as (server, emulator),
    ):
        details["emulator_spool"] = str(spool)
        env = cli_env(server.base_url)
        cli = run_cli(
            [
                "sync",
                str(root),
                "--container",
                "bench-cold-push",
                "--state-dir",
                str(work_dir / "state"),
                "--json",
            ],
            env,
            TIMEOUT_S,
        )
        details["cntr_sync"] = {
            "exit_code": cli.exit_code,
            "wall_s": round(cli.wall_s, 3),
            "cli_seconds": cli.summary.get("seconds"),
            "uploaded": cli.summary.get("uploaded"),
            "requests": emulator.total(),
            "requests_by_operation": emulator.by_operation(),
            "refused_429": emulator.refused(),
        }
        emulator.reset_answers()
        details["parallel_httpx"] = parallel_floor(root, server.base_url, env, concurrency, cli)
        emulator.reset_answers()
        if no_naive:
            return ideal_only(count, cli, ideal_s, concurrency, command, details)
        naive = run_command(
            [
                sys.executable,
                str(Path(__file__).with_name("naive_sdk.py")),
                str(root),
                "--base-url",
                server.base_url,
                "--container",
                "bench-naive",
            ],
            env,
            TIMEOUT_S,
        )
        details["naive_sdk"] = {
            "exit_code": naive.exit_code,
            "wall_s": round(naive.wall_s, 3),
            "loop_seconds": naive.summary.get("seconds"),
            "uploaded": naive.summary.get("files"),
            "requests": emulator.total(),
        }
    problems = []
    if cli.failure() or cli.summary.get("uploaded") != count:
        problems.append(cli.failure() or f"cntr-sync uploaded {cli.summary.get('uploaded')}")
    if naive.exit_code != 0 or naive.summary.get("files") != count:
        tail = naive.stderr.strip().splitlines()[-1:] or ["?"]
        problems.append(f"naive_sdk.py exited {naive.exit_code}: {tail[0][:300]}")
    if problems:
        return target_record("1", "cold push", command, [], details, reason="; ".join(problems))
    speedup = naive.wall_s / cli.wall_s
    checks = [
        check(
            f"{count} x 4 KiB, naive SDK / cntr-sync",
            measured=cli.wall_s,
            reference=naive.wall_s,
            reference_name="naive SDK",
            ratio=speedup,
            target=">= 6x faster",
            passed=speedup >= 6,
        ),
        ideal_check(count, cli, ideal_s, concurrency),
    ]
    return target_record("1", "cold push", command, checks, details)


def parallel_floor(
    root: Path, base_url: str, env: dict[str, str], threads: int, cli: CliRun
) -> dict[str, Any]:
    """``parallel_httpx.py`` (a bare threaded httpx loop) on the same tree and server,
    timed as a whole process like cntr-sync; a reference, not a target."""
    floor = run_command(
        [
            sys.executable,
            str(Path(__file__).with_name("parallel_httpx.py")),
            str(root),
            "--base-url",
            base_url,
            "--container",
            "bench-parallel-httpx",
            "--threads",
            str(threads),
        ],
        env,
        TIMEOUT_S,
    )
    record: dict[str, Any] = {
        "exit_code": floor.exit_code,
        "wall_s": round(floor.wall_s, 3),
        "loop_seconds": floor.summary.get("seconds"),
        "uploaded": floor.summary.get("files"),
    }
    if floor.exit_code == 0 and floor.wall_s > 0:
        record["cntr_sync_over_this"] = round(cli.wall_s / floor.wall_s, 3)
    return record


def ideal_check(count: int, cli: CliRun, ideal_s: float, concurrency: int) -> dict[str, Any]:
    over_ideal = cli.wall_s / ideal_s
    return check(
        f"{count} x 4 KiB, cntr-sync / ideal",
        measured=cli.wall_s,
        reference=ideal_s,
        reference_name=f"N x {LATENCY_MS:g} ms / {concurrency}",
        ratio=over_ideal,
        target="<= 1.3x ideal",
        passed=over_ideal <= 1.3,
    )


def ideal_only(
    count: int,
    cli: CliRun,
    ideal_s: float,
    concurrency: int,
    command: str,
    details: dict[str, Any],
) -> dict[str, Any]:
    if cli.failure() or cli.summary.get("uploaded") != count:
        reason = cli.failure() or f"cntr-sync uploaded {cli.summary.get('uploaded')}"
        return target_record("1", "cold push", command, [], details, reason=reason)
    figure = ideal_check(count, cli, ideal_s, concurrency)
    return target_record("1", "cold push", command + " --no-naive", [figure], details)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="files (2000; --quick 100)")
    parser.add_argument(
        "--no-naive", action="store_true", help="skip the naive SDK run (the ideal only)"
    )
    parser.add_argument(
        "--spool-on-disk",
        action="store_true",
        help="the emulator spools into the work directory, not /dev/shm",
    )


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__.splitlines()[0], options))
