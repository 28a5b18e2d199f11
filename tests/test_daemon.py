"""daemon: ``cntr-sync run`` as a real subprocess against the emulator over real HTTP.

The emulator (``EmulatorServer``) runs in the test process; the daemon runs as
``cntr-sync run --config FILE`` with its JSON log lines read from stdout by a
background thread, so the pipe never fills. Every wait is bounded by
``wait_until``, and every daemon started is killed at teardown if still running.
The observer-restart test runs the daemon in-process (``daemon.running``), since
it has to reach into a pair's watcher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cntr_sync.api import ContainersClient
from cntr_sync.apply import TRANSFER_THREAD_PREFIX
from cntr_sync.daemon import STALL_MARGIN, Daemon, running, stall_limit
from cntr_sync.emulator import EmulatorServer, FaultConfig, ManualClock
from cntr_sync.errors import NotFoundError
from helpers import assert_exact_mirror, local_tree, remote_bytes, remote_name_counts

# Every test runs the daemon as a subprocess.
pytestmark = pytest.mark.e2e

API_KEY = "sk-test"
CLI = Path(sys.executable).with_name("cntr-sync")
QUIET_PERIOD = 0.3
FLUSH_TIMEOUT = 5.0
START_TIMEOUT = 20.0  # process start, imports and the first "daemon started" line
SYNC_TIMEOUT = 15.0  # a change reaching the container, on a loaded 2-core machine
PAIR_DEFAULTS: dict[str, Any] = {
    "quiet_period": QUIET_PERIOD,
    "max_delay": 3.0,
    "rescan_interval": 600.0,
    "remote_poll_interval": 600.0,
}

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {text}")
        time.sleep(interval)


# -- configuration ----------------------------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def pair(name: str, local: Path, container: str | None = None, **settings: Any) -> dict[str, Any]:
    """One [[pairs]] table: the test defaults, then ``settings``."""
    return {
        "name": name,
        "local": local,
        "container": container or name,
        **PAIR_DEFAULTS,
        **settings,
    }


def write_config(path: Path, pairs: Sequence[Mapping[str, Any]], **settings: Any) -> Path:
    top: dict[str, Any] = {
        "http_listen": "127.0.0.1:0",
        "requests_per_second": 1000,
        "state_dir": path.parent / "state",
        "flush_timeout": FLUSH_TIMEOUT,
        **settings,
    }
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for table in pairs:
        lines += ["", "[[pairs]]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tree(root: Path, files: Mapping[str, bytes | str]) -> Path:
    for relpath, content in files.items():
        target = root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)
    return root


# -- the daemon process ---------------------------------------------------------------------


class DaemonProcess:
    """``cntr-sync run`` with stdout (JSON events) and stderr read by background threads."""

    def __init__(
        self, config: Path | None, env: Mapping[str, str], args: Sequence[str] = ()
    ) -> None:
        where = ["--config", str(config)] if config is not None else []
        self.proc = subprocess.Popen(
            [str(CLI), "run", *where, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._lock = threading.Lock()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._events: list[dict[str, Any]] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.url = ""

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            event: dict[str, Any] | None = None
            if sink is self._stdout:
                try:
                    parsed = json.loads(line)
                except ValueError:
                    parsed = None
                event = parsed if isinstance(parsed, dict) else None
            with self._lock:
                sink.append(line)
                if event is not None:
                    self._events.append(event)

    # -- output ------------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    def events(
        self, name: str | None = None, since: int = 0, **fields: Any
    ) -> list[dict[str, Any]]:
        """Log events from index ``since`` on, named ``name`` and carrying ``fields``."""
        with self._lock:
            events = self._events[since:]
        return [
            event
            for event in events
            if (name is None or event.get("event") == name)
            and all(event.get(key) == value for key, value in fields.items())
        ]

    def mark(self) -> int:
        """The index of the next event, for ``events(since=...)``."""
        with self._lock:
            return len(self._events)

    def describe(self) -> str:
        code = self.proc.poll()
        state = "running" if code is None else f"exited with {code}"
        tail = "".join(self._stdout[-15:]) + "".join(self._stderr[-15:])
        return f"daemon {state}; last output:\n{tail}"

    # -- waiting -------------------------------------------------------------------------

    def wait_for(
        self,
        predicate: Callable[[], T],
        what: str | Callable[[], str],
        timeout: float = SYNC_TIMEOUT,
    ) -> T:
        """``wait_until`` that fails at once, with the output, when the daemon died."""

        def text() -> str:
            return what() if callable(what) else what

        def checked() -> T:
            value = predicate()
            if not value and self.proc.poll() is not None:
                pytest.fail(f"the daemon died while waiting for {text()}: {self.describe()}")
            return value

        return wait_until(checked, timeout, message=lambda: f"{text()}\n{self.describe()}")

    def wait_for_event(
        self, name: str, since: int = 0, timeout: float = SYNC_TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        found = self.wait_for(
            lambda: self.events(name, since, **fields), f"log event {name!r} {fields}", timeout
        )
        return found[0]

    def wait_started(self) -> None:
        started = self.wait_for_event("daemon started", timeout=START_TIMEOUT)
        self.url = str(started["http"]).rstrip("/")
        assert self.url.startswith("http://127.0.0.1:")

    # -- HTTP endpoint -----------------------------------------------------------------

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10.0)

    def status(self) -> dict[str, Any]:
        response = self.get("/status")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def pair_status(self, name: str) -> dict[str, Any]:
        pairs: dict[str, Any] = self.status()["pairs"]
        assert name in pairs, f"/status lists {sorted(pairs)}, not {name}"
        return dict(pairs[name])

    def wait_idle(self, name: str) -> None:
        """Until the pair has finished its pass and nothing is pending: no pass is coming."""
        self.wait_for(
            lambda: (s := self.pair_status(name))["state"] == "idle" and not s["pending_changes"],
            f"{name} idle with nothing pending",
        )

    def wait_ready(self, timeout: float = SYNC_TIMEOUT) -> None:
        self.wait_for(lambda: self.get("/readyz").status_code == 200, "/readyz 200", timeout)

    def container_id(self, name: str) -> str:
        found = self.wait_for(
            lambda: self.pair_status(name)["container_id"], f"a container id for {name}"
        )
        return str(found)

    def metrics(self) -> list[Sample]:
        response = self.get("/metrics")
        assert response.status_code == 200
        return [
            sample
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        ]

    # -- stopping --------------------------------------------------------------------------

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not exit within {timeout:.1f}s: {self.describe()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def metric_total(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """The sum of every sample ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text, (
            f"the API key leaked: ...{text[max(0, text.find(API_KEY) - 200) :][:400]}"
        )


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer("127.0.0.1", 0, control=True, data_dir=tmp_path / "emulator") as served:
        yield served


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[ContainersClient]:
    with ContainersClient(API_KEY, base_url=server.base_url) as api:
        yield api


@pytest.fixture
def env(server: EmulatorServer, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CNTR_SYNC_", "OPENAI_"))
    }
    return {
        **inherited,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": API_KEY,
        "HOME": str(home),
    }


@pytest.fixture
def start_daemon(env: dict[str, str]) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``cntr-sync run``, wait for "daemon started"; every one is killed at teardown."""
    started: list[DaemonProcess] = []

    def start(config: Path | None, *args: str) -> DaemonProcess:
        daemon = DaemonProcess(config, env, args)
        started.append(daemon)
        daemon.wait_started()
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def wait_for_mirror(
    daemon: DaemonProcess,
    client: ContainersClient,
    pair_name: str,
    root: Path,
    timeout: float = SYNC_TIMEOUT,
) -> str:
    """Wait until the pair's container is an exact mirror of ``root``; its id."""
    last_problem = ["nothing checked yet"]

    def mirrored() -> str | None:
        container_id = daemon.pair_status(pair_name)["container_id"]
        if not container_id:
            last_problem[0] = "no container id yet"
            return None
        expected = Counter(local_tree(root).keys())
        names = remote_name_counts(client, container_id)
        if names != expected:
            missing, extra = expected - names, names - expected
            last_problem[0] = f"missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
            return None
        try:
            assert_exact_mirror(client, container_id, root)
        except (AssertionError, NotFoundError) as exc:
            # NotFoundError: a file replaced by the daemon between listing and download.
            last_problem[0] = str(exc)
            return None
        return str(container_id)

    container_id = daemon.wait_for(
        mirrored, lambda: f"an exact mirror of {root.name} ({last_problem[0]})", timeout=timeout
    )
    assert container_id is not None
    return container_id


def passes_since(daemon: DaemonProcess, mark: int, pair_name: str) -> list[dict[str, Any]]:
    return daemon.events("sync pass", since=mark, pair=pair_name)


# -- 1. start, readiness, first change ---------------------------------------------------------


def test_readyz_waits_for_the_first_sync_then_changes_flow(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha", "sub/b.txt": "beta"})
    config = write_config(tmp_path / "daemon.toml", [pair("docs", root)])
    server.emulator.set_faults(FaultConfig(latency_ms=500))  # a slow first sync

    daemon = start_daemon(config)
    daemon.wait_for(lambda: "docs" in daemon.status()["pairs"], "the pair's worker")
    assert daemon.get("/readyz").status_code == 503  # the first sync is under way
    assert daemon.get("/livez").status_code == 200
    assert daemon.pair_status("docs")["first_sync_done"] is False
    server.emulator.set_faults(FaultConfig())

    daemon.wait_ready()
    assert daemon.get("/livez").status_code == 200
    wait_for_mirror(daemon, client, "docs", root)
    container_id = daemon.container_id("docs")

    started = time.monotonic()
    (root / "later.txt").write_text("written after the first sync")
    daemon.wait_for(
        lambda: remote_bytes(client, container_id, "later.txt") == b"written after the first sync",
        "later.txt remotely",
        timeout=10.0,
    )
    elapsed = time.monotonic() - started
    assert elapsed <= QUIET_PERIOD + 2.0, f"a new file took {elapsed:.2f}s to arrive"
    assert_exact_mirror(client, container_id, root)


# -- 2. editors, renames, slow writers, bursts ---------------------------------------------------


def test_editor_atomic_save_uploads_the_new_content_once(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"notes.md": "version 1\n", "other.txt": "x"})
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))
    daemon.wait_ready()
    container_id = wait_for_mirror(daemon, client, "docs", root)
    before = server.emulator.counts()
    mark = daemon.mark()

    # What vim does: a swap file lives while editing; the save writes a temp file
    # and renames it over the target.
    swap = root / ".notes.md.swp"
    swap.write_bytes(b"\x00swap")
    temp = root / "notes.md.tmp"
    with temp.open("wb") as handle:
        handle.write(b"version 2, saved atomically\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, root / "notes.md")

    daemon.wait_for(
        lambda: remote_bytes(client, container_id, "notes.md") == b"version 2, saved atomically\n",
        "the saved notes.md remotely",
    )
    daemon.wait_idle("docs")  # the pass is done and nothing more is pending
    names = remote_name_counts(client, container_id)
    assert names == Counter({"notes.md": 1, "other.txt": 1})
    after = server.emulator.counts()
    assert after["create_file"] - before["create_file"] == 1
    assert after["delete_file"] - before["delete_file"] == 1
    # The passes the events started looked at the paths they named, without a listing.
    passes = passes_since(daemon, mark, "docs")
    assert passes
    assert [event["listed"] for event in passes] == [False] * len(passes)
    assert sum(event["requests"] for event in passes) == 2
    swap.unlink()
    assert_exact_mirror(client, container_id, root)


def test_directory_rename_leaves_no_old_names(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    files = {f"drafts/part-{number:02}.md": f"part {number}\n" for number in range(50)}
    root = make_tree(tmp_path / "docs", {**files, "index.md": "index"})
    # The rename deletes 50 of 51 tracked names, but the same content arrives
    # under the new names: a move, which the default max_delete brake lets through.
    config = write_config(tmp_path / "daemon.toml", [pair("docs", root)])
    daemon = start_daemon(config)
    daemon.wait_ready()
    wait_for_mirror(daemon, client, "docs", root)

    (root / "drafts").rename(root / "chapters")
    container_id = wait_for_mirror(daemon, client, "docs", root)
    names = remote_name_counts(client, container_id)
    assert not [name for name in names if name.startswith("drafts/")]
    assert sum(1 for name in names if name.startswith("chapters/")) == 50


def test_moves_in_and_out_of_the_root_end_in_an_exact_mirror(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"stay.md": "stay", "leaving.md": "bye"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "arriving.md").write_text("hello")
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))
    daemon.wait_ready()
    wait_for_mirror(daemon, client, "docs", root)

    (root / "leaving.md").rename(outside / "leaving.md")  # out of the root
    (outside / "arriving.md").rename(root / "arriving.md")  # into the root
    container_id = wait_for_mirror(daemon, client, "docs", root)
    assert set(remote_name_counts(client, container_id)) == {"stay.md", "arriving.md"}


def test_a_file_written_in_chunks_is_uploaded_once_whole(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "logs", {"seed.txt": "seed"})
    # Chunks 0.3 s apart with a 1 s quiet period: the writer never goes quiet long
    # enough for a "changes" pass, and max_delay (10 s) is longer than the whole
    # write (3 s). Remote polls (every second) wait while changes are settling, and
    # a pass that did run would defer the file through the settle window (tested
    # in test_engine), so only the finished file is sent.
    config = write_config(
        tmp_path / "daemon.toml",
        [pair("logs", root, quiet_period=1.0, max_delay=10.0, remote_poll_interval=1.0)],
    )
    daemon = start_daemon(config)
    daemon.wait_ready()
    container_id = wait_for_mirror(daemon, client, "logs", root)
    before = server.emulator.counts()["create_file"]
    mark = daemon.mark()

    chunks = [f"chunk {number:02} ".encode() * 500 + b"\n" for number in range(10)]
    with (root / "growing.log").open("wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            time.sleep(0.3)

    whole = b"".join(chunks)
    daemon.wait_for(
        lambda: remote_bytes(client, container_id, "growing.log") == whole,
        "the whole growing.log remotely",
    )
    daemon.wait_idle("logs")  # the pass is done and nothing more is pending
    assert server.emulator.counts()["create_file"] - before == 1
    uploads = sum(
        event["uploaded"] + event["replaced"] for event in passes_since(daemon, mark, "logs")
    )
    assert uploads == 1
    assert remote_name_counts(client, container_id)["growing.log"] == 1
    assert_exact_mirror(client, container_id, root)


def test_a_burst_of_500_files_is_coalesced_into_few_passes(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "data", {"seed.txt": "seed"})
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("data", root)]))
    daemon.wait_ready()
    wait_for_mirror(daemon, client, "data", root)
    mark = daemon.mark()
    passes_before = daemon.pair_status("data")["passes"]

    for number in range(500):
        (root / "burst" / f"{number // 100}").mkdir(parents=True, exist_ok=True)
        (root / "burst" / f"{number // 100}" / f"f{number:03}.bin").write_bytes(
            number.to_bytes(2, "big") * 8
        )

    wait_for_mirror(daemon, client, "data", root, timeout=30.0)
    passes = passes_since(daemon, mark, "data")
    assert 1 <= len(passes) <= 5, [(p["reason"], p["uploaded"], p["deferred"]) for p in passes]
    assert sum(p["uploaded"] for p in passes) == 500
    assert daemon.pair_status("data")["passes"] - passes_before <= 5


@pytest.mark.parametrize(
    "remote_poll_interval", [600.0, 0.5], ids=["no-polls", "polls-within-max-delay"]
)
def test_a_file_that_never_goes_quiet_is_sent_within_max_delay(
    tmp_path: Path, client: ContainersClient, start_daemon: Any, remote_poll_interval: float
) -> None:
    root = make_tree(tmp_path / "logs", {"seed.txt": "seed"})
    max_delay = 2.0
    config = write_config(
        tmp_path / "daemon.toml",
        [pair("logs", root, max_delay=max_delay, remote_poll_interval=remote_poll_interval)],
    )
    daemon = start_daemon(config)
    daemon.wait_ready()
    container_id = wait_for_mirror(daemon, client, "logs", root)
    mark = daemon.mark()

    # A line every 0.1 s: never quiet for quiet_period (0.3 s), so only max_delay
    # ("overdue") can send it while it is being written.
    started = time.monotonic()
    arrived_after: float | None = None
    with (root / "app.log").open("ab") as log_file:
        while arrived_after is None and time.monotonic() - started < max_delay + 4.0:
            log_file.write(b"another line\n")
            log_file.flush()
            time.sleep(0.1)
            if "app.log" in remote_name_counts(client, container_id):
                arrived_after = time.monotonic() - started
    passes = [
        (p["reason"], p["uploaded"], p["deferred"]) for p in passes_since(daemon, mark, "logs")
    ]
    assert arrived_after is not None, f"never sent while written; passes: {passes}"
    assert arrived_after <= max_delay + 1.5, f"sent after {arrived_after:.2f}s; passes: {passes}"


def test_a_log_appended_every_5_ms_is_mirrored_without_a_pass_storm(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "logs", {"seed.txt": "seed"})
    max_delay = 2.0
    config = write_config(tmp_path / "daemon.toml", [pair("logs", root, max_delay=max_delay)])
    daemon = start_daemon(config)
    daemon.wait_ready()
    container_id = wait_for_mirror(daemon, client, "logs", root)
    mark = daemon.mark()
    started = time.monotonic()
    arrived = False
    with (root / "busy.log").open("ab") as log_file:
        while time.monotonic() - started < 8.0:
            log_file.write(b"x" * 200 + b"\n")
            log_file.flush()
            time.sleep(0.005)
            arrived = arrived or "busy.log" in remote_name_counts(client, container_id)
    passes = passes_since(daemon, mark, "logs")
    # One pass per max_delay or per minimum gap, not one per deferral (hundreds).
    summary = [(p["reason"], p["uploaded"] + p["replaced"], p["deferred"]) for p in passes]
    # Overdue passes send the log as it is at that moment: nothing deferred, no retries.
    assert all(p["deferred"] == 0 for p in passes if p["reason"] == "overdue"), summary
    assert len(passes) <= 12, [(p["reason"], p["uploaded"], p["deferred"]) for p in passes]
    assert arrived, [(p["reason"], p["uploaded"], p["deferred"]) for p in passes]
    wait_for_mirror(daemon, client, "logs", root)


def test_a_file_written_during_startup_does_not_make_the_first_pass_spin(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "logs", {"seed.txt": "seed"})
    log_path = root / "app.log"
    log_path.write_bytes(b"start\n")
    config = write_config(
        tmp_path / "daemon.toml", [pair("logs", root, quiet_period=1.0, max_delay=3.0)]
    )
    started = time.monotonic()
    daemon = start_daemon(config)
    # Written every 0.3 s: younger than quiet_period at every pass, so only
    # max_delay sends it; the first pass must wait for that, not repeat at once.
    with log_path.open("ab") as log_file:
        while time.monotonic() - started < 5.0:
            log_file.write(b"line\n")
            log_file.flush()
            time.sleep(0.3)
    passes = [(p["reason"], p["uploaded"], p["deferred"]) for p in passes_since(daemon, 0, "logs")]
    assert len(passes) <= 4, passes
    daemon.wait_ready()
    wait_for_mirror(daemon, client, "logs", root)


# -- 3. polling and no watching ---------------------------------------------------------------


def create_modify_delete(daemon: DaemonProcess, client: ContainersClient, root: Path) -> None:
    container_id = wait_for_mirror(daemon, client, "docs", root)
    (root / "created.txt").write_text("new file")
    daemon.wait_for(
        lambda: remote_bytes(client, container_id, "created.txt") == b"new file", "a create"
    )
    (root / "kept.txt").write_text("kept, and modified to a new size")
    daemon.wait_for(
        lambda: (
            remote_bytes(client, container_id, "kept.txt") == b"kept, and modified to a new size"
        ),
        "a modification",
    )
    (root / "created.txt").unlink()
    daemon.wait_for(
        lambda: "created.txt" not in remote_name_counts(client, container_id), "a deletion"
    )
    assert_exact_mirror(client, container_id, root)


def test_polling_mode_syncs_create_modify_delete(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"kept.txt": "kept", "other.txt": "other"})
    config = write_config(tmp_path / "daemon.toml", [pair("docs", root, watch="poll")])
    daemon = start_daemon(config)
    daemon.wait_ready()
    assert daemon.pair_status("docs")["watch"] == "poll"
    create_modify_delete(daemon, client, root)
    assert not daemon.events("sync pass", reason="rescan")


def test_watch_off_converges_through_rescans(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"kept.txt": "kept", "other.txt": "other"})
    config = write_config(
        tmp_path / "daemon.toml", [pair("docs", root, watch="off", rescan_interval=1.0)]
    )
    daemon = start_daemon(config)
    daemon.wait_ready()
    assert daemon.pair_status("docs")["watch"] == "off"
    create_modify_delete(daemon, client, root)
    assert daemon.events("sync pass", reason="rescan")


# -- 4. a dead observer is restarted (in-process) ------------------------------------------------


def test_a_killed_observer_is_restarted_and_changes_still_sync(
    tmp_path: Path, client: ContainersClient, env: dict[str, str]
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    config = write_config(tmp_path / "daemon.toml", [pair("docs", root, watch="native")])
    daemon = Daemon(config, environ=env)
    with running(daemon):
        wait_until(
            lambda: "docs" in daemon.workers and daemon.workers["docs"].status.first_sync_done,
            SYNC_TIMEOUT,
            message="the first sync of docs",
        )
        worker = daemon.workers["docs"]
        observer = worker.watcher.observer
        assert observer is not None
        observer.stop()
        observer.join(5.0)

        wait_until(
            lambda: worker.status.observer_restarts >= 1,
            SYNC_TIMEOUT,
            message="the observer to be restarted",
        )
        status = httpx.get(daemon.health.url.rstrip("/") + "/status", timeout=10.0).json()
        assert status["pairs"]["docs"]["observer_restarts"] >= 1
        assert status["pairs"]["docs"]["watch"] == "native"
        assert worker.watcher.observer is not observer
        assert worker.watcher.alive

        container_id = worker.status.container_id
        assert container_id
        (root / "after.txt").write_text("seen by the new observer")
        wait_until(
            lambda: remote_bytes(client, container_id, "after.txt") == b"seen by the new observer",
            SYNC_TIMEOUT,
            message="after.txt remotely",
        )
        assert_exact_mirror(client, container_id, root)


# -- 4a. many pairs: one observer, a bounded pool, no thread per pair (in-process) -------------


def test_pairs_share_one_observer_and_a_pool_of_max_parallel_passes(
    tmp_path: Path, client: ContainersClient, env: dict[str, str]
) -> None:
    roots = [make_tree(tmp_path / f"p{n}", {f"f{n}.txt": f"file {n}"}) for n in range(6)]
    config = write_config(
        tmp_path / "daemon.toml",
        [pair(f"p{n}", root, watch="native") for n, root in enumerate(roots)],
        max_parallel_passes=2,
    )
    daemon = Daemon(config, environ=env)
    with running(daemon):
        wait_until(
            lambda: len(daemon.workers) == 6 and daemon.ready(),
            SYNC_TIMEOUT,
            message="the first sync of six pairs",
        )
        [observer] = daemon.observers.observers
        assert all(w.watcher.observer is observer for w in daemon.workers.values())
        assert len(observer.emitters) == 6  # watchdog's one emitter thread per root
        assert daemon.scheduler.threads <= 2
        names = [thread.name for thread in threading.enumerate()]
        assert not [name for name in names if name.startswith("pair-")]

        # A change in one pair wakes it; the others stay idle.
        (roots[3] / "new.txt").write_text("woken")
        container_id = daemon.workers["p3"].status.container_id
        assert container_id
        wait_until(
            lambda: remote_bytes(client, container_id, "new.txt") == b"woken",
            SYNC_TIMEOUT,
            message="new.txt in p3's container",
        )

        # A reload that changes only the pool resizes it and restarts no pair.
        workers = dict(daemon.workers)
        write_config(
            config,
            [pair(f"p{n}", root, watch="native") for n, root in enumerate(roots)],
            max_parallel_passes=3,
        )
        daemon.reload()
        assert daemon.scheduler.max_parallel == 3
        assert all(daemon.workers[name] is worker for name, worker in workers.items())


class ThreadSampler:
    """Samples, until stopped, the most transfer threads alive and passes running at once."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.most_transfer_threads = 0
        self.most_passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            threads = [t.name for t in threading.enumerate()]
            transfer_threads = [n for n in threads if n.startswith(TRANSFER_THREAD_PREFIX)]
            self.most_transfer_threads = max(self.most_transfer_threads, len(transfer_threads))
            self.most_passes = max(self.most_passes, len(self.daemon.scheduler.running()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def test_the_passes_of_all_pairs_share_one_pool_of_concurrency_transfer_threads(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, env: dict[str, str]
) -> None:
    files = {f"f{number}.txt": f"file {number}" for number in range(8)}
    roots = [make_tree(tmp_path / f"p{n}", files) for n in range(6)]
    config = write_config(
        tmp_path / "daemon.toml",
        [pair(f"p{n}", root, watch="off") for n, root in enumerate(roots)],
        max_parallel_passes=3,
        concurrency=2,
    )
    # Slow answers: the first syncs of the six pairs run side by side, three at a time.
    server.emulator.set_faults(FaultConfig(latency_ms=40))
    daemon = Daemon(config, environ=env)
    sampler = ThreadSampler(daemon)
    try:
        with running(daemon):
            wait_until(
                lambda: len(daemon.workers) == 6 and daemon.ready(),
                SYNC_TIMEOUT * 2,
                message="the first sync of six pairs",
            )
            for worker in daemon.workers.values():
                container_id = worker.status.container_id
                assert container_id
                assert len(remote_name_counts(client, container_id)) == len(files)
    finally:
        sampler.stop()
    # Passes of several pairs ran at once, and all their transfers on the one pool.
    assert sampler.most_passes >= 2
    assert 1 <= sampler.most_transfer_threads <= 2
    # The daemon shut its pool down when it stopped.
    with pytest.raises(RuntimeError):
        daemon.transfers.submit(lambda: None)
    alive = [t.name for t in threading.enumerate() if t.name.startswith(TRANSFER_THREAD_PREFIX)]
    assert alive == []


def test_a_reload_that_changes_concurrency_gives_the_passes_a_new_pool(
    tmp_path: Path, client: ContainersClient, env: dict[str, str]
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    config = write_config(
        tmp_path / "daemon.toml", [pair("docs", root, watch="native")], concurrency=2
    )
    daemon = Daemon(config, environ=env)
    with running(daemon):
        wait_until(daemon.ready, SYNC_TIMEOUT, message="the first sync")
        old = daemon.transfers
        write_config(config, [pair("docs", root, watch="native")], concurrency=3)
        daemon.reload()
        assert daemon.transfers is not old
        with pytest.raises(RuntimeError):  # shut down: the restarted pair uses the new one
            old.submit(lambda: None)
        container_id = wait_until(
            lambda: daemon.workers["docs"].status.container_id,
            SYNC_TIMEOUT,
            message="the restarted pair's first pass",
        )
        assert container_id
        (root / "b.txt").write_text("beta")
        wait_until(
            lambda: remote_bytes(client, container_id, "b.txt") == b"beta",
            SYNC_TIMEOUT,
            message="b.txt in the container after the reload",
        )


# -- 4b. a hung pair is not live --------------------------------------------------------------


def test_a_pair_without_progress_makes_the_daemon_not_live(
    tmp_path: Path, server: EmulatorServer, env: dict[str, str]
) -> None:
    clock = ManualClock(1000.0)
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    config = write_config(tmp_path / "daemon.toml", [pair("docs", root)], timeout=600.0)
    # The first pass creates the container; that request now takes 4 s of real time,
    # during which the pair shows no progress at all.
    server.emulator.set_faults(
        FaultConfig(latency_ms=4000, only_operations=frozenset({"create_container"}))
    )
    daemon = Daemon(config, environ=env, clock=clock)
    limit = stall_limit(daemon.settings)
    assert limit == 600.0 + STALL_MARGIN  # the HTTP timeout is the longest quiet moment
    with running(daemon):
        wait_until(
            lambda: server.emulator.counts()["create_container"] >= 1,
            SYNC_TIMEOUT,
            message="the create request to be in flight",
        )
        assert daemon.live()
        clock.advance(limit + 1)
        # The main loop keeps beating on the advanced clock; the pair cannot.
        wait_until(lambda: clock() - daemon.heartbeat < 1, 2.0, message="a main-loop beat")
        assert daemon.stalled_pairs() == ["docs"]
        assert not daemon.live()
        livez = httpx.get(daemon.health.url + "/livez", timeout=5.0)
        assert livez.status_code == 503
        status = httpx.get(daemon.health.url + "/status", timeout=5.0).json()
        assert status["pairs"]["docs"]["seconds_since_progress"] >= limit
        # When the request answers, the pair moves again and the daemon is live.
        wait_until(daemon.live, SYNC_TIMEOUT, message="the pair to make progress again")
        assert daemon.stalled_pairs() == []
        assert httpx.get(daemon.health.url + "/livez", timeout=5.0).status_code == 200


# -- 4c. two-way: what the model writes comes home -------------------------------------------


def test_both_brings_a_model_written_file_home_within_the_poll_interval(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "work", {"input.csv": "a,b\n1,2\n"})
    poll = 1.0
    config = write_config(
        tmp_path / "daemon.toml",
        [pair("work", root, direction="both", remote_poll_interval=poll)],
    )
    daemon = start_daemon(config)
    daemon.wait_ready()
    container_id = daemon.container_id("work")
    daemon.wait_for(
        lambda: remote_bytes(client, container_id, "input.csv") == b"a,b\n1,2\n",
        "input.csv pushed",
    )
    written_at = time.monotonic()
    server.emulator.add_assistant_file(container_id, "/mnt/data/charts/plot.png", b"\x89PNG...")
    target = root / "charts" / "plot.png"
    daemon.wait_for(target.exists, "plot.png on disk", timeout=poll + 2.0)
    assert time.monotonic() - written_at <= poll + 2.0
    assert target.read_bytes() == b"\x89PNG..."
    downloads = metric_total(
        daemon.metrics(), "cntr_sync_files_transferred_total", pair="work", action="download"
    )
    assert downloads == 1
    # The pulled file is not pushed back: the container holds the model's copy only.
    uploads = server.emulator.counts()["create_file"]
    daemon.wait_idle("work")
    assert remote_name_counts(client, container_id)["charts/plot.png"] == 1
    assert server.emulator.counts()["create_file"] == uploads


def test_a_full_pass_that_defers_a_file_waits_for_that_file_alone(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    """The first pass (full: it lists) defers a file still being written; the passes
    that wait for it scan that file only and list nothing."""
    root = make_tree(tmp_path / "docs", {"a.md": "a", "busy.md": "being written"})
    soon = time.time() + 3.0  # "modified a moment ago" until then
    os.utime(root / "busy.md", (soon, soon))
    # Settled however fast the daemon starts (it can scan within the 0.3 s quiet period).
    past = time.time() - 60.0
    os.utime(root / "a.md", (past, past))
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))

    def passes() -> list[dict[str, Any]]:
        return [e for e in daemon.events() if e.get("event") == "sync pass"]

    daemon.wait_for(lambda: len(passes()) >= 2, "a second pass")
    first, second = passes()[:2]
    assert first["reason"] == "initial" and first["listed"] and first["deferred"] == 1
    assert not second["listed"]
    container_id = wait_for_mirror(daemon, client, "docs", root)
    assert remote_name_counts(client, container_id)["busy.md"] == 1


def test_steady_local_changes_do_not_hold_back_the_remote_poll(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    """A file edited every 5 ms keeps changes pending, so only overdue passes run,
    and they are incremental: the poll that is due must make one of them full, or
    what the model writes would never come home while the user works."""
    root = make_tree(tmp_path / "work", {"log.txt": "0\n"})
    config = write_config(
        tmp_path / "daemon.toml",
        [pair("work", root, direction="both", max_delay=1.0, remote_poll_interval=2.0)],
    )
    daemon = start_daemon(config)
    daemon.wait_ready()
    container_id = daemon.container_id("work")
    stop = threading.Event()

    def keep_writing() -> None:
        number = 0
        while not stop.wait(0.005):
            number += 1
            (root / "log.txt").write_text(f"{number}\n")

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        time.sleep(1.5)  # churn under way: every pass from now on is overdue
        server.emulator.add_assistant_file(container_id, "/mnt/data/answer.md", b"42\n")
        daemon.wait_for(
            (root / "answer.md").exists, "answer.md on disk while log.txt keeps changing"
        )
        assert (root / "answer.md").read_bytes() == b"42\n"
    finally:
        stop.set()
        writer.join(timeout=5.0)


# -- 4d. one pair from flags, no config file (the sidecar habit) -----------------------------


def test_run_directory_with_flags_and_no_config_file(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "work", {"a.txt": "alpha"})
    daemon = start_daemon(
        None,
        str(root),
        "--container",
        "sidecar",
        "--state-dir",
        str(tmp_path / "state"),
        "--http-listen",
        "127.0.0.1:0",
        "--direction",
        "both",
        "--quiet-period",
        "0.3",
        "--remote-poll-interval",
        "1",
        "--requests-per-second",
        "1000",
    )
    daemon.wait_ready()
    assert daemon.pair_status("default")["local"] == str(root)
    container_id = daemon.container_id("default")
    assert client.retrieve_container(container_id).name == "sidecar"
    (root / "b.txt").write_text("beta")
    daemon.wait_for(lambda: remote_bytes(client, container_id, "b.txt") == b"beta", "b.txt up")
    server.emulator.add_assistant_file(container_id, "/mnt/data/c.txt", b"gamma")
    daemon.wait_for((root / "c.txt").exists, "c.txt home")


# -- 5. one broken pair does not stop the others --------------------------------------------------


def good_and_broken_pairs(tmp_path: Path, server: EmulatorServer) -> tuple[Path, Path]:
    """A healthy pair "good" and a pair whose container the emulator refuses; the
    good root and the config file."""
    server.emulator.set_faults(FaultConfig(broken_container_names=frozenset({"broken"})))
    good = make_tree(tmp_path / "good", {"a.txt": "alpha"})
    bad = make_tree(tmp_path / "bad", {"b.txt": "beta"})
    config = write_config(
        tmp_path / "daemon.toml",
        [pair("good", good), pair("bad", bad, container="broken")],
        max_retries=1,
    )
    return good, config


def test_a_broken_pair_is_isolated(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    good, config = good_and_broken_pairs(tmp_path, server)
    daemon = start_daemon(config)
    daemon.wait_for(
        lambda: daemon.pair_status("bad")["state"] == "error", "the broken pair in error"
    )
    container_id = wait_for_mirror(daemon, client, "good", good)

    (good / "more.txt").write_text("still syncing")
    daemon.wait_for(
        lambda: remote_bytes(client, container_id, "more.txt") == b"still syncing",
        "more.txt in the healthy pair",
    )
    daemon.wait_for(lambda: daemon.pair_status("good")["state"] == "idle", "the healthy pair idle")

    status = daemon.status()
    broken = status["pairs"]["bad"]
    assert broken["state"] == "error"
    assert broken["last_error"]
    assert API_KEY not in broken["last_error"]
    assert broken["first_sync_done"] is False
    assert status["pairs"]["good"]["first_sync_done"] is True
    assert status["ready"] is False
    assert daemon.get("/readyz").status_code == 503
    assert daemon.get("/livez").status_code == 200
    assert not [c for c in client.iter_containers() if c.name == "broken"]


# -- 6. the container expires while the daemon runs ---------------------------------------------


def test_an_expired_container_is_recreated_and_refilled(
    tmp_path: Path, server: EmulatorServer, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha", "deep/b.txt": "beta"})
    id_file = tmp_path / "container-id"
    config = write_config(tmp_path / "daemon.toml", [pair("docs", root, container_id_file=id_file)])
    daemon = start_daemon(config)
    daemon.wait_ready()
    old_id = wait_for_mirror(daemon, client, "docs", root)
    assert id_file.read_text().strip() == old_id

    server.emulator.expire_container(old_id)
    (root / "c.txt").write_text("written after the expiry")

    new_id = daemon.wait_for(
        lambda: (cid := daemon.pair_status("docs")["container_id"]) != old_id and cid,
        "a new container id in /status",
    )
    assert wait_for_mirror(daemon, client, "docs", root) == new_id
    assert client.retrieve_container(new_id).name == "docs"
    assert client.retrieve_container(old_id).status == "expired"
    daemon.wait_for(lambda: id_file.read_text().strip() == new_id, "the new id in the id file")
    recreations = metric_total(
        daemon.metrics(), "cntr_sync_container_recreations_total", pair="docs"
    )
    assert recreations == 1


# -- 7. stopping ---------------------------------------------------------------------------------


def test_sigterm_flushes_a_fresh_write_and_exits_0(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))
    daemon.wait_ready()
    container_id = wait_for_mirror(daemon, client, "docs", root)

    (root / "last-words.txt").write_text("written just before the stop")
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(FLUSH_TIMEOUT + 5.0) == 0
    elapsed = time.monotonic() - started
    assert elapsed <= FLUSH_TIMEOUT + 2.0, f"stopping took {elapsed:.2f}s"
    assert_exact_mirror(client, container_id, root)
    assert daemon.events("daemon stopped")


def test_a_second_sigterm_skips_a_slow_flush(
    tmp_path: Path, server: EmulatorServer, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))
    daemon.wait_ready()
    mark = daemon.mark()

    server.emulator.set_faults(FaultConfig(latency_ms=4000))
    requests_before = sum(server.emulator.counts().values())
    (root / "slow.txt").write_text("never mind")
    daemon.send(signal.SIGTERM)
    daemon.wait_for_event("flushing pending changes before stopping", since=mark)
    # The flush's first request is in the server, where it takes 4 s.
    daemon.wait_for(
        lambda: sum(server.emulator.counts().values()) > requests_before,
        "the flush's first request",
    )

    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    code = daemon.wait_exit(10.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"the second SIGTERM took {elapsed:.2f}s to stop the daemon"
    # Killed by the signal itself, as an unhandled SIGTERM would (a shell shows 143).
    assert code == -signal.SIGTERM
    server.emulator.set_faults(FaultConfig())


def test_sigterm_during_a_429_storm_exits_within_the_flush_bound(
    tmp_path: Path, server: EmulatorServer, start_daemon: Any
) -> None:
    """Issue 25, finding 8: every upload answers 429 with Retry-After: 60. The
    retry waits and the pacer's wait (the whole process pauses for the hint) end
    when the flush bound passes: the pass is cut short, not failed, and the
    process exits well before a supervisor's SIGKILL (systemd's TimeoutStopSec=60)."""
    root = make_tree(tmp_path / "docs", {f"f{number}.txt": f"file {number}" for number in range(6)})
    server.emulator.fail_next("create_file", 429, count=10_000, headers={"retry-after": "60"})
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))
    daemon.wait_for(
        lambda: server.emulator.counts().get("create_file", 0) >= 1, "the first refused upload"
    )
    mark = daemon.mark()

    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    code = daemon.wait_exit(FLUSH_TIMEOUT + 5.0)
    elapsed = time.monotonic() - started

    assert code == 0, daemon.describe()
    assert elapsed <= FLUSH_TIMEOUT + 5.0, f"stopping took {elapsed:.2f}s"
    assert daemon.events("daemon stopped", since=mark)
    # Cut short by the stop: neither a failed pass nor a backoff.
    assert not daemon.events("sync pass failed", since=mark), daemon.describe()
    cut_short = [e for e in daemon.events("sync pass", since=mark) if e.get("cancelled")]
    assert cut_short or daemon.events("sync pass stopped", since=mark), daemon.describe()


def test_a_quota_error_fails_the_pass_at_once_with_a_backoff_and_a_reason(
    tmp_path: Path, server: EmulatorServer, start_daemon: Any
) -> None:
    """Issue 25, finding 9: OpenAI's 429 ``insufficient_quota`` will not pass with
    waiting. The pass fails at its first such answer, /status says why, and the
    pair backs off; no file is tried five times."""
    files = 30
    root = make_tree(tmp_path / "docs", {f"f{number}.txt": "x" for number in range(files)})
    server.emulator.fail_next("create_file", 429, count=10_000, code="insufficient_quota")
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))

    failed = daemon.wait_for_event("sync pass failed", pair="docs")
    assert "insufficient_quota" in failed["error"]
    assert failed["retry_in"] > 0
    status = daemon.pair_status("docs")
    assert status["state"] == "error"
    assert "insufficient_quota" in status["last_error"]
    assert daemon.get("/readyz").status_code == 503
    # A pass sends at most the default concurrency (8) and the 8 handed out ahead,
    # not 5 attempts a file (the backoff's next pass may have begun meanwhile).
    uploads = server.emulator.counts()["create_file"]
    passes = len(daemon.events("sync pass failed", pair="docs")) + 1
    assert uploads <= 16 * passes < files * 5


# -- 8. SIGHUP -----------------------------------------------------------------------------------


def test_sighup_adds_and_removes_pairs(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    first = make_tree(tmp_path / "first", {"one.txt": "one"})
    second = make_tree(tmp_path / "second", {"two.txt": "two", "nested/three.txt": "three"})
    config = tmp_path / "daemon.toml"
    daemon = start_daemon(write_config(config, [pair("first", first)]))
    daemon.wait_ready()
    first_id = wait_for_mirror(daemon, client, "first", first)

    mark = daemon.mark()
    write_config(config, [pair("first", first), pair("second", second)])
    daemon.send(signal.SIGHUP)
    daemon.wait_for_event("settings reloaded", since=mark)
    wait_for_mirror(daemon, client, "second", second)
    assert set(daemon.status()["pairs"]) == {"first", "second"}
    assert not daemon.events("pair stopped", since=mark)  # an unchanged pair keeps running
    daemon.wait_ready()

    mark = daemon.mark()
    write_config(config, [pair("second", second)])
    daemon.send(signal.SIGHUP)
    daemon.wait_for_event("pair stopped", since=mark, pair="first")
    stopped_at = daemon.mark()
    daemon.wait_for(lambda: set(daemon.status()["pairs"]) == {"second"}, "only second listed")

    # The removed pair no longer syncs; the remaining one does.
    (first / "orphan.txt").write_text("not synced any more")
    (second / "more.txt").write_text("still synced")
    wait_for_mirror(daemon, client, "second", second)
    daemon.wait_idle("second")
    # No worker is left to see orphan.txt: none listed, none passing, nothing sent.
    assert not daemon.events("sync pass", since=stopped_at, pair="first")
    assert "orphan.txt" not in remote_name_counts(client, first_id)
    metrics = daemon.metrics()
    assert not [sample for sample in metrics if sample.labels.get("pair") == "first"]


def test_an_invalid_config_on_sighup_keeps_the_running_pairs(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    config = tmp_path / "daemon.toml"
    daemon = start_daemon(write_config(config, [pair("docs", root)]))
    daemon.wait_ready()
    wait_for_mirror(daemon, client, "docs", root)

    mark = daemon.mark()
    config.write_text(config.read_text() + "\nnot_a_setting = 1\n[[pairs\n", encoding="utf-8")
    daemon.send(signal.SIGHUP)
    failed = daemon.wait_for_event("reload failed; keeping the running settings", since=mark)
    assert "daemon.toml" in failed["error"]
    assert failed["level"] == "error"

    assert set(daemon.status()["pairs"]) == {"docs"}
    (root / "b.txt").write_text("after the failed reload")
    wait_for_mirror(daemon, client, "docs", root)
    assert daemon.proc.poll() is None
    assert daemon.get("/readyz").status_code == 200


# -- 9. metrics ----------------------------------------------------------------------------------


def test_metrics_parse_and_counters_move(
    tmp_path: Path, client: ContainersClient, start_daemon: Any
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    daemon = start_daemon(write_config(tmp_path / "daemon.toml", [pair("docs", root)]))
    daemon.wait_ready()
    wait_for_mirror(daemon, client, "docs", root)
    passes_before = daemon.pair_status("docs")["passes"]

    first = daemon.metrics()
    assert metric_total(first, "cntr_sync_build_info") == 1
    assert metric_total(first, "cntr_sync_pair_up", pair="docs") == 1

    (root / "b.txt").write_text("counted")
    wait_for_mirror(daemon, client, "docs", root)
    daemon.wait_for(
        lambda: daemon.pair_status("docs")["passes"] > passes_before, "the pass to be recorded"
    )
    second = daemon.metrics()

    def moved(name: str, **labels: str) -> float:
        return metric_total(second, name, **labels) - metric_total(first, name, **labels)

    assert moved("cntr_sync_passes_total", pair="docs") >= 1
    assert moved("cntr_sync_passes_total", pair="docs", result="success") >= 1
    assert moved("cntr_sync_files_transferred_total", pair="docs", action="upload") == 1
    assert moved("cntr_sync_bytes_transferred_total", pair="docs", direction="upload") == len(
        b"counted"
    )
    # One upload and nothing else: the index stands in for a listing between polls.
    assert moved("cntr_sync_api_requests_total") == 1
    assert moved("cntr_sync_api_requests_total", operation="create_file", status="200") == 1
    assert metric_total(second, "cntr_sync_last_success_timestamp_seconds", pair="docs") > 0


# -- 10. the key never shows -----------------------------------------------------------------------


@pytest.mark.parametrize("flags", [(), ("--debug",)], ids=["default", "debug"])
def test_the_api_key_never_appears(
    tmp_path: Path,
    server: EmulatorServer,
    client: ContainersClient,
    start_daemon: Any,
    flags: tuple[str, ...],
) -> None:
    good, config = good_and_broken_pairs(tmp_path, server)
    daemon = start_daemon(config, *flags)
    wait_for_mirror(daemon, client, "good", good)
    daemon.wait_for(lambda: daemon.pair_status("bad")["last_error"], "an error in the broken pair")
    (good / "b.txt").write_text("one more")
    wait_for_mirror(daemon, client, "good", good)

    pages = [daemon.get(path).text for path in ("/", "/status", "/metrics", "/livez", "/readyz")]
    daemon.send(signal.SIGTERM)
    daemon.wait_exit(FLUSH_TIMEOUT + 5.0)
    daemon.kill()  # joins the readers: all output is in
    assert daemon.events("sync pass failed")
    assert_no_key(daemon.stdout, daemon.stderr, *pages)
