"""Requests per sync pass: what the real CLI costs on a 1,000-file tree.

Builds a deterministic tree (nested directories, sizes 0..8 KiB, ``--seed``) in a
temporary directory, starts the emulator on 127.0.0.1 with its control surface,
and runs ``cntr-sync sync DIR --json`` as a subprocess three times:

  cold         an empty container: everything is uploaded
  incremental  after modifying 10 files, adding 5, deleting 5 and renaming 5
  no-change    nothing changed since the last pass
  new-index    nothing changed, but a new state dir: the container is found by
               name and every file adopted (a lost or wiped index)

For each pass it prints the requests the emulator received by operation (its
counters, reset before each pass), the CLI's own ``requests`` figure, and wall
seconds; then it checks the target "a no-change pass costs at most
ceil(N/100) + 2 requests" and prints PASS or FAIL, and checks that the
container mirrors the tree (names and sizes).

The CLI runs with its default settings except ``--concurrency`` and
``--requests-per-second`` when given: the default client-side rate limit (20
requests a second, meant for the real API) dominates the cold pass's wall time.

Run: ``.venv/bin/python bench/request_counts.py [--files 1000] [--requests-per-second R]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _support import (
    API_KEY,
    clean_env,
    cntr_sync_command,
    local_files,
    random_dir_parts,
    run_main,
    user_files,
)
from cntr_sync.api import ContainersClient
from cntr_sync.emulator import EmulatorControl, EmulatorServer

CONTAINER = "bench-request-counts"
MAX_FILE_BYTES = 8 * 1024
OPERATIONS = (
    "list_containers",
    "create_container",
    "retrieve_container",
    "delete_container",
    "list_files",
    "create_file",
    "retrieve_file",
    "delete_file",
    "file_content",
)


# -- the tree --------------------------------------------------------------------------


def build_tree(root: Path, files: int, rng: random.Random) -> None:
    """``files`` files at depth 0..3 under ``root``, 0..8 KiB of seeded random bytes each."""
    for number in range(files):
        directory = root.joinpath(*random_dir_parts(rng))
        directory.mkdir(parents=True, exist_ok=True)
        size = rng.randint(0, MAX_FILE_BYTES)
        (directory / f"file{number:05d}.bin").write_bytes(rng.randbytes(size))


@dataclass(frozen=True)
class Changes:
    modified: int
    added: int
    deleted: int
    renamed: int

    def describe(self) -> str:
        return (
            f"modified {self.modified}, added {self.added}, "
            f"deleted {self.deleted}, renamed {self.renamed}"
        )


def change_tree(root: Path, rng: random.Random, changes: Changes) -> None:
    """Apply ``changes`` to distinct, seeded picks of the existing files."""
    existing = sorted(local_files(root))
    picked = rng.sample(existing, changes.modified + changes.deleted + changes.renamed)
    to_modify = picked[: changes.modified]
    to_delete = picked[changes.modified : changes.modified + changes.deleted]
    to_rename = picked[changes.modified + changes.deleted :]
    for relpath in to_modify:
        # New content, and a new size within 0..8 KiB so no stat check can miss it.
        old_size = (root / relpath).stat().st_size
        new_size = old_size + 1 if old_size < MAX_FILE_BYTES else old_size - 1
        (root / relpath).write_bytes(rng.randbytes(new_size))
    for relpath in to_delete:
        (root / relpath).unlink()
    renamed_dir = root / "renamed"
    renamed_dir.mkdir(exist_ok=True)
    for relpath in to_rename:
        (root / relpath).rename(renamed_dir / Path(relpath).name)
    added_dir = root / "added"
    added_dir.mkdir(exist_ok=True)
    for number in range(changes.added):
        size = rng.randint(0, MAX_FILE_BYTES)
        (added_dir / f"new{number:03d}.bin").write_bytes(rng.randbytes(size))


# -- one pass ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PassFigures:
    name: str
    files: int
    wall_s: float
    exit_code: int
    summary: dict[str, Any]
    emulator_counts: dict[str, int]

    @property
    def emulator_total(self) -> int:
        return sum(self.emulator_counts.values())

    @property
    def cli_requests(self) -> int | None:
        value = self.summary.get("requests")
        return value if isinstance(value, int) else None


def cli_env(base_url: str, requests_per_second: float | None) -> dict[str, str]:
    env = clean_env()
    env["OPENAI_BASE_URL"] = base_url
    env["OPENAI_API_KEY"] = API_KEY
    if requests_per_second is not None:
        env["CNTR_SYNC_REQUESTS_PER_SECOND"] = str(requests_per_second)
    return env


def run_pass(
    name: str,
    root: Path,
    state_dir: Path,
    control: EmulatorControl,
    env: dict[str, str],
    extra_args: list[str],
    timeout_s: float,
) -> PassFigures:
    command = [
        *cntr_sync_command(),
        "sync",
        str(root),
        "--container",
        CONTAINER,
        "--state-dir",
        str(state_dir),
        "--json",
        *extra_args,
    ]
    files = len(local_files(root))
    control.reset_counts()
    started = time.perf_counter()
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    wall_s = time.perf_counter() - started
    counts = {op: n for op, n in control.counts().items() if n}
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    summary: dict[str, Any] = {}
    if lines:
        try:
            summary = json.loads(lines[-1])
        except json.JSONDecodeError:
            summary = {}
    if completed.returncode != 0 or not summary:
        print(f"  {name}: cntr-sync exited {completed.returncode}", file=sys.stderr)
        print(completed.stderr.strip()[-2000:], file=sys.stderr)
    return PassFigures(name, files, wall_s, completed.returncode, summary, counts)


# -- report ---------------------------------------------------------------------------------


def print_table(passes: list[PassFigures]) -> None:
    operations = [op for op in OPERATIONS if any(op in p.emulator_counts for p in passes)]
    operations += sorted(
        {op for p in passes for op in p.emulator_counts} - set(OPERATIONS) - set(operations)
    )
    rows: list[tuple[str, list[str]]] = [
        ("local files", [str(p.files) for p in passes]),
        (
            "uploaded/replaced/deleted",
            [
                f"{p.summary.get('uploaded', '?')}/{p.summary.get('replaced', '?')}"
                f"/{p.summary.get('deleted', '?')}"
                for p in passes
            ],
        ),
        ("exit code", [str(p.exit_code) for p in passes]),
    ]
    rows += [
        (f"emulator {op}", [str(p.emulator_counts.get(op, 0)) for p in passes]) for op in operations
    ]
    rows += [
        ("emulator total", [str(p.emulator_total) for p in passes]),
        ("CLI 'requests'", [str(p.cli_requests) for p in passes]),
        ("CLI 'seconds'", [str(p.summary.get("seconds", "?")) for p in passes]),
        ("wall seconds (process)", [f"{p.wall_s:.2f}" for p in passes]),
    ]
    label_width = max(len(label) for label, _ in rows)
    header = [p.name for p in passes]
    widths = [
        max(len(header[i]), *(len(values[i]) for _, values in rows)) for i in range(len(passes))
    ]
    print(
        " " * label_width
        + "  "
        + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    )
    for label, values in rows:
        cells = "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        print(f"{label.ljust(label_width)}  {cells}")
    for p in passes:
        by_operation = p.summary.get("requests_by_operation")
        described = (
            ", ".join(f"{op} {n}" for op, n in sorted(by_operation.items()))
            if isinstance(by_operation, dict)
            else "?"
        )
        print(f"CLI requests_by_operation, {p.name}: {described}")


def check_mirror(base_url: str, container_id: str, root: Path) -> tuple[bool, int, int]:
    """Whether the container's user files are exactly the tree (names and sizes)."""
    with ContainersClient(API_KEY, base_url=base_url) as client:
        remote = {name: item.bytes for name, item in user_files(client, container_id)}
    local = local_files(root)
    return remote == local, len(remote), len(local)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="files in the tree (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the tree and the changes")
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=None,
        help="the CLI's client-side rate limit (default: the CLI's own, 20)",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="the CLI's --concurrency")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one CLI pass may take (default 600)"
    )
    args = parser.parse_args()
    if args.files < 25:
        parser.error("--files must be at least 25 (the incremental pass changes 20 of them)")

    rng = random.Random(args.seed)
    changes = Changes(modified=10, added=5, deleted=5, renamed=5)
    extra_args = ["--concurrency", str(args.concurrency)] if args.concurrency else []
    with tempfile.TemporaryDirectory(prefix="cntr-bench-requests-") as work:
        work_dir = Path(work)
        root = work_dir / "tree"
        root.mkdir()
        build_tree(root, args.files, rng)
        tree_bytes = sum(local_files(root).values())
        print(
            f"tree: {args.files} files, {tree_bytes / 1024:.0f} KiB, seed {args.seed}; "
            f"rate limit {args.requests_per_second or 'CLI default'}, "
            f"concurrency {args.concurrency or 'CLI default'}"
        )
        with (
            EmulatorServer("127.0.0.1", 0, control=True, data_dir=work_dir / "emulator") as server,
            EmulatorControl(server.base_url) as control,
        ):
            env = cli_env(server.base_url, args.requests_per_second)
            state_dir = work_dir / "state"

            def one(name: str, state: Path = state_dir) -> PassFigures:
                print(f"... {name} pass", flush=True)
                return run_pass(name, root, state, control, env, extra_args, args.timeout)

            passes = [one("cold")]
            change_tree(root, rng, changes)
            print(f"    changes: {changes.describe()}")
            passes.append(one("incremental"))
            passes.append(one("no-change"))
            # The index lost (a new machine, a wiped state dir): the container is found
            # by name and every file adopted, with no upload.
            passes.append(one("new-index", work_dir / "state-new"))
            container_id = passes[-1].summary.get("container_id")
            mirrored, remote_count, local_count = (
                check_mirror(server.base_url, container_id, root)
                if isinstance(container_id, str)
                else (False, 0, len(local_files(root)))
            )

    print()
    print_table(passes)
    print()
    incremental = passes[1]
    pages = math.ceil(incremental.files / 100)
    transfers = changes.modified + changes.added + changes.renamed
    removals = changes.modified + changes.deleted + changes.renamed
    print(
        f"incremental: {incremental.emulator_total} requests; the least possible is "
        f"{pages} list + {transfers} create_file + {removals} delete_file = "
        f"{pages + transfers + removals}"
    )
    no_change = passes[2]
    target = math.ceil(no_change.files / 100) + 2
    verdict = "PASS" if no_change.exit_code == 0 and no_change.emulator_total <= target else "FAIL"
    print(
        f"target no-change pass <= ceil({no_change.files}/100) + 2 = {target} requests: "
        f"{no_change.emulator_total} -> {verdict}"
    )
    new_index = passes[3]
    listing = math.ceil(new_index.files / 100)
    print(
        f"no-change with a new index: {new_index.emulator_total} requests = ceil("
        f"{new_index.files}/100) + {new_index.emulator_total - listing} to find the container "
        f"by name; {new_index.summary.get('adopted', '?')} files adopted, "
        f"{new_index.summary.get('uploaded', '?')} uploaded"
    )
    counted_alike = all(p.cli_requests == p.emulator_total for p in passes)
    print(f"CLI 'requests' equals the emulator's count in every pass: {counted_alike}")
    print(
        f"container mirrors the tree: {'yes' if mirrored else 'NO'} "
        f"({remote_count} remote, {local_count} local)"
    )
    ok = verdict == "PASS" and mirrored and all(p.exit_code == 0 for p in passes)
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
