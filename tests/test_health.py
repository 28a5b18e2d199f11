"""health: the health endpoint over real HTTP on 127.0.0.1 (and ::1 when available)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cntr_sync.errors import ConfigError
from cntr_sync.health import HealthServer
from cntr_sync.metrics import Metrics

POLL = 0.02  # keeps stop() fast in tests


class FakeProvider:
    """Answers what the test sets; raises for the methods named in ``failing``."""

    def __init__(self) -> None:
        self.is_live = True
        self.is_ready = False
        self.state: dict[str, Any] = {"pairs": {"docs": {"state": "syncing"}}}
        self.failing: set[str] = set()

    def live(self) -> bool:
        self._maybe_fail("live")
        return self.is_live

    def ready(self) -> bool:
        self._maybe_fail("ready")
        return self.is_ready

    def status(self) -> dict[str, Any]:
        self._maybe_fail("status")
        return self.state

    def _maybe_fail(self, method: str) -> None:
        if method in self.failing:
            raise RuntimeError(f"{method} broke")


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(provider: FakeProvider, metrics: Metrics) -> Iterator[HealthServer]:
    with HealthServer("127.0.0.1", 0, provider, metrics, poll_interval=POLL) as health:
        yield health


@pytest.fixture
def client(server: HealthServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5.0) as http_client:
        yield http_client


def test_url_and_port(server: HealthServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_livez(client: httpx.Client, provider: FakeProvider) -> None:
    response = client.get("/livez")
    assert (response.status_code, response.text) == (200, "ok\n")
    assert response.headers["content-type"].startswith("text/plain")
    provider.is_live = False
    response = client.get("/livez")
    assert (response.status_code, response.text) == (503, "not live\n")


def test_readyz(client: httpx.Client, provider: FakeProvider) -> None:
    response = client.get("/readyz")
    assert (response.status_code, response.text) == (503, "not ready\n")
    provider.is_ready = True
    response = client.get("/readyz?verbose=1")
    assert (response.status_code, response.text) == (200, "ok\n")


def test_status_json(client: httpx.Client, provider: FakeProvider) -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    provider.state = {"pairs": {"docs": {"last_success": when, "pending": 3}}}
    response = client.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"pairs": {"docs": {"last_success": str(when), "pending": 3}}}


def test_metrics_parse(client: httpx.Client, metrics: Metrics) -> None:
    metrics.record_pass("docs", "success", 0.5, uploaded_files=2)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == metrics.render()[1]
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert "cntr_sync_build_info" in families
    passes = [
        sample
        for sample in families["cntr_sync_passes"].samples
        if sample.name == "cntr_sync_passes_total"
    ]
    assert {(s.labels["result"], s.value) for s in passes if s.labels["pair"] == "docs"} == {
        ("success", 1),
        ("noop", 0),
        ("partial", 0),
        ("error", 0),
    }


def test_index(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    for path in ("/livez", "/readyz", "/status", "/metrics"):
        assert path in response.text


def test_head_has_headers_and_no_body(client: httpx.Client) -> None:
    for path in ("/", "/livez", "/readyz", "/status", "/metrics"):
        get = client.get(path)
        head = client.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        assert head.headers["content-length"] == str(len(get.content)), path
        assert head.headers["content-type"] == get.headers["content-type"], path


def test_unknown_path_404(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.head("/livez/extra").status_code == 404


def test_other_methods_405(client: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = client.request(method, "/livez", content=b"some body")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, HEAD"
    # The connection was closed after the unread body; the next request works.
    assert client.get("/livez").status_code == 200


def test_provider_raising_gives_500_and_503(client: httpx.Client, provider: FakeProvider) -> None:
    provider.failing = {"live", "ready", "status"}
    assert client.get("/livez").status_code == 503
    assert client.get("/readyz").status_code == 500
    assert client.get("/status").status_code == 500
    assert client.head("/status").status_code == 500
    # Same keep-alive client, same server thread: still answering.
    provider.failing = set()
    assert client.get("/livez").status_code == 200
    assert client.get("/status").status_code == 200


def test_unserialisable_status_gives_500(client: httpx.Client, provider: FakeProvider) -> None:
    tuple_keys: dict[Any, Any] = {(1, 2): "tuple keys are not JSON"}
    provider.state = tuple_keys
    assert client.get("/status").status_code == 500
    assert client.get("/livez").status_code == 200


def test_requests_are_not_logged(client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    client.get("/livez")
    client.get("/nope")
    client.post("/livez")
    assert capsys.readouterr().err == ""


def test_port_in_use_is_a_config_error(provider: FakeProvider, metrics: Metrics) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        health = HealthServer("127.0.0.1", port, provider, metrics, poll_interval=POLL)
        with pytest.raises(ConfigError, match=rf"http_listen 127\.0\.0\.1:{port}: "):
            health.start()
        health.stop()


def test_stop_releases_the_port_and_is_idempotent(provider: FakeProvider, metrics: Metrics) -> None:
    health = HealthServer("127.0.0.1", 0, provider, metrics, poll_interval=POLL)
    health.start()
    port = health.port
    with pytest.raises(RuntimeError):
        health.start()
    health.stop()
    health.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2.0)
    # The same port can be bound again at once (SO_REUSEADDR).
    with HealthServer("127.0.0.1", port, provider, metrics, poll_interval=POLL) as again:
        assert httpx.get(f"{again.url}/livez", timeout=2.0).status_code == 200


def test_port_before_start_is_an_error(provider: FakeProvider, metrics: Metrics) -> None:
    with pytest.raises(RuntimeError):
        _ = HealthServer("127.0.0.1", 0, provider, metrics).port


def _ipv6_loopback_unavailable() -> str | None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return f"this machine cannot bind ::1: {exc.strerror}"
        raise
    return None


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6(host: str, provider: FakeProvider, metrics: Metrics) -> None:
    reason = _ipv6_loopback_unavailable()
    if reason:
        pytest.skip(reason)
    with HealthServer(host, 0, provider, metrics, poll_interval=POLL) as health:
        assert health.url == f"http://[::1]:{health.port}"
        response = httpx.get(f"{health.url}/livez", timeout=5.0)
        assert (response.status_code, response.text) == (200, "ok\n")
