"""Target 2: a cold push, default settings, against a server that refuses beyond 10/s.

Builds N files of 4 KiB (500; ``--quick`` 50) and pushes them with ``cntr-sync sync
DIR --json`` (every setting at its default) to the emulator on 127.0.0.1 with 25 ms
added to every answer and a token bucket of 10 requests a second (burst 10): a
request over it is answered 429 with ``retry-after-ms``. The reference is what the
server allows: N / 10 s. Targets: the whole command within 1.3x of N / 10 s, and
fewer than 5 % of all requests refused.

Run: ``.venv/bin/python bench/rate_limited.py [--quick] [--json] [--files N]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _emulated import (
    build_tree,
    check,
    cli_env,
    emulator_server,
    latency,
    run_cli,
    script_main,
    target_record,
)
from _support import run_main

FILE_BYTES = 4096
RATE_PER_S = 10.0
TIMEOUT_S = 900.0


def measure(work_dir: Path, *, quick: bool, files: int | None = None) -> dict[str, Any]:
    count = files or (50 if quick else 500)
    command = ".venv/bin/python bench/rate_limited.py" + (" --quick" if quick else "")
    root = work_dir / "tree"
    build_tree(root, count, FILE_BYTES)
    allowed_s = count / RATE_PER_S
    details: dict[str, Any] = {
        "files": count,
        "rate_limit_per_s": RATE_PER_S,
        "latency_ms": 25.0,
        "allowed_s": allowed_s,
    }
    faults = latency(rate_limit_per_s=RATE_PER_S)
    with emulator_server(work_dir / "emulator", faults) as (server, emulator):
        cli = run_cli(
            [
                "sync",
                str(root),
                "--container",
                "bench-rate-limited",
                "--state-dir",
                str(work_dir / "state"),
                "--json",
            ],
            cli_env(server.base_url),
            TIMEOUT_S,
        )
        total = emulator.total()
        refused = emulator.refused()
        details["cntr_sync"] = {
            "exit_code": cli.exit_code,
            "wall_s": round(cli.wall_s, 3),
            "cli_seconds": cli.summary.get("seconds"),
            "uploaded": cli.summary.get("uploaded"),
            "requests": total,
            "refused_429": refused,
            "answers": {f"{op} {status}": n for (op, status), n in emulator.answers().items()},
        }
    if not cli.summary:
        reason = cli.failure() or "cntr-sync printed no JSON summary"
        return target_record("2", "rate-limited push", command, [], details, reason=reason)
    errors = cli.summary.get("errors") or []
    details["cntr_sync"]["first_errors"] = [str(error)[:300] for error in errors[:3]]
    uploaded = int(cli.summary.get("uploaded") or 0)
    refused_share = refused / total if total else 0.0
    checks = [
        check(
            f"files uploaded / N (exit code {cli.exit_code})",
            measured=uploaded,
            reference=count,
            unit="files",
            ratio=uploaded / count,
            target="all",
            passed=uploaded == count and cli.exit_code == 0,
        ),
    ]
    if uploaded == count:
        over_allowed = cli.wall_s / allowed_s
        checks.append(
            check(
                f"{count} x 4 KiB at 10 req/s, cntr-sync / (N / 10 s)",
                measured=cli.wall_s,
                reference=allowed_s,
                reference_name="N / 10 s",
                ratio=over_allowed,
                target="<= 1.3x",
                passed=over_allowed <= 1.3,
            )
        )
    checks.append(
        check(
            "requests refused (429) / all requests",
            measured=refused,
            reference=total,
            unit="requests",
            ratio=refused_share,
            target="< 0.05",
            passed=refused_share < 0.05,
        )
    )
    return target_record("2", "rate-limited push", command, checks, details)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="files (500; --quick 50)")


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__.splitlines()[0], options))
