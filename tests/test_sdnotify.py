"""sdnotify: the exact datagrams on a real AF_UNIX socket, path and abstract."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync.sdnotify import STATUS_LIMIT, Notifier


class Receiver:
    """The manager's side: a bound datagram socket and what arrived on it."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def assert_empty(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(4096)
        finally:
            self.sock.settimeout(2.0)


def _bound(address: str, notify_socket: str) -> Iterator[Receiver]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(2.0)
        yield Receiver(sock, notify_socket)


@pytest.fixture
def path_receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = str(tmp_path / "notify")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    yield from _bound(path, path)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"cntr-sync-test-{secrets.token_hex(8)}"
    yield from _bound("\0" + name, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    fixture = "path_receiver" if request.param == "path" else "abstract_receiver"
    result: Receiver = request.getfixturevalue(fixture)
    return result


def test_messages_arrive_exactly(receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": receiver.notify_socket})
    assert notifier.enabled

    assert notifier.ready()
    assert receiver.receive() == "READY=1"
    assert notifier.status("syncing 3 pairs")
    assert receiver.receive() == "STATUS=syncing 3 pairs"
    assert notifier.watchdog()
    assert receiver.receive() == "WATCHDOG=1"
    assert notifier.stopping()
    assert receiver.receive() == "STOPPING=1"
    assert notifier.notify("A=1", "B=2")
    assert receiver.receive() == "A=1\nB=2"


def test_reloading_carries_a_monotonic_timestamp(receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": receiver.notify_socket})
    before = time.monotonic_ns() // 1000
    assert notifier.reloading()
    after = time.monotonic_ns() // 1000
    reloading, stamp = receiver.receive().split("\n")
    assert reloading == "RELOADING=1"
    key, usec = stamp.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_status_is_one_bounded_line(path_receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_receiver.notify_socket})
    assert notifier.status("first line\nsecond\r\nthird")
    assert path_receiver.receive() == "STATUS=first line second third"
    assert notifier.status("x" * 10_000)
    message = path_receiver.receive()
    assert "\n" not in message
    assert len(message) == len("STATUS=") + STATUS_LIMIT


def test_context_manager(path_receiver: Receiver) -> None:
    with Notifier({"NOTIFY_SOCKET": path_receiver.notify_socket}) as notifier:
        assert notifier.ready()
    assert path_receiver.receive() == "READY=1"


@pytest.mark.parametrize("notify_socket", [None, "", "@", "relative/path", "vsock:2:1234"])
def test_disabled_sends_nothing(path_receiver: Receiver, notify_socket: str | None) -> None:
    environ = {} if notify_socket is None else {"NOTIFY_SOCKET": notify_socket}
    notifier = Notifier(environ)
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("hello")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.reloading()
    assert not notifier.notify("A=1")
    path_receiver.assert_empty()


def test_missing_socket_returns_false(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    missing_abstract = Notifier({"NOTIFY_SOCKET": f"@cntr-sync-test-{secrets.token_hex(8)}"})
    assert not missing_abstract.ready()


def test_no_fields_sends_nothing(path_receiver: Receiver) -> None:
    assert not Notifier({"NOTIFY_SOCKET": path_receiver.notify_socket}).notify()
    path_receiver.assert_empty()


def test_watchdog_interval() -> None:
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_interval() == 10.0
    own = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(own).watchdog_interval() == 10.0
    other = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval() is None
    assert Notifier({}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "x"}).watchdog_interval() is None


def test_full_manager_queue_fails_fast_instead_of_blocking(path_receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_receiver.notify_socket})
    started = time.monotonic()
    # Nobody reads: the receiver's queue fills after a few datagrams, and then
    # a send must fail at once rather than wait for room.
    results = [notifier.status("x" * 150) for _ in range(2000)]
    assert time.monotonic() - started < 2.0
    assert results[0] is True
    assert False in results
