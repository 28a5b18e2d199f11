"""cli_daemon: ``cntr-sync flush``, ``pause``, ``resume``, ``pair`` and ``log --follow``
as real processes, against a daemon running in the test process (``daemon.running``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import test_daemon
from cntr_sync.api import ContainersClient
from cntr_sync.daemon import Daemon, running
from helpers import remote_bytes
from test_control import socket_dir, start, synced
from test_daemon import SYNC_TIMEOUT, make_tree, pair, wait_until

pytestmark = pytest.mark.e2e

server, client, env = test_daemon.server, test_daemon.client, test_daemon.env
_ = socket_dir  # a fixture

CLI = Path(sys.executable).with_name("cntr-sync")
RUN_TIMEOUT = 60.0


def cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def running_daemon(
    tmp_path: Path, env: dict[str, str], socket_dir: Path, **pair_settings: Any
) -> tuple[Daemon, Path]:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    return start(tmp_path, env, socket_dir, [pair("docs", root, **pair_settings)]), root


def test_flush_prints_sync_summary_and_the_file_is_there(
    tmp_path: Path, env: dict[str, str], socket_dir: Path, client: ContainersClient
) -> None:
    daemon, root = running_daemon(tmp_path, env, socket_dir, watch="off")
    config = tmp_path / "daemon.toml"
    with running(daemon):
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        (root / "b.txt").write_text("beta")
        done = cli(env, "flush", "docs", "--config", config)
        assert done.returncode == 0, done.stderr
        assert done.stderr.startswith("in sync: 2 files -> ")
        assert "1 uploaded" in done.stderr
        container_id = daemon.workers["docs"].status.container_id
        assert container_id is not None
        assert remote_bytes(client, container_id, "b.txt") == b"beta"

        (root / "c.txt").write_text("gamma")
        done = cli(env, "flush", "--json", "--socket", socket_dir / "control.sock")
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert document["exit_code"] == 0
        assert set(document["pairs"]) == {"docs"}
        docs = document["pairs"]["docs"]
        # sync --json's document: its keys, its counts.
        assert {"uploaded", "in_sync", "exit_code", "errors", "actions"} <= set(docs)
        assert docs["uploaded"] == 1 and docs["in_sync"] is True

        done = cli(env, "flush", "nosuch", "--config", config)
        assert done.returncode == 2
        assert done.stderr.strip().endswith("no pair named 'nosuch' is running")


def test_flush_without_a_daemon_says_so_and_exits_4(tmp_path: Path, env: dict[str, str]) -> None:
    done = cli(env, "flush", "--socket", tmp_path / "none.sock")
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no daemon is running" in lines[0]


def test_pause_resume_and_pair_commands(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    daemon, _root = running_daemon(tmp_path, env, socket_dir)
    config = tmp_path / "daemon.toml"
    extra = make_tree(tmp_path / "extra", {"x.txt": "ex"})
    with running(daemon):
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        done = cli(env, "pause", "--config", config, "-v")
        assert done.returncode == 0, done.stderr
        assert "paused: docs" in done.stderr
        assert "asking the daemon at " in done.stderr  # -v says which socket
        assert daemon.workers["docs"].paused
        done = cli(env, "resume", "docs", "--config", config, "-q")
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # -q: nothing but errors
        assert not daemon.workers["docs"].paused

        done = cli(
            env,
            *("pair", "add", "extra", extra, "--container", "extra-box"),
            *("--config", config, "--quiet-period", "0.3", "--direction", "both"),
        )
        assert done.returncode == 0, done.stderr
        assert "extra" in daemon.workers
        assert daemon.workers["extra"].pair.direction == "both"
        listed = cli(env, "pair", "list", "--config", config)
        assert listed.returncode == 0, listed.stderr
        rows = sorted(line.split("\t") for line in listed.stdout.splitlines())
        assert [row[0] for row in rows] == ["docs", "extra"]
        assert rows[1][2:4] == ["extra-box", "pairs_dir"]
        done = cli(env, "pair", "remove", "extra", "--config", config)
        assert done.returncode == 0, done.stderr
        assert "extra" not in daemon.workers


def test_log_follow_prints_events_as_they_come(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    daemon, root = running_daemon(tmp_path, env, socket_dir, watch="off")
    config = tmp_path / "daemon.toml"
    with running(daemon):
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        lines: list[dict[str, Any]] = []
        follower = subprocess.Popen(
            [str(CLI), "log", "--follow", "--json", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

        def read() -> None:
            assert follower.stdout is not None
            for line in follower.stdout:
                lines.append(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            wait_until(lambda: daemon.events.subscribers, SYNC_TIMEOUT, message="the follower")
            (root / "followed.txt").write_text("seen")
            daemon.workers["docs"].request_flush().wait(SYNC_TIMEOUT)
            wait_until(
                lambda: any(e["type"] == "pass-end" for e in lines),
                SYNC_TIMEOUT,
                message="the pass's events",
            )
        finally:
            follower.terminate()
            follower.wait(10)
            reader.join(10)
            assert follower.stdout is not None
            follower.stdout.close()
        kinds = [e["type"] for e in lines]
        assert kinds[0] == "pass-start"
        uploads = [e for e in lines if e["type"] == "action" and e["action"] == "upload"]
        assert [e["path"] for e in uploads] == ["followed.txt"]
        assert uploads[0]["pair"] == "docs" and uploads[0]["bytes"] == 4
        end = next(e for e in lines if e["type"] == "pass-end")
        assert end["pass_id"] == uploads[0]["pass_id"]
        assert end["result"] == "success"
