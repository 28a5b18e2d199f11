"""Helpers shared by the benchmark scripts in ``bench/`` (not a benchmark itself).

- the ``cntr-sync`` command (its package byte-compiled first) and a clean environment
  (no ``CNTR_SYNC_*``/``OPENAI_*``);
- child processes in their own session, logged to a file, stopped with bounded waits;
- the emulator (``cntr-sync emulator --port 0 --control``) and the daemon
  (``cntr-sync run --config FILE``) as child processes, its config, its log and /status;
- ``run_main``: SIGTERM and SIGHUP unwind like Ctrl-C, so every ``finally`` stops the
  children and removes the temporary directory;
- /proc readings, the local tree and the container's listing, and small formatters.
"""

from __future__ import annotations

import compileall
import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx

import cntr_sync
from cntr_sync.api import ContainersClient
from cntr_sync.models import ContainerFile
from cntr_sync.names import remote_names

API_KEY = "bench-key"
LISTENING = "cntr-sync emulator listening on "
STARTUP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0  # the daemon's flush_timeout (10 s) plus margin
HTTP_TIMEOUT_S = 10.0
DIR_NAMES = ("src", "docs", "data", "lib", "tests", "assets", "notes", "conf")


# -- the command, its environment, and signals ------------------------------------------


def cntr_sync_command() -> list[str]:
    """How to run ``cntr-sync`` from this interpreter's environment, its package
    byte-compiled first (``compiled_package``)."""
    compiled_package()
    script = Path(sys.executable).parent / "cntr-sync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cntr_sync.cli import console; console()"]


@functools.cache
def compiled_package() -> int:
    """Byte-compile the ``cntr_sync`` package where it lives, as installing a wheel
    does; returns how many modules were compiled anew (0 when all were current).

    An editable install is compiled by its first run, unless the environment sets
    PYTHONDONTWRITEBYTECODE (some CI images and containers do): then every run
    compiles every module it imports from source again, about 17 % of the
    instructions of a no-op ``sync`` (callgrind), which no installed copy pays.
    """
    package = Path(cntr_sync.__file__).parent
    before = {path: path.stat().st_mtime_ns for path in package.rglob("*.pyc")}
    compileall.compile_dir(package, quiet=1)
    after = {path: path.stat().st_mtime_ns for path in package.rglob("*.pyc")}
    return sum(1 for path, mtime in after.items() if before.get(path) != mtime)


def clean_env() -> dict[str, str]:
    """The environment without CNTR_SYNC_*/OPENAI_* variables: unknown CNTR_SYNC_* ones are
    refused by the CLI, and a stray OPENAI_* one would point it elsewhere."""
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


def run_main(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s code; on Ctrl-C, SIGTERM or SIGHUP (after the ``finally``
    blocks have stopped the children and removed the temporary files) exit 130."""
    sigterm_as_interrupt()
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; processes stopped and temporary files removed", file=sys.stderr)
        sys.exit(130)


# -- child processes ------------------------------------------------------------------------


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
    name: str,
    command: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    stop_timeout_s: float = STOP_TIMEOUT_S,
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
        child.stop(stop_timeout_s)


# -- the emulator -----------------------------------------------------------------------------


@dataclass
class Emulator:
    child: Child
    base_url: str

    @property
    def pid(self) -> int:
        return self.child.pid


@contextlib.contextmanager
def emulator_process(
    work_dir: Path, *, stop_timeout_s: float = STOP_TIMEOUT_S
) -> Iterator[Emulator]:
    """``cntr-sync emulator`` on 127.0.0.1, port 0, control surface on, its data in
    ``work_dir/emulator-data``; yields once its URL is logged (bounded), stops it after."""
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
    with child_process(
        "emulator",
        command,
        work_dir / "emulator.log",
        clean_env(),
        stop_timeout_s=stop_timeout_s,
    ) as child:
        line = child.wait_for_line(lambda text: text.startswith(LISTENING), STARTUP_TIMEOUT_S)
        yield Emulator(child, line[len(LISTENING) :].strip())


# -- the daemon -------------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    base_url: str,
    state_dir: Path,
    root: Path,
    container: str,
    requests_per_second: float | None,
    pair_options: Mapping[str, float | str],
    daemon_options: Mapping[str, str] | None = None,
) -> None:
    """A daemon config with one pair named "bench"; strings are JSON-quoted (valid TOML).
    ``requests_per_second`` None leaves the setting out (the product's default)."""
    lines = [
        f"base_url = {json.dumps(base_url)}",
        f"api_key = {json.dumps(API_KEY)}",
        f"state_dir = {json.dumps(str(state_dir))}",
        'http_listen = "127.0.0.1:0"',
        *(
            [f"requests_per_second = {requests_per_second!r}"]
            if requests_per_second is not None
            else []
        ),
        *(f"{key} = {_toml_value(value)}" for key, value in (daemon_options or {}).items()),
        "",
        "[[pairs]]",
        'name = "bench"',
        f"local = {json.dumps(str(root))}",
        f"container = {json.dumps(container)}",
        *(f"{key} = {_toml_value(value)}" for key, value in pair_options.items()),
    ]
    path.write_text("\n".join(lines) + "\n")


def _toml_value(value: float | str) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(float(value))


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


@contextlib.contextmanager
def emulator_and_daemon(
    work_dir: Path,
    root: Path,
    *,
    container: str,
    requests_per_second: float | None,
    pair_options: dict[str, float],
) -> Iterator[tuple[Emulator, Daemon]]:
    """The emulator, then the daemon syncing ``root`` to it with one pair "bench" (config in
    ``work_dir/daemon.toml``, state in ``work_dir/state``); the daemon is not yet ready."""
    config = work_dir / "daemon.toml"
    with emulator_process(work_dir) as emulator:
        write_config(
            config,
            base_url=emulator.base_url,
            state_dir=work_dir / "state",
            root=root,
            container=container,
            requests_per_second=requests_per_second,
            pair_options=pair_options,
        )
        with daemon_process(config, work_dir) as daemon:
            yield emulator, daemon


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


# -- the local tree and the container -----------------------------------------------------------


def random_dir_parts(rng: random.Random) -> list[str]:
    """0 to 3 seeded directory names such as ``src2``, ``docs0``."""
    depth = rng.randint(0, 3)
    return [f"{rng.choice(DIR_NAMES)}{rng.randrange(4)}" for _ in range(depth)]


def local_files(root: Path) -> dict[str, int]:
    """relpath -> size of every regular file under ``root``."""
    return {
        path.relative_to(root).as_posix(): path.stat().st_size
        for path in root.rglob("*")
        if path.is_file()
    }


def backdate(root: Path, seconds: float = 3600.0) -> None:
    """Set every file's mtime an hour back. The daemon's first pass defers files younger
    than quiet_period and, until they age, repeats at once (a busy loop; see the README),
    so a tree written a moment before the daemon starts would skew its first seconds."""
    then = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def user_files(client: ContainersClient, container_id: str) -> Iterator[tuple[str, ContainerFile]]:
    """(local name, file) for every user-uploaded file of the container."""
    for item in client.iter_files(container_id):
        if item.is_user_upload:
            yield remote_names(item.path)[0], item


# -- /proc and formatting ------------------------------------------------------------------------


def proc_status(pid: int | str, field_name: str) -> int | None:
    """One numeric field of /proc/PID/status (VmRSS, VmHWM in kB; Threads), or None when
    unreadable; ``pid`` may be ``"self"``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"
