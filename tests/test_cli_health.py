"""cli_health: which URL the health check asks (the command itself runs in test_deploy)."""

from __future__ import annotations

import pytest

from cntr_sync.cli_health import livez_url


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", "http://127.0.0.1:9464/livez"),
        ("::", "http://[::1]:9464/livez"),
        ("127.0.0.1", "http://127.0.0.1:9464/livez"),
        ("fd00::5", "http://[fd00::5]:9464/livez"),
        ("localhost", "http://localhost:9464/livez"),
    ],
)
def test_a_wildcard_address_is_asked_on_the_loopback(host: str, expected: str) -> None:
    assert livez_url(host, 9464) == expected
