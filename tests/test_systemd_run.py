"""``cntr-sync run`` started the way systemd starts ``deploy/systemd/cntr-sync@.service``.

The test plays the service manager: it binds the ``NOTIFY_SOCKET`` datagram
socket in tmp_path, puts the key in a ``$CREDENTIALS_DIRECTORY`` named by
``CNTR_SYNC_API_KEY_FILE`` (as ``LoadCredential=`` does, with the unit's
environment), sets ``WATCHDOG_USEC``, and reads what the daemon sends while it
mirrors a tree into an emulator on 127.0.0.1 that accepts that key only.
``tests/test_sdnotify.py`` covers the datagram format itself; this covers the
daemon's use of it. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import EmulatorServer
from helpers import assert_exact_mirror

# The daemon runs as a subprocess under a fake service manager.
pytestmark = pytest.mark.e2e

KEY = "sk-credential-0123456789abcdef"
CLI = Path(sys.executable).with_name("cntr-sync")
# Pings every 0.5 s (half of it), so a few arrive within seconds.
WATCHDOG_USEC = 1_000_000
START_TIMEOUT = 30.0  # process start, imports and the first pass, on a loaded 2-core machine
STOP_TIMEOUT = 20.0  # flush_timeout (5 s here) plus margin


class Manager:
    """The service manager's side of sd_notify: one bound datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(
        self, line: str, timeout: float, proc: subprocess.Popen[bytes], count: int = 1
    ) -> None:
        """Collect datagrams until ``count`` of them hold ``line``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.count(line) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{count} x {line} not seen in {timeout:.0f}s: {self.messages[-10:]}")
            self.sock.settimeout(min(left, 0.5))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                if proc.poll() is not None and line != "STOPPING=1":
                    pytest.fail(f"the daemon exited ({proc.returncode}) before {line}")

    def count(self, line: str) -> int:
        return sum(line in message.split("\n") for message in self.messages)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    receiver = Manager(path)
    yield receiver
    receiver.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer("127.0.0.1", 0, data_dir=tmp_path / "emu", api_keys={KEY}) as served:
        yield served


def test_the_daemon_speaks_to_systemd_as_the_unit_expects(
    tmp_path: Path, manager: Manager, server: EmulatorServer
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("hello\n", encoding="utf-8")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_bytes(b"\x00\x01" * 1000)
    # Written well before the start: the first pass sends them rather than deferring
    # them as still being written (READY=1 follows the first pass, not the mirror).
    then = time.time() - 3600
    for path in (root / "a.md", root / "sub" / "b.txt"):
        os.utime(path, (then, then))
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "openai-api-key").write_text(KEY + "\n", encoding="utf-8")
    (credentials / "openai-api-key").chmod(0o400)

    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CNTR_SYNC_", "OPENAI_", "NOTIFY_", "WATCHDOG_", "CREDENTIALS_"))
    }
    env.update(
        {
            # What systemd sets, and the unit's Environment= lines.
            "NOTIFY_SOCKET": str(manager.path),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "CREDENTIALS_DIRECTORY": str(credentials),
            "CNTR_SYNC_API_KEY_FILE": "openai-api-key",
            "CNTR_SYNC_STATE_DIR": str(tmp_path / "state"),
            "OPENAI_BASE_URL": server.base_url,
            "CNTR_SYNC_HTTP_LISTEN": "127.0.0.1:0",
            "HOME": str(tmp_path),
        }
    )
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(CLI), "run", str(root), "--container", "docs", "--flush-timeout", "5"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
        )
    try:
        manager.wait_for("READY=1", START_TIMEOUT, proc)
        # READY=1 means the first pass is over: the tree is already there, with the
        # key from the credential (the emulator refuses any other).
        with ContainersClient(KEY, base_url=server.base_url) as client:
            containers = [c for c in client.iter_containers() if c.name == "docs"]
            assert len(containers) == 1
            assert_exact_mirror(client, containers[0].id, root)

        # Pings keep coming while the daemon is live (one every 0.5 s here).
        manager.wait_for("WATCHDOG=1", START_TIMEOUT, proc, count=manager.count("WATCHDOG=1") + 2)
        statuses = [m for m in manager.messages if m.startswith("STATUS=")]
        assert statuses, manager.messages
        assert statuses[-1] == "STATUS=1 pairs: default idle", statuses

        proc.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING=1", STOP_TIMEOUT, proc)
        assert proc.wait(STOP_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = out_path.read_text("utf-8", "replace") + err_path.read_text("utf-8", "replace")
    assert KEY not in output
    assert not any(KEY in message for message in manager.messages)
    # Nothing but sd_notify's own words.
    sent = {line.split("=", 1)[0] for message in manager.messages for line in message.split("\n")}
    assert sent <= {"", "READY", "STATUS", "WATCHDOG", "STOPPING"}, sent
    assert manager.messages.index("STOPPING=1") > manager.messages.index("READY=1")
