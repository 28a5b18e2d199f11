"""Crash safety: SIGKILL the real CLI in the middle of a pass, rerun, get an exact mirror.

Each test runs ``cntr-sync sync`` as a subprocess against an emulator on a real
socket, slows every request down so the kill lands mid-pass, kills the process
once the emulator has seen K requests of one operation, and reruns the sync to
completion. The container must then hold every local file exactly once with
the same bytes (no duplicates, no old versions, nothing missing or extra), and
one more pass must find nothing to do.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import EmulatorServer, FaultConfig
from helpers import assert_exact_mirror, local_tree, write_random_tree

# Every test kills a `cntr-sync sync` subprocess.
pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).with_name("cntr-sync")
FILE_COUNT = 150
CONCURRENCY = 4
# Slow enough that a kill lands mid-pass, fast enough for a pass well under a second or two.
SLOW = FaultConfig(latency_ms=20)
KILL_DEADLINE_S = 20.0
POLL_S = 0.005
# Requests of a killed process may still be in the server (latency + handling):
# they must finish before the rerun lists, or a late upload would look like a stranger's.
SETTLE_DEADLINE_S = 10.0
UNICODE_NAMES = (
    "café/naïve résumé.txt",
    "日本語/ファイル.md",
    "emoji 🙂/smile.txt",
    "Ωmega/ünïcödé-ß.bin",
)


def write_tree(root: Path, count: int, seed: int) -> None:
    """``count`` files of 1-4 KiB in nested directories, a few with unicode names."""
    write_random_tree(root, count, seed, names=UNICODE_NAMES, top_dirs=5)


@dataclass
class Rig:
    """One emulator, one local tree, one state directory, and the CLI to run against them."""

    server: EmulatorServer
    root: Path
    state_dir: Path
    logs: Path
    env: dict[str, str]
    runs: int = 0

    @property
    def args(self) -> list[str]:
        return [
            str(CLI),
            "sync",
            str(self.root),
            "--container",
            "crash",
            "--state-dir",
            str(self.state_dir),
            "--json",
            "--concurrency",
            str(CONCURRENCY),
        ]

    def count(self, operation: str) -> int:
        return self.server.emulator.counts()[operation]

    def sync(self, expected_exit: int = 0) -> dict[str, Any]:
        """One pass to completion; returns its JSON summary."""
        self.server.emulator.set_faults(FaultConfig())
        done = subprocess.run(
            self.args, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == expected_exit, (
            f"exit {done.returncode}, expected {expected_exit}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
        summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return summary

    def kill_after(self, operation: str, requests: int, faults: FaultConfig = SLOW) -> None:
        """Start a pass under ``faults``; SIGKILL it once the emulator saw ``requests`` more
        ``operation``."""
        self.server.emulator.set_faults(faults)
        target = self.count(operation) + requests
        self.runs += 1
        stderr_path = self.logs / f"killed-{self.runs}.err"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr
            )
            try:
                deadline = time.monotonic() + KILL_DEADLINE_S
                while self.count(operation) < target:
                    if proc.poll() is not None:
                        pytest.fail(
                            f"the pass ended (exit {proc.returncode}) before {requests} "
                            f"{operation} requests: {stderr_path.read_text(errors='replace')}"
                        )
                    if time.monotonic() > deadline:
                        pytest.fail(f"no {requests} {operation} requests in {KILL_DEADLINE_S} s")
                    time.sleep(POLL_S)
                proc.send_signal(signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, "the pass finished before the kill"
        deadline = time.monotonic() + SETTLE_DEADLINE_S
        while self.server.open_connections:
            if time.monotonic() > deadline:
                pytest.fail("the killed pass's requests were still in the server")
            time.sleep(POLL_S)
        self.server.emulator.set_faults(FaultConfig())

    def assert_mirror_and_quiet(self, container_id: str) -> None:
        """Exact mirror now, and a further pass changes nothing."""
        with ContainersClient("sk-test", base_url=self.server.base_url) as client:
            assert_exact_mirror(client, container_id, self.root)
        quiet = self.sync()
        assert quiet["container_id"] == container_id
        assert (quiet["uploaded"], quiet["replaced"], quiet["deleted"]) == (0, 0, 0), quiet
        assert quiet["errors"] == [], quiet


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    root = tmp_path / "tree"
    write_tree(root, FILE_COUNT, seed=1)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CNTR_SYNC_")}
    with EmulatorServer("127.0.0.1", 0, control=True, data_dir=tmp_path / "emu") as server:
        env |= {
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test",
            "HOME": str(tmp_path),
            # The default client-side limit (20/s) would make each cold pass take seconds.
            "CNTR_SYNC_REQUESTS_PER_SECOND": "1000",
        }
        yield Rig(server, root, tmp_path / "state", logs, env)


@pytest.mark.parametrize("kill_at", [1, 40, 120])
def test_cold_pass_killed_then_rerun(rig: Rig, kill_at: int) -> None:
    rig.kill_after("create_file", kill_at)

    rerun = rig.sync()
    assert rerun["local_files"] == FILE_COUNT
    assert rerun["uploaded"] >= 1, "the kill came too late to leave work for the rerun"
    # A kill loses at most the uploads in flight; stored ones are adopted, not repeated.
    assert rig.count("create_file") <= FILE_COUNT + CONCURRENCY
    rig.assert_mirror_and_quiet(rerun["container_id"])


# Old-id deletions fail and are retried with backoff, so replaced files sit
# doomed in the index, their old versions still in the container, when the kill comes.
STALLED_DELETES = FaultConfig(error_rate=1.0, only_operations=frozenset({"delete_file"}), seed=0)


@pytest.mark.parametrize(
    ("operation", "kill_at", "faults"),
    [("create_file", 20, SLOW), ("delete_file", 8, STALLED_DELETES)],
    ids=["among-uploads", "old-ids-doomed"],
)
def test_killed_during_replacements(
    rig: Rig, operation: str, kill_at: int, faults: FaultConfig
) -> None:
    first = rig.sync()
    assert first["uploaded"] == FILE_COUNT
    rng = random.Random(2)
    changed = sorted(local_tree(rig.root))[::2][:60]
    for relpath in changed:
        # A new size too, so no check can mistake the new content for the old.
        (rig.root / relpath).write_bytes(rng.randbytes(rng.randint(1024, 4096)) + b"v2")
    uploads_before = rig.count("create_file")

    rig.kill_after(operation, kill_at, faults)

    rerun = rig.sync()
    assert rerun["container_id"] == first["container_id"]
    assert rerun["replaced"] + rerun["adopted"] >= 1, rerun
    if faults is STALLED_DELETES:
        assert rerun["planned"]["delete"] >= 1, "no doomed old id was left to delete"
    assert rig.count("create_file") - uploads_before <= len(changed) + CONCURRENCY
    rig.assert_mirror_and_quiet(first["container_id"])


def test_killed_during_deletions(rig: Rig) -> None:
    first = rig.sync()
    removed = sorted(local_tree(rig.root))[1::3][:40]
    for relpath in removed:
        (rig.root / relpath).unlink()
    deletes_before = rig.count("delete_file")

    rig.kill_after("delete_file", 10)

    rerun = rig.sync()
    assert rerun["local_files"] == FILE_COUNT - len(removed)
    assert rerun["deleted"] >= 1, rerun
    assert rig.count("delete_file") - deletes_before <= len(removed) + CONCURRENCY
    rig.assert_mirror_and_quiet(first["container_id"])


@pytest.mark.parametrize("seed", [3, 11])
def test_repeated_kills_of_one_cold_pass(rig: Rig, seed: int) -> None:
    rng = random.Random(seed)
    # Each bound stays below what the previous kills can have left to upload.
    for bound in (60, 40, 20):
        rig.kill_after("create_file", rng.randint(1, bound))

    rerun = rig.sync()
    assert rerun["uploaded"] >= 1, rerun
    assert rig.count("create_file") <= FILE_COUNT + 3 * CONCURRENCY
    rig.assert_mirror_and_quiet(rerun["container_id"])


def test_ambiguous_uploads_are_adopted_not_repeated(rig: Rig) -> None:
    rig.server.emulator.fail_next("create_file", "ambiguous", count=3)

    first = rig.sync(expected_exit=1)
    assert len(first["errors"]) == 3, first["errors"]
    assert rig.count("create_file") == FILE_COUNT

    rerun = rig.sync()
    # Each ambiguous upload left an intent and a same-named, same-sized file: adopted.
    assert rerun["adopted"] == 3, rerun
    assert rerun["uploaded"] == 0, rerun
    assert rig.count("create_file") == FILE_COUNT
    rig.assert_mirror_and_quiet(first["container_id"])


def test_killed_mid_download_leaves_no_partial_file_under_the_real_name(
    tmp_path: Path, rig: Rig
) -> None:
    pull_root = tmp_path / "pulled"
    pull_root.mkdir()
    args = [
        str(CLI),
        "sync",
        str(pull_root),
        "--container",
        "crash",
        "--state-dir",
        str(rig.state_dir),
        "--direction",
        "pull",
        "--json",
    ]
    made = subprocess.run(
        args, env=rig.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert made.returncode == 0, made.stderr
    container_id = json.loads(made.stdout)["container_id"]
    big = random.Random(5).randbytes(6 * 1024 * 1024)
    rig.server.emulator.add_assistant_file(container_id, "/mnt/data/out/big.bin", big)
    # 3 s for the whole body: the kill lands while it streams.
    rig.server.emulator.set_faults(FaultConfig(download_bytes_per_s=2 * 1024 * 1024))
    with (rig.logs / "killed-download.err").open("wb") as stderr:
        proc = subprocess.Popen(args, env=rig.env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + KILL_DEADLINE_S
            partial: list[Path] = []
            while not partial or partial[0].stat().st_size < 512 * 1024:
                partial = list((pull_root / "out").glob(".cntrsync-partial-*"))
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the download ended (or never began) before the kill")
                time.sleep(POLL_S)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert not (pull_root / "out" / "big.bin").exists()
    rig.server.emulator.set_faults(FaultConfig())

    rerun = subprocess.run(
        args, env=rig.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["downloaded"] == 1
    assert (pull_root / "out" / "big.bin").read_bytes() == big
    assert list(pull_root.rglob(".cntrsync-partial-*")) == []
