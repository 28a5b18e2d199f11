"""Faults, scripted failures, counts, the request log, authentication and the control
surface, over ``httpx.MockTransport``."""

from __future__ import annotations

import base64
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cntr_sync.emulator import Emulator, EmulatorControl, FaultConfig, GatewayStyle, ManualClock


def make_container(client: httpx.Client, name: str = "box") -> str:
    response = client.post("/containers", json={"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def upload_response(client: httpx.Client, container_id: str, name: str) -> httpx.Response:
    return client.post(f"/containers/{container_id}/files", files={"file": (name, b"data")})


def file_count(emulator: Emulator, container_id: str) -> int:
    with httpx.Client(transport=httpx.MockTransport(emulator.handle)) as quiet:
        page = quiet.get(f"http://x/v1/containers/{container_id}/files", params={"limit": 100})
    return len(page.json()["data"])


# random faults


def test_error_rate_answers_5xx(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_faults(FaultConfig(seed=1, error_rate=1.0))
    statuses = {client.get("/containers").status_code for _ in range(30)}
    assert statuses <= {500, 502, 503}
    assert len(statuses) > 1
    body = client.get("/containers").json()
    assert body["error"]["type"] == "server_error"


def test_faults_are_deterministic_with_a_seed(emulator: Emulator, tmp_path: Path) -> None:
    def run(emu: Emulator) -> list[int]:
        emu.set_faults(FaultConfig(seed=42, error_rate=0.3, rate_429=0.2))
        with httpx.Client(transport=httpx.MockTransport(emu.handle)) as local:
            return [local.get("http://x/v1/containers").status_code for _ in range(40)]

    with Emulator(data_dir=tmp_path / "other") as other:
        first, second = run(emulator), run(other)
    assert first == second
    assert {200, 429} <= set(first)
    assert set(first) - {200, 429} <= {500, 502, 503}


@pytest.mark.parametrize(
    ("retry_header", "header", "check"),
    [
        ("retry-after-ms", "retry-after-ms", lambda v: v == "1500"),
        ("retry-after", "retry-after", lambda v: v == "1.5"),
        ("llm_provider-retry-after", "llm_provider-retry-after", lambda v: v == "1.5"),
        ("llm_provider-retry-after-ms", "llm_provider-retry-after-ms", lambda v: v == "1500"),
        (
            "retry-after-date",
            "retry-after",
            lambda v: abs(parsedate_to_datetime(v).timestamp() - time.time()) < 30,
        ),
    ],
)
def test_429_carries_the_retry_hint(
    client: httpx.Client, emulator: Emulator, retry_header: Any, header: str, check: Any
) -> None:
    emulator.set_faults(
        FaultConfig(seed=3, rate_429=1.0, retry_header=retry_header, retry_value=1.5)
    )
    response = client.get("/containers")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert check(response.headers[header])


def test_429_without_hint(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_faults(FaultConfig(rate_429=1.0, retry_header="none"))
    response = client.get("/containers")
    assert response.status_code == 429
    assert not any("retry" in name for name in response.headers)


def test_drop_rate_raises_remote_protocol_error(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_faults(FaultConfig(seed=0, drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        client.get("/containers")
    assert emulator.counts()["list_containers"] == 1


def test_ambiguous_uploads_are_stored(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    emulator.set_faults(FaultConfig(seed=5, ambiguous_upload_rate=1.0))
    assert upload_response(client, container_id, "a.txt").status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):
        upload_response(client, container_id, "b.txt")
    assert upload_response(client, container_id, "c.txt").status_code == 500
    assert client.get(f"/containers/{container_id}").status_code == 200
    emulator.set_faults(FaultConfig())
    assert file_count(emulator, container_id) == 3


def test_latency(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_faults(FaultConfig(latency_ms=60))
    started = time.monotonic()
    assert client.get("/containers").status_code == 200
    assert time.monotonic() - started >= 0.05


def test_rate_limit_token_bucket(
    client: httpx.Client, emulator: Emulator, clock: ManualClock
) -> None:
    emulator.set_faults(FaultConfig(rate_limit_per_s=5.0))
    statuses = [client.get("/containers").status_code for _ in range(5)]
    assert statuses == [200] * 5
    limited = client.get("/containers")
    assert limited.status_code == 429
    wait_ms = int(limited.headers["retry-after-ms"])
    assert 1 <= wait_ms <= 200
    # The bucket refills on the emulated clock: no real waiting.
    clock.advance(wait_ms / 1000 / 2)
    assert client.get("/containers").status_code == 429
    clock.advance(wait_ms / 1000)
    assert client.get("/containers").status_code == 200


def test_only_operations_limits_faults(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    emulator.set_faults(FaultConfig(error_rate=1.0, only_operations=frozenset({"list_files"})))
    assert client.get(f"/containers/{container_id}/files").status_code >= 500
    assert client.get(f"/containers/{container_id}").status_code == 200
    assert upload_response(client, container_id, "a.txt").status_code == 200


def test_broken_container_names(client: httpx.Client, emulator: Emulator) -> None:
    healthy_id = make_container(client, "fine")
    broken_id = make_container(client, "broken")
    healthy_file = upload_response(client, healthy_id, "a.txt").json()["id"]
    emulator.reset_counts()
    emulator.set_faults(FaultConfig(broken_container_names=frozenset({"broken"})))

    refused = [
        client.post("/containers", json={"name": "broken"}),
        client.get("/containers", params={"name": "broken"}),
        client.get(f"/containers/{broken_id}"),
        client.get(f"/containers/{broken_id}/files"),
        upload_response(client, broken_id, "b.txt"),
        client.get(f"/containers/{broken_id}/files/cfile_x/content"),
        client.delete(f"/containers/{broken_id}"),
    ]
    for response in refused:
        assert response.status_code == 500, response.request.url
        error = response.json()["error"]
        assert error["type"] == "server_error"
        assert error["message"].startswith("The server had an error")

    assert client.get("/containers").status_code == 200
    assert client.get("/containers", params={"name": "fine"}).status_code == 200
    assert client.get(f"/containers/{healthy_id}/files/{healthy_file}").status_code == 200
    assert upload_response(client, healthy_id, "b.txt").status_code == 200
    assert client.post("/containers", json={"name": "another"}).status_code == 200
    counts = emulator.counts()
    assert (counts["create_container"], counts["list_containers"]) == (2, 3)
    assert counts["retrieve_container"] == counts["delete_container"] == 1

    emulator.set_faults(FaultConfig())
    assert client.get(f"/containers/{broken_id}").json()["status"] == "running"
    assert file_count(emulator, broken_id) == 0


# scripted faults


def test_fail_next_statuses_and_headers(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    emulator.fail_next("list_files", 503, count=2, headers={"x-why": "scripted"})
    emulator.fail_next("retrieve_container", 429)
    emulator.fail_next("*", 408)
    first = client.get(f"/containers/{container_id}/files")
    assert (first.status_code, first.headers["x-why"]) == (503, "scripted")
    assert client.get(f"/containers/{container_id}/files").status_code == 503
    limited = client.get(f"/containers/{container_id}")
    assert limited.status_code == 429
    assert limited.headers["retry-after-ms"] == "50"
    assert client.get("/containers").status_code == 408
    assert client.get(f"/containers/{container_id}/files").status_code == 200


def test_fail_next_with_a_code_answers_openais_quota_error(
    client: httpx.Client, emulator: Emulator
) -> None:
    """The 429 an account without quota gets: no waiting cures it (issue 25, finding 9)."""
    emulator.fail_next("list_containers", 429, code="insufficient_quota", headers={})
    emulator.fail_next("list_containers", 400, code="made_up")
    quota = client.get("/containers")
    assert quota.status_code == 429
    error = quota.json()["error"]
    assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
    assert error["message"].startswith("You exceeded your current quota")
    assert "retry-after-ms" not in quota.headers  # headers={}: no hint
    other = client.get("/containers").json()["error"]
    assert (other["code"], other["type"]) == ("made_up", "invalid_request_error")
    assert client.get("/containers").status_code == 200


def test_fail_next_drop_and_ambiguous(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    emulator.fail_next("create_file", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        upload_response(client, container_id, "dropped.txt")
    assert file_count(emulator, container_id) == 0
    emulator.fail_next("create_file", "ambiguous")
    assert upload_response(client, container_id, "stored.txt").status_code == 500
    emulator.fail_next("create_file", "ambiguous_drop")
    with pytest.raises(httpx.RemoteProtocolError):
        upload_response(client, container_id, "stored-too.txt")
    assert file_count(emulator, container_id) == 2
    emulator.fail_next("delete_container", "ambiguous")
    assert client.delete(f"/containers/{container_id}").status_code == 500
    assert client.get(f"/containers/{container_id}").status_code == 404


def test_fail_next_comes_before_random_faults(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_faults(FaultConfig(error_rate=1.0))
    emulator.fail_next("list_containers", 418)
    assert client.get("/containers").status_code == 418
    assert client.get("/containers").status_code >= 500


def test_fail_next_rejects_nonsense(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="operation"):
        emulator.fail_next("list_everything", 500)
    with pytest.raises(ValueError, match="status"):
        emulator.fail_next("list_files", 200)


# counts, log, auth


def test_counts_include_fault_answers(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    emulator.fail_next("list_files", 500)
    client.get(f"/containers/{container_id}/files")
    client.get(f"/containers/{container_id}/files")
    file_id = upload_response(client, container_id, "a.txt").json()["id"]
    client.get(f"/containers/{container_id}/files/{file_id}")
    client.get(f"/containers/{container_id}/files/{file_id}/content")
    client.delete(f"/containers/{container_id}/files/{file_id}")
    client.get(f"/containers/{container_id}")
    client.get("/containers")
    client.delete(f"/containers/{container_id}")
    assert emulator.counts() == {
        "list_containers": 1,
        "create_container": 1,
        "retrieve_container": 1,
        "delete_container": 1,
        "create_file": 1,
        "list_files": 2,
        "retrieve_file": 1,
        "delete_file": 1,
        "file_content": 1,
        "unknown": 0,
    }
    emulator.reset_counts()
    assert set(emulator.counts().values()) == {0}


def test_requests_log_keeps_headers_and_queries(client: httpx.Client, emulator: Emulator) -> None:
    client.get(
        "/containers",
        params=[("limit", "5"), ("provider", "openai")],
        headers={"OpenAI-Project": "proj_1"},
    )
    record = emulator.requests_log()[-1]
    assert record.operation == "list_containers"
    assert record.method == "GET"
    assert record.path == "/v1/containers"
    assert record.query == (("limit", "5"), ("provider", "openai"))
    assert record.headers["openai-project"] == "proj_1"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer k1"},
        {"api-key": "k1"},
        {"x-api-key": "k1"},
        {"x-bf-vk": "k1"},
        {"Authorization": "Basic " + base64.b64encode(b"anyone:k1").decode()},
    ],
)
def test_auth_accepts_every_header_style(tmp_path: Path, headers: dict[str, str]) -> None:
    with (
        Emulator(data_dir=tmp_path, api_keys={"k1"}) as emu,
        httpx.Client(transport=httpx.MockTransport(emu.handle), base_url="http://x/v1") as anon,
    ):
        missing = anon.get("/containers")
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "invalid_request_error"
        wrong = anon.get("/containers", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert anon.get("/containers", headers=headers).status_code == 200


# control surface


def test_control_surface_is_off_by_default(client: httpx.Client) -> None:
    assert client.get("http://emulator.test/_emulator/health").status_code == 404
    assert client.post("http://emulator.test/_emulator/reset").status_code == 404


def test_control_surface_in_process(tmp_path: Path) -> None:
    with (
        Emulator(data_dir=tmp_path, control=True) as emu,
        EmulatorControl("http://emu.test/v1", transport=httpx.MockTransport(emu.handle)) as control,
        httpx.Client(
            transport=httpx.MockTransport(emu.handle), base_url="http://emu.test/v1"
        ) as api,
    ):
        assert control.health()
        control.set_gateway(GatewayStyle(path_style="plain", long_ids=True))
        assert emu.gateway == control.gateway() == GatewayStyle(path_style="plain", long_ids=True)
        container = control.create_container("ctl")
        added = control.add_assistant_file(
            container["id"], "/mnt/data/\x00odd", b"zz", bytes_null=True
        )
        assert (added["path"], added["bytes"], added["source"]) == (
            "/mnt/data/\x00odd",
            None,
            "assistant",
        )
        control.add_openai_file("file-1", "in.txt", b"copied")
        created = api.post(f"/containers/{container['id']}/files", json={"file_id": "file-1"})
        assert created.json()["path"] == "/mnt/data/in.txt"
        control.set_faults(FaultConfig(seed=1, rate_429=1.0))
        assert control.faults().rate_429 == 1.0
        assert api.get("/containers").status_code == 429
        control.set_faults(FaultConfig())
        control.fail_next("list_containers", "drop")
        with pytest.raises(httpx.RemoteProtocolError):
            api.get("/containers")
        assert control.counts()["list_containers"] == 2
        control.fail_next("list_containers", 429, code="insufficient_quota")
        assert api.get("/containers").json()["error"]["code"] == "insufficient_quota"
        assert [r["operation"] for r in control.requests_log()][-1] == "list_containers"
        before = emu.now()
        assert control.advance_clock(30) >= before + 30
        control.expire_container(container["id"])
        assert api.get(f"/containers/{container['id']}").json()["status"] == "expired"
        bad = api.post("http://emu.test/_emulator/fail_next", json={"operation": "x", "status": 1})
        assert bad.status_code == 400
        control.reset_counts()
        assert control.counts()["list_containers"] == 0
        control.reset()
        assert api.get("/containers").json()["data"] == []
