"""Shared by the issue-13 target benchmarks (``python -m bench``); not a benchmark itself.

- ``RecordingEmulator``: the emulator, counting answers by operation and status and
  noting when each upload was stored (the moment a listing would first show it), through
  ``Emulator.dispatch`` only, so no request of the benchmark's own pays the latency or
  shows up in the counts;
- ``emulator_server``: that emulator on 127.0.0.1 with a ``FaultConfig``;
- ``build_tree``: a seeded tree of files in nested directories;
- ``run_cli``: ``cntr-sync`` as a child process with its wall time and its own peak RSS
  (``os.wait4``), and the environment that points it at the emulator;
- ``check``/``target_record``: the shape of one target in the harness's JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _support import API_KEY, clean_env, cntr_sync_command, random_dir_parts
from cntr_sync.emulator import Emulator, EmulatorServer, FaultConfig
from cntr_sync.emulator.wire import EmuRequest, EmuResponse, match_route

LATENCY_MS = 25.0


@dataclass(frozen=True)
class StoredUpload:
    """An upload the emulator answered with success: when (monotonic), its id and path."""

    at: float
    file_id: str
    path: str


class RecordingEmulator(Emulator):
    """The emulator, counting every answer by (operation, status) and noting each stored
    upload. The handler stores an upload after the injected latency and just before the
    answer, so ``StoredUpload.at`` is when a listing would first show the file."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._answers: Counter[tuple[str, int]] = Counter()
        self._uploads: list[StoredUpload] = []
        self._record_lock = threading.Lock()

    def dispatch(self, request: EmuRequest) -> EmuResponse:
        response = super().dispatch(request)
        operation = match_route(request.method, request.path).operation
        if operation == "control":
            return response
        status = 0 if response.drop else response.status
        stored: StoredUpload | None = None
        if operation == "create_file" and status == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                body = json.loads(response.content)
                stored = StoredUpload(time.monotonic(), str(body["id"]), str(body["path"]))
        with self._record_lock:
            self._answers[(operation, status)] += 1
            if stored is not None:
                self._uploads.append(stored)
        return response

    def answers(self) -> dict[tuple[str, int], int]:
        with self._record_lock:
            return dict(self._answers)

    def uploads(self) -> list[StoredUpload]:
        with self._record_lock:
            return list(self._uploads)

    def reset_answers(self) -> None:
        with self._record_lock:
            self._answers.clear()
            self._uploads.clear()

    def total(self) -> int:
        return sum(self.answers().values())

    def refused(self) -> int:
        """Answers 429."""
        return sum(n for (_op, status), n in self.answers().items() if status == 429)

    def by_operation(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for (operation, _status), n in self.answers().items():
            counts[operation] += n
        return dict(counts)


@contextlib.contextmanager
def emulator_server(
    data_dir: Path, faults: FaultConfig | None = None
) -> Iterator[tuple[EmulatorServer, RecordingEmulator]]:
    """A ``RecordingEmulator`` served on 127.0.0.1 (port 0); both closed on the way out."""
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator = RecordingEmulator(data_dir=data_dir, faults=faults or FaultConfig())
    try:
        with EmulatorServer("127.0.0.1", 0, emulator=emulator) as server:
            yield server, emulator
    finally:
        emulator.close()


def latency(ms: float = LATENCY_MS, **extra: Any) -> FaultConfig:
    return FaultConfig(latency_ms=ms, **extra)


# -- the tree -------------------------------------------------------------------------------


def build_tree(root: Path, files: int, size: int, seed: int = 13) -> None:
    """``files`` files of ``size`` seeded random bytes at depths 0..3 under ``root``,
    backdated an hour (a daemon defers files younger than its quiet period)."""
    rng = random.Random(seed)
    then = time.time() - 3600
    made: set[Path] = set()
    for number in range(files):
        directory = root.joinpath(*random_dir_parts(rng))
        if directory not in made:
            directory.mkdir(parents=True, exist_ok=True)
            made.add(directory)
        path = directory / f"f{number:06d}.bin"
        path.write_bytes(rng.randbytes(size))
        os.utime(path, (then, then))


def bare_walk(root: Path) -> int:
    """The reference scan: ``os.scandir`` recursively with a stat of every file."""
    count = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    entry.stat(follow_symlinks=False)
                    count += 1
    return count


# -- the command line ------------------------------------------------------------------------


def cli_env(base_url: str) -> dict[str, str]:
    """A clean environment (no CNTR_SYNC_*/OPENAI_*) pointing at ``base_url``: every
    setting is the product's default."""
    env = clean_env()
    env["OPENAI_BASE_URL"] = base_url
    env["OPENAI_API_KEY"] = API_KEY
    return env


@dataclass
class CliRun:
    command: list[str]
    exit_code: int
    wall_s: float
    max_rss_kib: int
    stdout: str
    stderr: str
    summary: dict[str, Any] = field(default_factory=dict)
    cpu_s: float = 0.0  # user + system CPU of the command, from its own wait4

    def failure(self) -> str | None:
        """None if it exited 0, else one line naming the exit code and the last stderr."""
        if self.exit_code == 0:
            return None
        tail = self.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        return f"cntr-sync exited {self.exit_code}: {tail[0][:300]}"


# Runs argv[2:] and writes its peak RSS (ru_maxrss, KiB), wall time and CPU time to argv[1]. A
# command started straight from a benchmark (which may hold the emulator and, at 100,000
# files, well over 150 MB) inherits the benchmark's high-water mark when it execs (Linux
# carries the mm it was forked from into the new process's maxrss), so its own ru_maxrss
# would report the benchmark's whenever that is higher. Started from this small process
# instead, it reports its own. The wrapper times the command alone (its own start-up is
# not the command's), and the command dies with it (PR_SET_PDEATHSIG) if it is killed.
_RSS_WRAPPER = """
import ctypes, os, signal, subprocess, sys, time
def die_with_parent():
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
started = time.perf_counter()
child = subprocess.Popen(sys.argv[2:], preexec_fn=die_with_parent)
_pid, status, usage = os.wait4(child.pid, 0)
wall_s = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {wall_s} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_command(
    command: list[str], env: dict[str, str], timeout_s: float, cwd: Path | None = None
) -> CliRun:
    """Run ``command``: its wall time and its own peak RSS, taken by ``_RSS_WRAPPER``.
    Killed after ``timeout_s``."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        figures = Path(scratch) / "figures"
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", _RSS_WRAPPER, str(figures), *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
        )
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        try:
            process.wait()
        finally:
            timer.cancel()
        wall_s, max_rss_kib, cpu_s = time.perf_counter() - started, 0, 0.0
        if figures.exists():
            rss, wall, cpu = figures.read_text().split()
            max_rss_kib, wall_s, cpu_s = int(rss), float(wall), float(cpu)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    run = CliRun(command, process.returncode, wall_s, max_rss_kib, stdout, stderr, cpu_s=cpu_s)
    lines = [line for line in stdout.splitlines() if line.strip()]
    if lines:
        with contextlib.suppress(json.JSONDecodeError):
            loaded = json.loads(lines[-1])
            if isinstance(loaded, dict):
                run.summary = loaded
    return run


def run_cli(args: list[str], env: dict[str, str], timeout_s: float) -> CliRun:
    return run_command([*cntr_sync_command(), *args], env, timeout_s)


# -- results ----------------------------------------------------------------------------------


def check(
    figure: str,
    *,
    measured: float,
    reference: float,
    ratio: float,
    target: str,
    passed: bool,
    unit: str = "s",
    reference_name: str = "",
) -> dict[str, Any]:
    """One measured figure beside its reference, with its ratio and target."""
    return {
        "figure": figure,
        "measured": round(measured, 4),
        "reference": round(reference, 4),
        "reference_name": reference_name,
        "unit": unit,
        "ratio": round(ratio, 3),
        "target": target,
        "pass": passed,
    }


def target_record(
    number: str,
    name: str,
    command: str,
    checks: list[dict[str, Any]],
    details: dict[str, Any],
    *,
    reason: str | None = None,
) -> dict[str, Any]:
    """One target: "pass" when every check passes, "miss" when one does not, "not
    measured" (with the reason) when none could be taken."""
    if reason is not None and not checks:
        status = "not measured"
    elif checks and all(item["pass"] for item in checks):
        status = "pass"
    else:
        status = "miss"
    return {
        "target": number,
        "name": name,
        "status": status,
        "reason": reason,
        "command": command,
        "checks": checks,
        "details": details,
    }


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB/s":
        return f"{value:.0f} MiB/s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit in ("requests", "files"):
        return f"{value:g} {unit}"
    return f"{value:.4g} {unit}".strip()


def table_rows(records: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per check (figure, target, measured, reference, ratio, pass/miss, command);
    a target measured not at all gets one row with its reason."""
    rows: list[tuple[str, ...]] = []
    for record in records:
        label = f"{record['target']}. {record['name']}"
        if not record["checks"]:
            reason = record.get("reason") or "no figure"
            if len(reason) > 90:
                reason = reason[:87] + "..."  # the whole reason is in the JSON
            rows.append((label, "-", "-", "-", "-", "not measured: " + reason, record["command"]))
            continue
        for item in record["checks"]:
            reference = format_value(item["reference"], item["unit"])
            if item.get("reference_name"):
                reference += f" ({item['reference_name']})"
            rows.append(
                (
                    f"{label}: {item['figure']}",
                    item["target"],
                    format_value(item["measured"], item["unit"]),
                    reference,
                    f"{item['ratio']:.2f}",
                    "pass" if item["pass"] else "MISS",
                    record["command"],
                )
            )
    return rows


def print_table(records: list[dict[str, Any]], file: Any = None) -> None:
    header = ("figure", "target", "measured", "reference", "ratio", "pass/miss", "command")
    rows = [header, *table_rows(records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=file)


def script_main(
    measure: Callable[..., dict[str, Any]],
    description: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The command line every target script shares: ``--quick``, ``--json``, and the
    script's own options (passed to ``measure`` by name); the work in a temporary
    directory, removed at the end."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    if extra is not None:
        extra(parser)
    options = vars(parser.parse_args())
    quick = options.pop("quick")
    as_json = options.pop("json")
    with tempfile.TemporaryDirectory(prefix="cntr-bench-") as work:
        record = measure(Path(work), quick=quick, **options)
    if as_json:
        print(json.dumps(record, indent=2))
    else:
        print_table([record])
        print(json.dumps(record["details"], indent=2))
    return 0 if record["status"] != "not measured" else 1
