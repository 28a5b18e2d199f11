"""Scan scale: what cntr-sync's local scan costs per file at 1k, 10k and 100k files.

Builds a seeded tree for each size in a temporary directory (nested directories
up to four deep, 1 to 4 KiB of random bytes per file, about 1 % editor backups
that the default ignore rules skip, every file backdated an hour so the hash
cache may keep its digest) and measures, side by side in one run:

  walk       a bare ``os.scandir`` walk that stats every entry (the floor)
  hash walk  the same walk that also reads every file in 1 MiB chunks and
             hashes it with xxh3-128 (what any content scan must do once)
  cold       ``cntr_sync.scan.scan`` against an empty hash cache (a new index
             file), the hash writes included: the first scan of a tree
  warm       the same scan against the index the cold scan filled: nothing is
             read, only stat'ed (every later scan of an unchanged tree)

Each measurement runs in a fresh child process (so each has its own peak RSS)
and times only the walk, not Python's start-up; the best of ``--repeat`` runs
counts, the modes interleaved so a noisy moment hurts all of them alike. The
page cache is warm for all four (the tree was just written): "cold" means an
empty hash cache, not a cold disk.

It prints per size: seconds, microseconds per file, peak RSS of the child and
its growth over the child's RSS before the walk, and the ratios the targets
name (issue 13 #5): warm / walk (target at most 2x at 100k), cold / hash walk
(at most 1.5x), and how the per-file cost grows from one size to the next
(linear means about 1x).

Run: ``.venv/bin/python bench/scan_scale.py [--quick] [--json] [--repeat N]``.
``--quick`` measures 1k and 10k only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
MODES = ("walk", "hash walk", "cold", "warm")
DIR_NAMES = ("src", "docs", "data", "lib", "tests", "assets", "notes", "conf")
EXTENSIONS = (".txt", ".py", ".json", ".md", ".csv", ".bin")
FILES_PER_DIR = 40
MAX_DEPTH = 4
BACKDATE_NS = 3600 * 10**9
CHILD_TIMEOUT_S = 900.0
HASH_CHUNK = 1 << 20  # cntr_sync.hashing.HASH_CHUNK, kept literal so the walk child imports nothing


# -- the tree --------------------------------------------------------------------------


def build_tree(root: Path, files: int, seed: int) -> int:
    """``files`` regular files (plus ~1 % ignored backups) under ``root``; returns entries."""
    rng = random.Random(seed)
    dirs = [""]
    for index in range(max(1, files // FILES_PER_DIR)):
        parent = rng.choice(dirs)
        if parent.count("/") >= MAX_DEPTH - 1:
            parent = ""
        name = f"{rng.choice(DIR_NAMES)}{index}"
        dirs.append(f"{parent}/{name}" if parent else name)
    for relpath in dirs[1:]:
        (root / relpath).mkdir(parents=True, exist_ok=True)
    old = time.time_ns() - BACKDATE_NS
    entries = 0
    for index in range(files):
        directory = rng.choice(dirs)
        name = f"f{index:06d}{rng.choice(EXTENSIONS)}"
        names = [name]
        if rng.random() < 0.01:
            names.append(f"{name}~")  # an editor backup: ignored by default
        for each in names:
            path = root / directory / each
            path.write_bytes(rng.randbytes(rng.randint(1024, 4096)))
            os.utime(path, ns=(old, old))
            entries += 1
    return entries


# -- the children: one measurement each ------------------------------------------------


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def walk_stat(root: str) -> int:
    """A bare walk: scandir every directory, stat every entry once; returns files seen."""
    seen = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as listing:
            for entry in listing:
                entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    seen += 1
    return seen


def walk_hash(root: str) -> int:
    """The bare walk, also reading and hashing every file (xxh3-128, 1 MiB chunks)."""
    import xxhash  # noqa: PLC0415 (only this child needs it)

    seen = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as listing:
            for entry in listing:
                entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                digest = xxhash.xxh3_128()
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    while chunk := os.read(fd, HASH_CHUNK):
                        digest.update(chunk)
                finally:
                    os.close(fd)
                digest.hexdigest()
                seen += 1
    return seen


def run_child(mode: str, root: Path, state: Path) -> dict[str, Any]:
    if mode in {"cold", "warm"}:
        from cntr_sync.ignore import IgnoreRules  # noqa: PLC0415
        from cntr_sync.index import Index  # noqa: PLC0415 (the walk children stay lean)
        from cntr_sync.scan import scan  # noqa: PLC0415

        before = current_rss_kib()
        with Index.open(state, base_url="http://bench", root=root, container_spec="bench") as index:
            # Opening and closing the index file is a fixed cost, not the scan's: untimed.
            # The flush of buffered digests is timed: part of what a cold scan costs.
            started = time.perf_counter()
            snapshot = scan(root, rules=IgnoreRules.load(root), hash_cache=index.hashes)
            index.hashes.flush()
            seconds = time.perf_counter() - started
        files, hashed = len(snapshot.files), snapshot.hashed_count
        ignored = snapshot.ignored_count
    else:
        before = current_rss_kib()
        started = time.perf_counter()
        files = walk_stat(str(root)) if mode == "walk" else walk_hash(str(root))
        seconds = time.perf_counter() - started
        hashed = files if mode == "hash walk" else 0
        ignored = 0
    return {
        "seconds": seconds,
        "files": files,
        "hashed": hashed,
        "ignored": ignored,
        "rss_before_kib": before,
        "peak_rss_kib": peak_rss_kib(),
    }


def measure(mode: str, root: Path, state: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--root", str(root), "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"scan_scale: the {mode} child failed:\n{completed.stderr.strip()}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


# -- the parent ------------------------------------------------------------------------


@dataclass
class SizeResult:
    files: int
    entries: int
    build_seconds: float
    best: dict[str, dict[str, Any]] = field(default_factory=dict)

    def seconds(self, mode: str) -> float:
        return float(self.best[mode]["seconds"])

    def per_file_us(self, mode: str) -> float:
        return self.seconds(mode) / self.files * 1e6

    def ratios(self) -> dict[str, float]:
        return {
            "warm / walk": self.seconds("warm") / self.seconds("walk"),
            "cold / hash walk": self.seconds("cold") / self.seconds("hash walk"),
        }


def measure_size(files: int, seed: int, repeat: int, work: Path) -> SizeResult:
    root = work / f"tree-{files}"
    root.mkdir()
    started = time.perf_counter()
    entries = build_tree(root, files, seed)
    result = SizeResult(files, entries, time.perf_counter() - started)
    for attempt in range(repeat):
        state = work / f"state-{files}-{attempt}"
        for mode in MODES:
            # "cold" gets a new state dir each time; "warm" reuses the one cold just filled.
            run = measure(mode, root, state)
            if mode in {"cold", "warm"} and run["files"] != files:
                raise SystemExit(f"scan_scale: {mode} saw {run['files']} files, not {files}")
            if mode == "warm" and run["hashed"] != 0:
                raise SystemExit(f"scan_scale: the warm scan read {run['hashed']} files again")
            best = result.best.get(mode)
            if best is None or run["seconds"] < best["seconds"]:
                result.best[mode] = run
        shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return result


def print_table(results: list[SizeResult]) -> None:
    header = f"{'':26}" + "".join(f"{r.files:>14,}" for r in results)
    print(header)
    for mode in MODES:
        print(f"{mode + ' s':26}" + "".join(f"{r.seconds(mode):>14.3f}" for r in results))
    for mode in MODES:
        print(f"{mode + ' us/file':26}" + "".join(f"{r.per_file_us(mode):>14.2f}" for r in results))
    for name in ("warm / walk", "cold / hash walk"):
        print(f"{name:26}" + "".join(f"{r.ratios()[name]:>13.2f}x" for r in results))
    for mode in MODES:
        print(
            f"{mode + ' peak RSS MiB':26}"
            + "".join(f"{r.best[mode]['peak_rss_kib'] / 1024:>14.1f}" for r in results)
        )
    for mode in ("cold", "warm"):
        print(
            f"{mode + ' RSS growth MiB':26}"
            + "".join(
                f"{(r.best[mode]['peak_rss_kib'] - r.best[mode]['rss_before_kib']) / 1024:>14.1f}"
                for r in results
            )
        )
    print(
        f"{'ignored entries (scan)':26}"
        + "".join(f"{r.best['warm']['ignored']:>14}" for r in results)
    )
    print(f"{'tree build s':26}" + "".join(f"{r.build_seconds:>14.1f}" for r in results))
    for smaller, larger in itertools.pairwise(results):
        growth = ", ".join(
            f"{mode} {larger.per_file_us(mode) / smaller.per_file_us(mode):.2f}x" for mode in MODES
        )
        print(f"per-file cost {smaller.files:,} -> {larger.files:,}: {growth} (linear: ~1x)")
    largest = results[-1]
    ratios = largest.ratios()
    print(
        f"at {largest.files:,}: warm / walk {ratios['warm / walk']:.2f}x (target <= 2x), "
        f"cold / hash walk {ratios['cold / hash walk']:.2f}x (target <= 1.5x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k files only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the best counts")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--sizes", type=int, nargs="+", help="file counts (default 1k 10k 100k)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_child(args.child, args.root, args.state)))
        return 0
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    work = Path(tempfile.mkdtemp(prefix="cntr-sync-scan-scale-"))
    try:
        results = []
        for files in sizes:
            results.append(measure_size(files, args.seed, max(1, args.repeat), work))
            if not args.json:
                print(f"... {files:,} files measured", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **asdict(r),
                        "per_file_us": {m: r.per_file_us(m) for m in MODES},
                        "ratios": r.ratios(),
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
