"""events: the bus and its bounded per-reader buffers; a reader that never reads,
against the daemon in-process (its passes go on, its memory stays bounded)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from cntr_sync.control_client import ControlClient
from cntr_sync.daemon import running
from cntr_sync.events import EventBus, sse_frame
from test_control import socket_dir, start, synced
from test_daemon import SYNC_TIMEOUT, env, make_tree, pair, server, wait_until

_ = (socket_dir, env, server)  # fixtures


def test_a_stalled_reader_keeps_at_most_its_buffer_and_learns_what_it_lost() -> None:
    bus = EventBus(capacity=10)
    stalled = bus.subscribe()
    for number in range(1000):
        bus.publish({"type": "action", "n": number})
    assert bus.backlog() == [10]
    taken = [stalled.get(0.0) for _ in range(11)]
    assert [event["n"] for event in taken[:10] if event] == list(range(10))
    assert taken[10] == {"type": "lost", "count": 990}
    assert stalled.get(0.0) is None
    # Once it keeps up again, events flow; a later gap is reported before the next event.
    bus.publish({"type": "action", "n": 1000})
    assert stalled.get(0.0) == {"type": "action", "n": 1000}
    for number in range(1001, 1012):
        bus.publish({"type": "action", "n": number})
    bus.publish({"type": "action", "n": 2000})
    drained = [stalled.get(0.0) for _ in range(10)]
    assert [e["n"] for e in drained if e] == list(range(1001, 1011))
    assert stalled.get(0.0) == {"type": "lost", "count": 2}


def test_one_slow_reader_does_not_hold_up_the_others_or_the_publisher() -> None:
    bus = EventBus(capacity=5)
    slow, quick = bus.subscribe(), bus.subscribe()
    got: list[int] = []

    def keep_up() -> None:
        while len(got) < 100:
            event = quick.get(5.0)
            assert event is not None
            got.append(event["n"])

    reader = threading.Thread(target=keep_up)
    reader.start()
    for number in range(100):
        bus.publish({"type": "action", "n": number})
        wait_until(lambda n=number: len(got) > n, 5.0, message="the quick reader")
    reader.join(5.0)
    assert got == list(range(100))
    assert slow.buffered == 5
    slow.close()
    assert bus.subscribers == 1


def test_close_ends_every_stream() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    bus.close()
    assert subscription.closed
    assert subscription.get(0.0) is None
    assert bus.subscribers == 0


def test_an_sse_frame_is_its_type_and_one_line_of_json() -> None:
    frame = sse_frame({"type": "pass-end", "pair": "docs", "path": "a\nb"})
    assert frame == (
        b'event: pass-end\ndata: {"pair": "docs", "path": "a\\nb", "type": "pass-end"}\n\n'
    )


def test_a_reader_that_never_reads_does_not_hold_up_passes(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root, watch="off")])
    daemon.events = EventBus(capacity=4)
    with running(daemon), ControlClient(socket_dir / "control.sock") as control:
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            stalled.connect(str(socket_dir / "control.sock"))
            stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_until(lambda: daemon.events.subscribers, SYNC_TIMEOUT, message="the reader")
            for number in range(20):
                (root / f"f{number}.txt").write_text(str(number))
                assert control.flush("docs")["docs"].in_sync
            assert all(count <= 4 for count in daemon.events.backlog())
            # What it reads, late, is the stream all the same.
            stalled.settimeout(5.0)
            head = stalled.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"text/event-stream" in head
        finally:
            stalled.close()
