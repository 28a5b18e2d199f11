"""Start-up: what a command costs before it does anything, against ``python -c pass``.

Side by side in one run, each command run ``--runs`` times (default 15) as a fresh
process, interleaved so that load from other jobs falls on all of them alike:

- ``python -c pass`` with the same interpreter (the floor);
- ``cntr-sync --version``;
- ``cntr-sync sync`` of an empty directory, a no-op pass (the container was created
  by one warm-up sync) against an ``EmulatorServer`` on 127.0.0.1 in this process,
  configured through ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` and a private state dir;
- for reference, not a target: ``python -c "import typer, httpx, pydantic_settings"``,
  what importing the libraries ``sync`` is built on costs before any of its own code
  (typer builds a pydantic ``TypeAdapter`` per option when it parses a command line,
  which this line does not count).

It prints the median wall time and the median CPU time (user + system, from
``wait4``; steadier than wall time on a shared machine) of each, and each command's
difference from ``python -c pass``: issue 13's target is at most 0.3 s. It exits 1
if a command fails.

Issue 23's target is **our own part** of the no-op ``sync``: everything but the
interpreter's start and the libraries' imports (our modules' import, the settings,
the pass, closing the process), at most 0.1 s of CPU. A first run of the command
in-process notes every module it loaded that is not ours, in the order it was
loaded; each measured run then imports those first (the standard library's, then
the third-party ones), notes the CPU time at each step (``time.process_time``) and
runs the command in the same process, which exits the usual way. The whole
process's CPU time comes from ``wait4``. What comes after the libraries are in
holds one cost that is theirs: the interpreter's exit tears every loaded module
down (~40 ms for the ~460 modules a sync loads). So each run is paired with one
that imports the same libraries and exits at once; our part is what is left after
the libraries are in, minus that one's exit. Both figures are printed. Medians
over ``--runs``, with the lowest and highest, and the load average.

    .venv/bin/python bench/startup.py               # 15 runs each
    .venv/bin/python bench/startup.py --quick       # 5 runs each
    .venv/bin/python bench/startup.py --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _support import API_KEY, clean_env, cntr_sync_command
from cntr_sync.emulator import Emulator, EmulatorServer

TARGET_S = 0.3
OWN_PART_TARGET_S = 0.1  # issue 23

# A child that runs the command in-process and writes the names of the modules it
# loaded that are not ours, in load order (sys.modules keeps it), to argv[1].
_LIST_LIBRARIES = """
import sys
out, sys.argv = sys.argv[1], ["cntr-sync", *sys.argv[2:]]
try:
    from cntr_sync.cli import main
    main()
except SystemExit:
    pass
finally:
    with open(out, "w") as names:
        names.write("\\n".join(
            name for name in list(sys.modules)
            if name != "__main__" and name.partition(".")[0] != "cntr_sync"
        ))
"""

# A child that imports the libraries of argv[1] (the standard library's first), writes
# the CPU seconds at its start and after each group to argv[2], then runs the command.
_OWN_PART = """
import importlib, sys, time
started = time.process_time()
names = open(sys.argv[1]).read().split()
out, sys.argv = sys.argv[2], ["cntr-sync", *sys.argv[3:]]
def load(group):
    for name in group:
        try:
            importlib.import_module(name)
        except Exception:
            pass  # a module only its package may import: it came in with its package
stdlib = [n for n in names if n.partition(".")[0] in sys.stdlib_module_names]
load(stdlib)
after_stdlib = time.process_time()
load([n for n in names if n.partition(".")[0] not in sys.stdlib_module_names])
with open(out, "w") as figures:
    figures.write(f"{started} {after_stdlib} {time.process_time()}")
if sys.argv[1:]:  # else only the libraries: what closing the interpreter costs with them
    from cntr_sync.cli import main
    main()
"""
LIBRARIES = "reference: import typer, httpx, pydantic_settings"
RUN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Figure:
    name: str
    wall_s: float
    cpu_s: float


def timed_run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run (killed after ``RUN_TIMEOUT_S``); raises if it fails."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        killer = threading.Timer(RUN_TIMEOUT_S, process.kill)
        killer.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {message}")
    return wall, usage.ru_utime + usage.ru_stime


def as_json(figure: Figure, floor: Figure) -> dict[str, float | str]:
    return {
        "name": figure.name,
        "wall_s": figure.wall_s,
        "cpu_s": figure.cpu_s,
        "wall_over_python_s": figure.wall_s - floor.wall_s,
        "cpu_over_python_s": figure.cpu_s - floor.cpu_s,
    }


@dataclass(frozen=True)
class OwnPart:
    """Issue 23: the no-op sync's CPU seconds split by who spends them (medians, with
    the lowest and highest of our part)."""

    interpreter_s: float
    stdlib_s: float
    third_party_s: float
    closing_libraries_s: float  # the interpreter's exit with the libraries alone loaded
    after_libraries_s: float  # everything after the libraries are in (our part + that exit)
    own_s: float
    own_min_s: float
    own_max_s: float
    modules: int


def own_part(runs: int, sync_argv: list[str], env: dict[str, str], cwd: Path) -> OwnPart:
    """The no-op sync's own part (see the module docstring), ``runs`` times."""
    names = cwd / "libraries.txt"
    figures = cwd / "own-part.txt"
    timed_run([sys.executable, "-c", _LIST_LIBRARIES, str(names), *sync_argv], env, cwd)
    parts: list[tuple[float, float, float, float, float]] = []
    for _ in range(runs):
        # The libraries alone, then the command: what is left after the libraries are
        # in, without the command and with it.
        _wall, total = timed_run(
            [sys.executable, "-c", _OWN_PART, str(names), str(figures)], env, cwd
        )
        closing_libraries = total - float(figures.read_text().split()[2])
        _wall, total = timed_run(
            [sys.executable, "-c", _OWN_PART, str(names), str(figures), *sync_argv], env, cwd
        )
        started, after_stdlib, after_libraries = map(float, figures.read_text().split())
        parts.append(
            (
                started,
                after_stdlib - started,
                after_libraries - after_stdlib,
                closing_libraries,
                total - after_libraries,
            )
        )
    own = [part[4] - part[3] for part in parts]
    return OwnPart(
        interpreter_s=statistics.median(part[0] for part in parts),
        stdlib_s=statistics.median(part[1] for part in parts),
        third_party_s=statistics.median(part[2] for part in parts),
        closing_libraries_s=statistics.median(part[3] for part in parts),
        after_libraries_s=statistics.median(part[4] for part in parts),
        own_s=statistics.median(own),
        own_min_s=min(own),
        own_max_s=max(own),
        modules=len(names.read_text().split()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    parser.add_argument("--quick", action="store_true", help="5 runs of each command")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    runs = 5 if args.quick else max(1, args.runs)
    try:
        figures, own = measure(runs)
    except RuntimeError as error:
        print(f"startup: {error}", file=sys.stderr)
        return 1
    floor = figures[0]
    load = [round(value, 2) for value in os.getloadavg()]
    if args.json:
        print(
            json.dumps(
                {
                    "runs": runs,
                    "target_s": TARGET_S,
                    "figures": [as_json(f, floor) for f in figures if f.name != LIBRARIES],
                    "references": [as_json(f, floor) for f in figures if f.name == LIBRARIES],
                    "own_part": {**dataclasses.asdict(own), "target_s": OWN_PART_TARGET_S},
                    "load_average": load,
                }
            )
        )
        return 0
    print(f"median of {runs} runs each")
    print(f"{'command':<52} {'wall s':>8} {'cpu s':>8} {'wall - python':>14} {'cpu - python':>13}")
    for figure in figures:
        print(
            f"{figure.name:<52} {figure.wall_s:>8.3f} {figure.cpu_s:>8.3f}"
            f" {figure.wall_s - floor.wall_s:>14.3f} {figure.cpu_s - floor.cpu_s:>13.3f}"
        )
    print(f"target: at most {TARGET_S:.1f} s above python -c pass (the last line is a reference)")
    print()
    print(f"no-op sync, CPU seconds by who spends them (median of {runs}; {own.modules} modules")
    print("not ours imported first):")
    rows = [
        ("interpreter start-up", own.interpreter_s),
        ("standard library imports", own.stdlib_s),
        ("third-party imports", own.third_party_s),
        ("closing the interpreter, only the libraries loaded", own.closing_libraries_s),
        ("everything after the libraries are in", own.after_libraries_s),
    ]
    for label, seconds in rows:
        print(f"  {label:<52} {seconds:.3f}")
    verdict = "pass" if own.own_s <= OWN_PART_TARGET_S else "MISS"
    print(
        f"  {'our own part (the line above minus the one before)':<52} {own.own_s:.3f}"
        f" ({own.own_min_s:.3f}-{own.own_max_s:.3f}); target <= {OWN_PART_TARGET_S:.1f}: {verdict}"
    )
    print(f"load average {load[0]} {load[1]} {load[2]}")
    return 0


def measure(runs: int) -> tuple[list[Figure], OwnPart]:
    with (
        tempfile.TemporaryDirectory(prefix="cntr-bench-startup-") as temp,
        Emulator(data_dir=Path(temp) / "emulator") as emulator,
        EmulatorServer("127.0.0.1", 0, emulator=emulator) as server,
    ):
        work = Path(temp)
        tree = work / "empty tree"
        tree.mkdir()
        env = clean_env()
        env.update(
            {
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": API_KEY,
                "CNTR_SYNC_STATE_DIR": str(work / "state"),
            }
        )
        command = cntr_sync_command()
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "cntr-sync --version": [*command, "--version"],
            "cntr-sync sync (empty tree, no-op)": [
                *command,
                "sync",
                str(tree),
                "--container",
                "bench-startup",
            ],
            LIBRARIES: [sys.executable, "-c", "import typer, httpx, pydantic_settings"],
        }
        timed_run(cases["cntr-sync sync (empty tree, no-op)"], env, work)  # creates the container
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, argv in cases.items():
                wall, cpu = timed_run(argv, env, work)
                walls[name].append(wall)
                cpus[name].append(cpu)
        sync_args = cases["cntr-sync sync (empty tree, no-op)"][len(command) :]
        own = own_part(runs, sync_args, env, work)
        return [
            Figure(name, statistics.median(walls[name]), statistics.median(cpus[name]))
            for name in cases
        ], own


if __name__ == "__main__":
    sys.exit(main())
