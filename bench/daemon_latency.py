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

The helpers here (processes, config, /status) are shared with
``bench/daemon_soak.py``.

Run: ``.venv/bin/python bench/daemon_latency.py [--changes 50] [--quiet-period 1.0]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from cntr_sync.api import ContainersClient
from cntr_sync.plan import remote_names

API_KEY = "bench-key"
LISTENING = "cntr-sync emulator listening on "
STARTUP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0  # the daemon's flush_timeout (10 s) plus margin
HTTP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02
LAND_TIMEOUT_S = 30.0
BASE_FILES = 10


# -- processes ---------------------------------------------------------------------------


def cntr_sync_command() -> list[str]:
    script = Path(sys.executable).parent / "cntr-sync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cntr_sync.cli import main; main()"]


def clean_env() -> dict[str, str]:
    """The environment without CNTR_SYNC_*/OPENAI_* variables: the config file decides."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CNTR_SYNC_", "OPENAI_"))
    }


def sigterm_as_interrupt() -> None:
    """Let SIGTERM (and SIGHUP) unwind like Ctrl-C, so every ``finally`` cleans up."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup keeps SIGHUP ignored
        signal.signal(signal.SIGHUP, on_signal)


@dataclass
class Child:
    """A child process whose stdout and stderr go to ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def wait_for_line(self, predicate: Callable[[str], bool], timeout_s: float) -> str:
        """The first log line for which ``predicate`` holds; bounded by ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if predicate(line):
                    return line
            if self.process.poll() is not None:
                tail = "\n".join(self.log_lines()[-20:])
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no expected log line within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> tuple[int | None, float]:
        """SIGTERM, wait (bounded), SIGKILL if needed; returns (exit code, seconds)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                print(f"{self.name} did not stop within {timeout_s:.0f} s: killed", file=sys.stderr)
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        return self.process.returncode, time.monotonic() - started


@contextlib.contextmanager
def child_process(
    name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[Child]:
    """Start ``command`` in its own session (Ctrl-C reaches only this script, which then
    stops the child in order); always stop it on the way out."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    child = Child(name, process, log_path)
    try:
        yield child
    finally:
        child.stop()


@dataclass
class Emulator:
    child: Child
    base_url: str


@contextlib.contextmanager
def emulator_process(work_dir: Path) -> Iterator[Emulator]:
    """``cntr-sync emulator`` on 127.0.0.1, port 0, control surface on."""
    data_dir = work_dir / "emulator-data"
    data_dir.mkdir()
    command = [
        *cntr_sync_command(),
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--control",
        "--data-dir",
        str(data_dir),
    ]
    with child_process("emulator", command, work_dir / "emulator.log", clean_env()) as child:
        line = child.wait_for_line(lambda text: text.startswith(LISTENING), STARTUP_TIMEOUT_S)
        yield Emulator(child, line[len(LISTENING) :].strip())


def write_config(
    path: Path,
    *,
    base_url: str,
    state_dir: Path,
    root: Path,
    container: str,
    requests_per_second: float,
    pair_options: dict[str, float],
) -> None:
    """A daemon config with one pair named "bench"; strings are JSON-quoted (valid TOML)."""
    lines = [
        f"base_url = {json.dumps(base_url)}",
        f"api_key = {json.dumps(API_KEY)}",
        f"state_dir = {json.dumps(str(state_dir))}",
        'http_listen = "127.0.0.1:0"',
        f"requests_per_second = {requests_per_second!r}",
        "",
        "[[pairs]]",
        'name = "bench"',
        f"local = {json.dumps(str(root))}",
        f"container = {json.dumps(container)}",
        *(f"{key} = {float(value)!r}" for key, value in pair_options.items()),
    ]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Daemon:
    child: Child
    http_url: str
    http: httpx.Client

    def status(self) -> dict[str, Any]:
        response = self.http.get("/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def pair(self) -> dict[str, Any]:
        pair: dict[str, Any] = self.status()["pairs"]["bench"]
        return pair

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Poll /readyz until 200 (bounded); returns the seconds since the process started."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.child.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.child.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/readyz").status_code == 200:
                    return time.monotonic() - self.child.started_at
            time.sleep(0.05)
        raise RuntimeError(f"the daemon was not ready within {timeout_s:.0f} s")


def _daemon_started(line: str) -> str | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if isinstance(event, dict) and event.get("event") == "daemon started":
        url = event.get("http")
        return url if isinstance(url, str) else None
    return None


@contextlib.contextmanager
def daemon_process(config: Path, work_dir: Path) -> Iterator[Daemon]:
    """``cntr-sync run --config FILE``; yields once its health URL is known (not yet ready)."""
    command = [*cntr_sync_command(), "run", "--config", str(config)]
    with child_process("daemon", command, work_dir / "daemon.log", clean_env()) as child:
        line = child.wait_for_line(
            lambda text: _daemon_started(text) is not None, STARTUP_TIMEOUT_S
        )
        url = _daemon_started(line)
        assert url is not None
        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
            yield Daemon(child, url, http)


def log_events(lines: list[str]) -> dict[str, int]:
    """How many daemon log lines there are per level (warning, error, ...)."""
    levels: dict[str, int] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            levels["(not JSON)"] = levels.get("(not JSON)", 0) + 1
            continue
        level = str(event.get("level", "?")) if isinstance(event, dict) else "?"
        levels[level] = levels.get(level, 0) + 1
    return levels


def problem_lines(lines: list[str], limit: int = 5) -> list[str]:
    """The first few daemon log lines at warning level or above, or not JSON."""
    found = []
    for line in lines:
        try:
            event = json.loads(line)
            level = event.get("level") if isinstance(event, dict) else None
        except json.JSONDecodeError:
            level = "raw"
        if level not in ("info", "debug"):
            found.append(line[:300])
            if len(found) >= limit:
                break
    return found


def backdate(root: Path, seconds: float = 3600.0) -> None:
    """Set every file's mtime an hour back. The daemon's first pass defers files younger
    than quiet_period and, until they age, repeats at once (a busy loop; see the README),
    so a tree written a moment before the daemon starts would skew its first seconds."""
    then = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


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
        for item in self.client.iter_files(self.container_id):
            if item.is_user_upload:
                by_name.setdefault(remote_names(item.path)[0], []).append(item.id)
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
    config = work_dir / "daemon.toml"
    changes: list[Change] = []
    with emulator_process(work_dir) as emulator:
        write_config(
            config,
            base_url=emulator.base_url,
            state_dir=work_dir / "state",
            root=root,
            container="bench-daemon-latency",
            requests_per_second=args.requests_per_second,
            pair_options={
                "quiet_period": args.quiet_period,
                "max_delay": max(10.0, args.quiet_period),
            },
        )
        with daemon_process(config, work_dir) as daemon:
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

    sigterm_as_interrupt()
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
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; processes stopped and temporary files removed", file=sys.stderr)
        sys.exit(130)
