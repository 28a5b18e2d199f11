"""Crash loop: SIGKILL the daemon 50 times in the middle of its passes; the mirror ends exact.

``cntr-sync run DIR --container NAME`` (one pair) runs as a subprocess against an
``EmulatorServer`` on 127.0.0.1 whose answers are slowed down, so a pass over
the tree takes long enough to be cut at many places. Each kill is SIGKILL once
the emulator has seen a random number (seeded ``random.Random``) of further
requests from that daemon; the killed process's requests are let finish in the
server, and a new daemon is started on the same state directory.

Phase 1 kills the large first pass (300 files, nothing in the container yet) 50
times: the kills land while the container is found or created, while it is
listed, and among the uploads. After the last restart the daemon converges.
Phase 2 then edits a third of the files (new sizes) and deletes a tenth while
the daemon is idle, and kills it 10 more times: the first kill cuts the pass
the watcher started, the rest cut the initial passes of restarted daemons
among replacements (upload, then delete of the old version) and deletions.

At the end (daemon stopped with SIGTERM): the container is an exact mirror
(every local file exactly once, same bytes, nothing else; only user uploads;
one container of that name), the index is intact (``PRAGMA integrity_check``
is ``ok``, no intents or pending deletes left, one entry per local file), and a
one-shot ``cntr-sync sync`` with the same state dir has nothing to do. A kill
counts as mid-pass when the daemon had logged no finished pass since the
trigger began; at least 40 of the 50 kills of the first pass (and 8 of the 10
later ones) must be, or the test proved little.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import EmulatorServer, FaultConfig
from helpers import assert_exact_mirror, local_tree, remote_name_counts, write_random_tree

# Every test kills a daemon subprocess.
pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).with_name("cntr-sync")
API_KEY = "sk-test"
CONTAINER = "crash-loop"
FILE_COUNT = 300
CONCURRENCY = 4
COLD_KILLS = 50
CHANGE_KILLS = 10
MIN_COLD_MID_PASS = 40
MIN_CHANGE_MID_PASS = 8
SEED = 20261124
# Every answer waits this long: a 300-file pass takes about 1.5 s of requests.
SLOW = FaultConfig(latency_ms=15)
POLL_S = 0.005
LOG_POLL_S = 0.05
# Python start-up and imports (~1 s on 2 idle cores) plus the pass up to the trigger.
KILL_DEADLINE_S = 20.0
# The killed process's requests still in the server (latency + handling) finish first:
# a late upload would otherwise look like a stranger's to the next daemon.
SETTLE_DEADLINE_S = 10.0
CONVERGE_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0
# Start-up, listing and a few uploads, on top of the share of the remaining work.
LISTING_REQUESTS = 5

T = TypeVar("T")


def write_tree(root: Path, count: int, seed: int) -> None:
    """``count`` files of 1-4 KiB in nested directories, a few with unicode names."""
    names = ["café/naïve résumé.txt", "日本語/ファイル.md", "emoji 🙂/smile.txt"]
    write_random_tree(root, count, seed, names=names, top_dirs=7)


@dataclass
class Kill:
    """What one SIGKILL interrupted."""

    phase: str
    after_requests: int
    mid_pass: bool
    last_operation: str
    uploads: int
    """create_file requests the emulator had seen by then, since it started."""
    deletes: int


@dataclass
class Loop:
    """One emulator, one tree, one state directory, and daemons started and killed on them."""

    server: EmulatorServer
    root: Path
    state_dir: Path
    logs: Path
    env: dict[str, str]
    rng: random.Random
    kills: list[Kill] = field(default_factory=list)
    runs: int = 0

    @property
    def run_args(self) -> list[str]:
        return [
            str(CLI),
            "run",
            str(self.root),
            "--container",
            CONTAINER,
            "--state-dir",
            str(self.state_dir),
            "--http-listen",
            "127.0.0.1:0",
            "--concurrency",
            str(CONCURRENCY),
            "--requests-per-second",
            "1000",
            "--quiet-period",
            "0.2",
            "--max-delay",
            "2",
            "--rescan-interval",
            "600",
            "--remote-poll-interval",
            "600",
            "--flush-timeout",
            "5",
        ]

    def requests(self) -> int:
        return sum(self.server.emulator.counts().values())

    def count(self, operation: str) -> int:
        return self.server.emulator.counts()[operation]

    def start(self) -> tuple[subprocess.Popen[bytes], Path]:
        """A new daemon on the pair; its stdout (JSON log lines) and stderr go to a file."""
        self.runs += 1
        log_path = self.logs / f"daemon-{self.runs:02d}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                self.run_args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return proc, log_path

    def kill_after(
        self,
        proc: subprocess.Popen[bytes],
        log_path: Path,
        requests: int,
        phase: str,
    ) -> None:
        """SIGKILL ``proc`` once the emulator has seen ``requests`` more requests (or, if its
        pass ends first, at once); record whether the kill cut a pass; let the server settle."""
        target = self.requests() + requests
        passes_before = len(events(log_path, "sync pass", "sync pass failed"))
        deadline = time.monotonic() + KILL_DEADLINE_S
        next_log_check = 0.0
        try:
            while self.requests() < target:
                if proc.poll() is not None:
                    pytest.fail(f"the daemon exited ({proc.returncode}): {tail(log_path)}")
                now = time.monotonic()
                if now >= next_log_check:
                    next_log_check = now + LOG_POLL_S
                    if len(events(log_path, "sync pass", "sync pass failed")) > passes_before:
                        break  # the pass ended before the trigger: kill it idle
                if now > deadline:
                    pytest.fail(f"no {requests} requests in {KILL_DEADLINE_S} s: {tail(log_path)}")
                time.sleep(POLL_S)
            proc.send_signal(signal.SIGKILL)
            last = self.server.emulator.requests_log()[-1].operation
            counts = self.server.emulator.counts()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: {tail(log_path)}"
        finished = len(events(log_path, "sync pass", "sync pass failed")) > passes_before
        self.kills.append(
            Kill(
                phase,
                requests,
                not finished,
                last,
                counts["create_file"],
                counts["delete_file"],
            )
        )
        self.settle()

    def settle(self) -> None:
        deadline = time.monotonic() + SETTLE_DEADLINE_S
        while self.server.open_connections:
            if time.monotonic() > deadline:
                pytest.fail("the killed daemon's requests were still in the server")
            time.sleep(POLL_S)

    def kill_loop(
        self, phase: str, kills: int, planned_work: int, operations: tuple[str, ...]
    ) -> None:
        """``kills`` restarts, each killed after a random share of the work still to do
        (``planned_work`` requests of ``operations`` in all, counted from now)."""
        done_before = sum(self.count(operation) for operation in operations)
        for left in range(kills, 0, -1):
            done = sum(self.count(operation) for operation in operations) - done_before
            remaining = max(0, planned_work - done)
            # On average a kill takes an equal share of what is left, so they spread over
            # the whole pass; the last ones still leave work for the restart after them.
            bound = LISTING_REQUESTS + max(2, 2 * remaining // (left + 1))
            proc, log_path = self.start()
            self.kill_after(proc, log_path, self.rng.randint(1, bound), phase)

    def converge(self) -> tuple[subprocess.Popen[bytes], Path, str]:
        """A daemon that is left to run until ``/readyz`` answers 200; with its URL."""
        proc, log_path = self.start()
        started = wait_for(
            lambda: events(log_path, "daemon started"), proc, log_path, "the daemon's start"
        )
        url = str(started[0]["http"]).rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        wait_for(
            lambda: ready(url),
            proc,
            log_path,
            "/readyz 200 (every pair synced)",
            CONVERGE_DEADLINE_S,
        )
        return proc, log_path, url


def events(log_path: Path, *names: str) -> list[dict[str, Any]]:
    """The daemon's JSON log events named one of ``names`` (a partial last line is skipped)."""
    found = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") in names:
            found.append(event)
    return found


def tail(log_path: Path) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(
    predicate: Callable[[], T],
    proc: subprocess.Popen[bytes],
    log_path: Path,
    what: str,
    timeout: float = KILL_DEADLINE_S,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail at once if the
    daemon exits, and after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited ({proc.returncode}) before {what}: {tail(log_path)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s: {tail(log_path)}")
        time.sleep(LOG_POLL_S)


def stop(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"the daemon did not stop within {STOP_DEADLINE_S} s: {tail(log_path)}")
    assert code == 0, f"exit {code}: {tail(log_path)}"


def index_files(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob("*.sqlite"))


def check_index(state_dir: Path, container_id: str, local_count: int) -> None:
    """The pair's SQLite index, opened read-only: intact, and one entry per local file."""
    [path] = index_files(state_dir)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        (recorded,) = db.execute("SELECT container_id FROM meta").fetchone()
        assert recorded == container_id
        (entries,) = db.execute(
            "SELECT count(*) FROM entries WHERE container_id = ?", (container_id,)
        ).fetchone()
        assert entries == local_count, f"{entries} index entries for {local_count} files"
        (others,) = db.execute(
            "SELECT count(*) FROM entries WHERE container_id != ?", (container_id,)
        ).fetchone()
        assert others == 0
        assert db.execute("SELECT relpath FROM intents").fetchall() == []
        assert db.execute("SELECT remote_id FROM pending_deletes").fetchall() == []
    finally:
        db.close()


def check_container(loop: Loop, local_count: int) -> str:
    """Exactly one container of that name, holding user uploads only, one per local file,
    with the same bytes; its id."""
    loop.server.emulator.set_faults(FaultConfig())
    try:
        with ContainersClient(API_KEY, base_url=loop.server.base_url) as client:
            named = [item for item in client.iter_containers() if item.name == CONTAINER]
            assert len(named) == 1, f"{len(named)} containers named {CONTAINER}"
            container_id = named[0].id
            remote = list(client.iter_files(container_id))
            assert all(item.is_user_upload for item in remote)
            assert len(remote) == local_count
            assert_exact_mirror(client, container_id, loop.root)
    finally:
        loop.server.emulator.set_faults(SLOW)
    return container_id


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    root = tmp_path / "tree"
    write_tree(root, FILE_COUNT, seed=SEED)
    logs = tmp_path / "logs"
    logs.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CNTR_SYNC_", "OPENAI_"))
    }
    with EmulatorServer("127.0.0.1", 0, data_dir=tmp_path / "emu") as server:
        server.emulator.set_faults(SLOW)
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": API_KEY, "HOME": str(home)}
        yield Loop(server, root, tmp_path / "state", logs, env, random.Random(SEED))


@pytest.mark.slow
def test_fifty_kills_of_the_daemon_end_in_an_exact_mirror(loop: Loop) -> None:
    started = time.monotonic()
    # Phase 1: the large first pass, cut 50 times.
    loop.kill_loop("cold", COLD_KILLS, FILE_COUNT, ("create_file",))
    proc, log_path, _url = loop.converge()
    # A kill loses at most the uploads in flight; the others are adopted, never repeated.
    assert loop.count("create_file") <= FILE_COUNT + COLD_KILLS * CONCURRENCY
    with ContainersClient(API_KEY, base_url=loop.server.base_url) as client:
        [container] = [c for c in client.iter_containers() if c.name == CONTAINER]
        assert remote_name_counts(client, container.id) == Counter(local_tree(loop.root).keys())

    # Phase 2: a third edited, a tenth deleted, while the daemon is idle and watching.
    rng = random.Random(SEED + 1)
    relpaths = sorted(local_tree(loop.root))
    rng.shuffle(relpaths)
    edited, removed = relpaths[: FILE_COUNT // 3], relpaths[FILE_COUNT // 3 :][: FILE_COUNT // 10]
    for relpath in edited:
        # A new size too, so no check can mistake the new content for the old.
        (loop.root / relpath).write_bytes(rng.randbytes(rng.randint(1024, 4096)) + b"v2")
    for relpath in removed:
        (loop.root / relpath).unlink()
    # Replacements are an upload and a delete each; removals a delete.
    change_work = 2 * len(edited) + len(removed)
    mutations = ("create_file", "delete_file")
    before = sum(loop.count(operation) for operation in mutations)
    uploads_before, deletes_before = loop.count("create_file"), loop.count("delete_file")
    loop.kill_after(proc, log_path, rng.randint(1, change_work // CHANGE_KILLS), "change")
    done = sum(loop.count(operation) for operation in mutations) - before
    loop.kill_loop("change", CHANGE_KILLS - 1, change_work - done, mutations)
    proc, log_path, _url = loop.converge()
    stop(proc, log_path)
    elapsed = time.monotonic() - started
    assert loop.count("create_file") - uploads_before <= len(edited) + CHANGE_KILLS * CONCURRENCY

    local_count = FILE_COUNT - len(removed)
    container_id = check_container(loop, local_count)
    check_index(loop.state_dir, container_id, local_count)
    quiet = subprocess.run(
        [
            str(CLI),
            "sync",
            str(loop.root),
            "--container",
            CONTAINER,
            "--state-dir",
            str(loop.state_dir),
            "--requests-per-second",
            "1000",
            "--json",
        ],
        env=loop.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert quiet.returncode == 0, quiet.stderr
    summary = json.loads(quiet.stdout.strip().splitlines()[-1])
    assert summary["container_id"] == container_id
    assert summary["local_files"] == local_count
    moved = {key: summary[key] for key in ("uploaded", "replaced", "deleted", "adopted")}
    assert moved == dict.fromkeys(moved, 0), summary
    assert summary["errors"] == [], summary
    assert len(index_files(loop.state_dir)) == 1  # the one-shot sync used the daemon's index

    # The kills themselves: enough of them cut a pass, and in every kind of work.
    cold = [kill for kill in loop.kills if kill.phase == "cold"]
    change = [kill for kill in loop.kills if kill.phase == "change"]
    assert (len(cold), len(change)) == (COLD_KILLS, CHANGE_KILLS)
    cold_cut = Counter(kill.last_operation for kill in cold if kill.mid_pass)
    change_cut = Counter(kill.last_operation for kill in change if kill.mid_pass)
    report = (
        f"{cold_cut.total()}/{COLD_KILLS} kills of the first pass and "
        f"{change_cut.total()}/{CHANGE_KILLS} of the change passes landed mid-pass "
        f"({elapsed:.1f} s); the last request before each: first pass {dict(cold_cut)}, "
        f"change passes {dict(change_cut)}"
    )
    print(report)
    assert cold_cut.total() >= MIN_COLD_MID_PASS, report
    assert cold_cut["create_file"] >= MIN_COLD_MID_PASS // 2, report
    assert change_cut.total() >= MIN_CHANGE_MID_PASS, report
    # Some kills came with the new versions part-uploaded, some with the old ones and the
    # removed files part-deleted (each is a random moment among both, as they interleave).
    assert any(
        0 < kill.uploads - uploads_before < len(edited) for kill in change if kill.mid_pass
    ), report
    assert any(
        0 < kill.deletes - deletes_before < len(edited) + len(removed)
        for kill in change
        if kill.mid_pass
    ), report
    errors = [
        event
        for path in sorted(loop.logs.glob("daemon-*.log"))
        for event in events(path, "sync pass failed", "pass crashed")
    ]
    assert errors == [], errors
