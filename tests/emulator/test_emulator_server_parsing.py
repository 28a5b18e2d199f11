"""The emulator's own request-line and header parsing, over a raw socket.

The server reads headers without the stdlib's email parser (which compiled a regular
expression from every upload's boundary); these pin that it still keeps the stdlib's
limits and answers, and writes each answer whole.
"""

from __future__ import annotations

import json
import socket

import pytest

from cntr_sync.emulator import EmulatorServer


def exchange(server: EmulatorServer, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection, shut the write side, read until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every HTTP/1.1 answer in ``data``: status, headers (lower-cased), body."""
    found = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body, data = data[:length], data[length:]
        found.append((int(status_line.split()[1]), headers, body))
    return found


def test_folded_and_odd_header_lines_are_read_as_the_stdlib_reads_them(
    server: EmulatorServer,
) -> None:
    raw = (
        b"GET /v1/containers?limit=1 HTTP/1.1\r\n"
        b"Host: x\r\n"
        b"X-Folded: one\r\n"
        b"\ttwo\r\n"
        b"X-Spaces:   kept at the end  \r\n"
        b"Connection: close\r\n"
        b"not a header line\r\n"
        b"X-After: dropped\r\n"
        b"\r\n"
    )
    [(status, headers, body)] = answers(exchange(server, raw))
    assert status == 200
    assert headers["connection"] == "close"
    assert json.loads(body)["object"] == "list"
    record = server.emulator.requests_log()[-1]
    assert record.headers["x-folded"] == "one\r\n\ttwo"
    assert record.headers["x-spaces"] == "kept at the end  "
    assert "x-after" not in record.headers


def test_keep_alive_answers_each_request_whole(server: EmulatorServer) -> None:
    one = b"GET /v1/containers HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /v1/containers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    replies = answers(exchange(server, one + one + last))
    assert [status for status, _headers, _body in replies] == [200, 200, 200]
    assert all(headers["server"] and headers["date"] for _status, headers, _body in replies)
    assert all(json.loads(body)["object"] == "list" for _status, _headers, body in replies)


def test_http_1_0_closes_after_one_answer(server: EmulatorServer) -> None:
    replies = answers(exchange(server, b"GET /v1/containers HTTP/1.0\r\n\r\n"))
    assert [status for status, _headers, _body in replies] == [200]
    assert replies[0][1]["connection"] == "close"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /v1/containers HTTP/x.y\r\n\r\n", 400),
        (b"GET /v1/containers HTTP/2.0\r\n\r\n", 505),
        (b"GET / v1 containers HTTP/1.1\r\n\r\n", 400),
        (b"POST /v1/containers\r\n\r\n", 400),
        (b"GET /v1/containers HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"GET /v1/containers HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", 431),
    ],
    ids=["bad-version", "http2", "four-words", "http09-post", "too-many", "too-long"],
)
def test_bad_requests_get_the_stdlib_answers(
    server: EmulatorServer, raw: bytes, status: int
) -> None:
    reply = exchange(server, raw)
    # Before the version is known the stdlib answers as HTTP/0.9: a bare HTML body.
    if reply.startswith(b"HTTP/"):
        assert answers(reply)[0][0] == status
    assert f"Error code: {status}".encode() in reply


def test_expect_100_continue_is_answered_before_the_body(server: EmulatorServer) -> None:
    body = json.dumps({"name": "expect"}).encode()
    head = (
        b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head)
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    [(status, _headers, answer)] = answers(b"".join(chunks))
    assert status == 200 and json.loads(answer)["name"] == "expect"
