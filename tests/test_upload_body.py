"""The hand-built upload body: what httpx's multipart encoder would send, and how it reads.

``api.FilePart`` replaces httpx's generic encoder for uploads. These tests pin that
the bytes are the same as httpx's for the same boundary (names with quotes,
backslashes, control characters and non-ASCII included), that the emulator's parser
and python-multipart read them back, that every attempt of a retried upload reads
its source again, and that a source shorter or longer than it measured is refused
by httpx before the server can store it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from python_multipart import MultipartParser

from cntr_sync.api import ContainersClient, FilePart
from cntr_sync.emulator import Emulator, EmulatorServer
from cntr_sync.emulator.multipart import spool_multipart
from cntr_sync.errors import LocalError
from cntr_sync.models import LocalFile
from cntr_sync.rest import CHUNK_SIZE
from cntr_sync.transfer import TickingReader, open_as_scanned
from helpers import FILE, Script

NAMES = [
    "a.txt",
    "dir/sub/ünï code.txt",
    'say "hi".txt',
    "back\\slash.txt",
    "tab\there\x01\x1b.txt",
    "データ 📄.txt",
    "semi;colon=x.txt",
    "100% sure.txt",
    "",
]
SIZES = [0, 1, 4096, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 17]


def httpx_body(part: FilePart, filename: str, data: bytes, content_type: str) -> bytes:
    """What httpx's own encoder sends for the same part, with the same boundary."""
    request = httpx.Request(
        "POST",
        "http://x.test/",
        files={"file": (filename, data, content_type)},
        headers={"Content-Type": part.content_type},
    )
    return request.read()


def streamed(part: FilePart, data: bytes, length: int | None) -> list[bytes]:
    return list(part.stream(io.BytesIO(data), length))


@pytest.mark.parametrize("filename", NAMES)
def test_the_body_is_byte_for_byte_what_httpx_sends(filename: str) -> None:
    data = os.urandom(4096)
    part = FilePart.new(filename, "application/octet-stream")
    expected = httpx_body(part, filename, data, "application/octet-stream")
    assert part.head + data + part.tail == expected
    assert b"".join(streamed(part, data, len(data))) == expected
    assert b"".join(streamed(part, data, None)) == expected


@pytest.mark.parametrize("size", SIZES)
def test_a_small_file_is_one_piece_and_a_large_one_streams_in_chunks(size: int) -> None:
    data = os.urandom(size)
    part = FilePart.new("f.bin", "application/octet-stream")
    pieces = streamed(part, data, size)
    assert b"".join(pieces) == httpx_body(part, "f.bin", data, "application/octet-stream")
    if size <= CHUNK_SIZE:
        assert len(pieces) == 1
    else:
        assert pieces[0] == part.head and pieces[-1] == part.tail
        assert max(len(piece) for piece in pieces) <= CHUNK_SIZE


def test_every_body_has_its_own_boundary() -> None:
    boundaries = {FilePart.new("a", "application/octet-stream").boundary for _ in range(50)}
    assert len(boundaries) == 50


@pytest.mark.parametrize("filename", [name for name in NAMES if name])
def test_the_emulator_reads_back_the_name_and_the_bytes(filename: str, tmp_path: Path) -> None:
    data = os.urandom(5000)
    part = FilePart.new(filename, "application/octet-stream")
    upload = spool_multipart(
        iter(streamed(part, data, len(data))), part.boundary.encode(), tmp_path
    )
    assert upload.filename == filename
    assert upload.spool_path is not None and upload.spool_path.read_bytes() == data
    assert upload.size == len(data)


@pytest.mark.parametrize("filename", [name for name in NAMES if name])
def test_python_multipart_reads_back_the_part(filename: str) -> None:
    data = os.urandom(3000)
    part = FilePart.new(filename, "text/plain")
    received: dict[str, bytes] = {"data": b"", "headers": b""}

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        received["data"] += chunk[start:end]

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        received["headers"] += chunk[start:end] + b"\n"

    parser = MultipartParser(
        part.boundary.encode(),
        {"on_part_data": on_part_data, "on_header_value": on_header_value},
    )
    for piece in streamed(part, data, len(data)):
        parser.write(piece)
    parser.finalize()
    assert received["data"] == data
    disposition, content_type = received["headers"].decode().splitlines()
    assert disposition == f'form-data; name="file"; filename="{form_escaped(filename)}"'
    assert content_type == "text/plain"


def form_escaped(name: str) -> str:
    """The HTML5 form escapes httpx applies: a backslash doubled, '"' as %22,
    control characters but ESC as %XX."""
    out = []
    for char in name:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append("%22")
        elif ord(char) < 0x20 and char != "\x1b":
            out.append(f"%{ord(char):02X}")
        else:
            out.append(char)
    return "".join(out)


def client_for(handler: Script) -> ContainersClient:
    return ContainersClient(
        "sk-test",
        base_url="http://gateway.test/v1",
        transport=httpx.MockTransport(handler),
        sleep=lambda _seconds: None,
    )


def boundary_of(request: httpx.Request) -> str:
    return request.headers["content-type"].partition("boundary=")[2]


def test_a_retry_reads_the_source_again_into_a_new_body() -> None:
    data = os.urandom(10_000)
    source = io.BytesIO(data)
    handler = Script(
        httpx.ConnectError("refused"),
        httpx.Response(429, headers={"retry-after-ms": "1"}, json={"error": {"message": "x"}}),
        httpx.Response(200, json=FILE),
    )
    with client_for(handler) as client:
        assert client.create_file("cntr_1", source, filename="a.bin").id == "cfile_1"
    assert len(handler.requests) == 3
    for request in handler.requests:
        assert request.content.count(data) == 1
        assert int(request.headers["content-length"]) == len(request.content)
    assert len({boundary_of(request) for request in handler.requests}) == 3


def test_a_source_of_unknown_length_is_sent_chunked() -> None:
    class Unmeasured(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seek(self, offset: int, whence: int = 0, /) -> int:
            if (offset, whence) != (0, 0):
                raise io.UnsupportedOperation("no seeking")
            return self._data.seek(0)

        def tell(self) -> int:
            raise io.UnsupportedOperation("no telling")

        def readinto(self, buffer: object, /) -> int:
            chunk = self._data.read(len(buffer))  # type: ignore[arg-type]
            buffer[: len(chunk)] = chunk  # type: ignore[index]
            return len(chunk)

    data = os.urandom(3 * 1024)
    handler = Script(httpx.Response(200, json=FILE))
    with client_for(handler) as client:
        client.create_file("cntr_1", Unmeasured(data), filename="a.bin")
    request = handler.requests[0]
    assert request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in request.headers
    assert request.content.count(data) == 1


# -- against a real socket: httpx checks the body against its Content-Length ----------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ContainersClient, Emulator, str]]:
    with (
        Emulator(data_dir=tmp_path / "emu") as emulator,
        EmulatorServer("127.0.0.1", 0, emulator=emulator) as server,
        ContainersClient("sk-test", base_url=server.base_url, sleep=lambda _s: None) as client,
    ):
        container = client.create_container("uploads")
        yield client, emulator, container.id


def scanned(path: Path) -> LocalFile:
    seen = path.stat()
    return LocalFile(path.name, seen.st_size, seen.st_mtime_ns, seen.st_ino, "")


@pytest.mark.parametrize("size", [4096, CHUNK_SIZE * 2 + 5])
def test_a_file_cut_shorter_after_it_was_opened_is_not_stored(
    served: tuple[ContainersClient, Emulator, str], tmp_path: Path, size: int
) -> None:
    client, _emulator, container_id = served
    path = tmp_path / "shrinks.bin"
    path.write_bytes(os.urandom(size))
    handle, _before = open_as_scanned(path, scanned(path), follow_symlinks=False, tick=lambda: None)
    with handle:
        os.truncate(path, size // 2)
        with pytest.raises(LocalError, match="changed while it was uploaded"):
            client.create_file(container_id, handle, filename="shrinks.bin")
        assert handle.truncated
    assert list(client.iter_files(container_id)) == []


def test_a_path_that_grew_after_it_was_measured_is_not_stored(
    served: tuple[ContainersClient, Emulator, str], tmp_path: Path
) -> None:
    client, _emulator, container_id = served
    path = tmp_path / "grows.bin"
    path.write_bytes(b"x" * 4096)

    class Growing(io.FileIO):
        """Measured at 4 KiB, then appended to before the body is read."""

        def read(self, size: int = -1, /) -> bytes:
            if self.tell() == 0:
                with path.open("ab") as more:
                    more.write(b"y" * 100)
            return super().read(size)

    with Growing(path, "r") as source, pytest.raises(LocalError, match="grew past"):
        client.create_file(container_id, source, filename="grows.bin")
    assert list(client.iter_files(container_id)) == []


def test_a_scanned_file_that_grew_sends_what_the_scan_saw(
    served: tuple[ContainersClient, Emulator, str], tmp_path: Path
) -> None:
    client, _emulator, container_id = served
    path = tmp_path / "log.txt"
    path.write_bytes(b"a" * 5000)
    expected = scanned(path)
    with path.open("ab") as more:
        more.write(b"b" * 300)
    handle, _before = open_as_scanned(
        path, expected, follow_symlinks=False, tick=lambda: None, allow_growth=True
    )
    with handle:
        created = client.create_file(container_id, handle, filename="log.txt")
    assert created.bytes == 5000
    sink = io.BytesIO()
    client.download_file(container_id, created.id, sink)
    assert sink.getvalue() == b"a" * 5000


# -- the reader under the upload -------------------------------------------------------


def test_the_reader_reads_what_pread_returns_up_to_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(10_000)
    path.write_bytes(data)
    ticks: list[None] = []
    fd = os.open(path, os.O_RDONLY)
    with TickingReader(fd, lambda: ticks.append(None), limit=6000) as reader:
        assert reader.read(4000) == data[:4000]
        assert reader.read(4000) == data[4000:6000]
        assert reader.read(4000) == b""
        assert not reader.truncated
        reader.seek(0)
        assert reader.read() == data[:6000]
        buffer = bytearray(100)
        reader.seek(10)
        assert reader.readinto(buffer) == 100 and bytes(buffer) == data[10:110]
    assert len(ticks) == 5


def test_the_reader_marks_a_file_cut_shorter_and_gives_up_past_its_deadline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"z" * 100)
    with TickingReader(os.open(path, os.O_RDONLY), lambda: None, limit=200) as reader:
        assert reader.read(500) == b"z" * 100
        assert reader.read(500) == b""
        assert reader.truncated
    with (
        TickingReader(os.open(path, os.O_RDONLY), lambda: None, 100, deadline=0.0) as late,
        pytest.raises(TimeoutError),
    ):
        late.read(10)
