"""The emulator over real HTTP on 127.0.0.1: framing, streaming, spooling, dropped
connections, keep-alive, the control client, and ``serve()`` in a subprocess."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cntr_sync.emulator import (
    Emulator,
    EmulatorControl,
    EmulatorServer,
    FaultConfig,
    GatewayStyle,
)

MiB = 1024 * 1024


def make_container(client: httpx.Client) -> str:
    response = client.post("/containers", json={"name": "http"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def pattern(size: int, seed: int = 7) -> Iterator[bytes]:
    """Deterministic, non-repeating-looking bytes in 1 MiB pieces."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    remaining = size
    index = 0
    while remaining > 0:
        piece = bytes([index % 251]) + block[1 : min(MiB, remaining)]
        yield piece
        remaining -= len(piece)
        index += 1


def test_chunked_request_upload(server: EmulatorServer, http: httpx.Client) -> None:
    container_id = make_container(http)
    payload = b"".join(pattern(3 * MiB + 17))

    def body() -> Iterator[bytes]:
        yield (
            b'--chunky\r\nContent-Disposition: form-data; name="file"; filename="chunked.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]
        yield b"\r\n--chunky--\r\n"

    response = http.post(
        f"/containers/{container_id}/files",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=chunky"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(payload)
    record = server.emulator.requests_log()[-1]
    assert record.headers["transfer-encoding"] == "chunked"
    content = http.get(f"/containers/{container_id}/files/{response.json()['id']}/content")
    assert content.content == payload
    assert http.get(f"/containers/{container_id}").status_code == 200


def test_dropped_connection(server: EmulatorServer, http: httpx.Client) -> None:
    server.emulator.fail_next("list_containers", "drop")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get("/containers")
    assert http.get("/containers").status_code == 200


def test_large_upload_streams_to_disk_and_back(
    server: EmulatorServer, http: httpx.Client, tmp_path: Path
) -> None:
    size = 20 * MiB
    source = tmp_path / "big.bin"
    sent = hashlib.sha256()
    with source.open("wb") as out:
        for piece in pattern(size):
            sent.update(piece)
            out.write(piece)
    container_id = make_container(http)
    with source.open("rb") as handle:
        created = http.post(
            f"/containers/{container_id}/files", files={"file": ("big.bin", handle)}
        ).json()
    assert created["bytes"] == size
    blob = server.emulator.blob_path(container_id, created["id"])
    assert blob is not None
    assert blob.is_relative_to(tmp_path / "served")
    assert blob.stat().st_size == size
    received = hashlib.sha256()
    url = f"/containers/{container_id}/files/{created['id']}/content"
    with http.stream("GET", url) as response:
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_bytes():
            received.update(chunk)
    assert received.hexdigest() == sent.hexdigest()


def test_upload_is_spooled_while_it_streams(tmp_path: Path) -> None:
    """Half-way through an in-process upload, the first half is already on disk."""
    size = 16 * MiB
    observed: list[int] = []
    with Emulator(data_dir=tmp_path) as emu:
        # MockTransport reads the whole body first; the emulator's own transport streams.
        client = httpx.Client(transport=emu.transport(), base_url="http://x/v1")
        container_id = make_container(client)

        def body() -> Iterator[bytes]:
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
            for index, piece in enumerate(pattern(size)):
                if index == 8:
                    spools = list((tmp_path / "blobs").glob("upload-*"))
                    observed.extend(path.stat().st_size for path in spools)
                yield piece
            yield b"\r\n--b--\r\n"

        response = client.post(
            f"/containers/{container_id}/files",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        client.close()
        assert response.json()["bytes"] == size
    assert len(observed) == 1
    assert 7 * MiB <= observed[0] <= 8 * MiB


def test_keep_alive_survives_an_unread_upload_body(http: httpx.Client) -> None:
    refused = http.post("/containers/cntr_missing/files", files={"file": ("a", b"x" * 300_000)})
    assert refused.status_code == 404
    container_id = make_container(http)
    assert http.get(f"/containers/{container_id}/files").status_code == 200


def test_concurrent_requests(server: EmulatorServer, http: httpx.Client) -> None:
    container_id = make_container(http)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with httpx.Client(base_url=server.base_url, timeout=10.0) as own:
                for round_ in range(5):
                    response = own.post(
                        f"/containers/{container_id}/files",
                        files={"file": (f"{index}-{round_}.txt", os.urandom(2048))},
                    )
                    assert response.status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not errors
    listed = http.get(f"/containers/{container_id}/files", params={"limit": 100}).json()
    assert len(listed["data"]) == 40


def test_control_client_over_http(server: EmulatorServer, http: httpx.Client) -> None:
    with EmulatorControl(server.base_url) as control:
        assert control.health()
        control.set_gateway(GatewayStyle(cursor_style="opaque"))
        container_id = make_container(http)
        control.add_assistant_file(container_id, "../../etc/passwd", None, content_missing=True)
        page = http.get(f"/containers/{container_id}/files").json()
        assert "has_more" not in page
        assert page["data"][0]["path"] == "../../etc/passwd"
        control.fail_next("retrieve_container", 502)
        assert http.get(f"/containers/{container_id}").status_code == 502
        assert control.counts()["retrieve_container"] == 1
        control.reset()
        assert http.get("/containers").json()["data"] == []


def test_control_clears_faults_without_touching_containers(
    server: EmulatorServer, http: httpx.Client
) -> None:
    with EmulatorControl(server.base_url) as control:
        container_id = make_container(http)
        control.set_faults(FaultConfig(latency_ms=1.0, only_operations=frozenset({"list_files"})))
        control.fail_next("*", 503, count=5)
        assert http.get(f"/containers/{container_id}").status_code == 503
        control.clear_faults()
        assert control.faults() == FaultConfig()
        # The four scripted failures left are gone; the container is still there.
        assert http.get(f"/containers/{container_id}").status_code == 200
        assert http.get("/containers").json()["data"][0]["id"] == container_id
        raw = http.post(f"{server.root_url}/_emulator/faults/clear")
        assert raw.status_code == 200 and raw.json() == FaultConfig().model_dump(mode="json")


def test_control_shows_hostile_fields_and_hides_others(
    server: EmulatorServer, http: httpx.Client
) -> None:
    with EmulatorControl(server.base_url) as control:
        container_id = make_container(http)
        made = control.add_assistant_file(container_id, "/mnt/data/a.txt", b"abc")
        control.show_fields(container_id, made["id"], {"bytes": 2**64, "path": 7}, ["source"])
        (listed,) = http.get(f"/containers/{container_id}/files").json()["data"]
        assert (listed["bytes"], listed["path"], "source" in listed) == (2**64, 7, False)
        control.show_fields(container_id, made["id"], {})
        (listed,) = http.get(f"/containers/{container_id}/files").json()["data"]
        assert (listed["bytes"], listed["path"], listed["source"]) == (
            3,
            "/mnt/data/a.txt",
            "assistant",
        )


def test_control_endpoints_are_404_without_control(tmp_path: Path) -> None:
    with (
        EmulatorServer(data_dir=tmp_path) as plain,
        EmulatorControl(plain.base_url) as control,
        pytest.raises(httpx.HTTPStatusError) as raised,
    ):
        control.health()
    assert raised.value.response.status_code == 404


@pytest.mark.e2e
def test_serve_in_a_subprocess(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from cntr_sync.emulator import serve; "
        f"serve('127.0.0.1', 0, control=True, data_dir=Path({str(tmp_path)!r}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("cntr-sync emulator listening on http://127.0.0.1:"), line
        base_url = line.rsplit(" ", 1)[-1].strip()
        assert base_url.endswith("/v1")
        with EmulatorControl(base_url) as control, httpx.Client(base_url=base_url) as api:
            assert control.health()
            container_id = make_container(api)
            assert api.get(f"/containers/{container_id}").json()["name"] == "http"
            assert control.counts()["create_container"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
