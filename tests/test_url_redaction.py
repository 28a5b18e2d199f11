"""Issue 25, finding 13: the values of a base URL's query and of ``extra_query`` are
secrets (``?api-key=...``, a gateway's ``sig``), whatever their names: no output
shows them (error lines, ``config check``, ``repr(Settings)``, logs, error
messages); the parameters' names stay visible."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.config import Settings
from cntr_sync.errors import ApiError, LocalError, TransportError, redact, redact_url
from cntr_sync.logs import configure, get_logger

KEY_VALUE = "SECRET-QUERY-KEY-0001"
SIG_VALUE = "XYZ-SIGNATURE-0002"
BASE_URL = f"https://gw.example/v1?api-key={KEY_VALUE}&sig={SIG_VALUE}"
EXTRA_QUERY = {"sig": SIG_VALUE, "api-version": "2025-04-01-preview"}


def assert_redacted(text: str) -> None:
    """Neither secret value appears in ``text``; the parameters' names do."""
    assert KEY_VALUE not in text, text
    assert SIG_VALUE not in text, text
    assert "api-key=" in text or '"api-key"' in text, text
    assert "sig" in text, text


def settings() -> Settings:
    return Settings.load(
        overrides={"base_url": BASE_URL, "extra_query": EXTRA_QUERY, "api_key": "sk-x"}, env={}
    )


def test_redact_url_keeps_every_name_and_no_value() -> None:
    assert redact_url(BASE_URL) == "https://gw.example/v1?api-key=[redacted]&sig=[redacted]"
    assert (
        redact_url("https://u:p@ss@gw.example:8443/v1?a=1&flag&empty=#part")
        == "https://u:[redacted]@gw.example:8443/v1?a=[redacted]&flag&empty=#part"
    )
    assert redact_url("https://gw.example/v1") == "https://gw.example/v1"


def test_redacted_dump_and_repr_show_names_not_values() -> None:
    loaded = settings()
    dump = loaded.redacted_dump()
    assert dump["base_url"] == "https://gw.example/v1?api-key=[redacted]&sig=[redacted]"
    assert dump["extra_query"] == {"sig": "[redacted]", "api-version": "[redacted]"}
    assert_redacted(json.dumps(dump, default=str))
    assert_redacted(repr(loaded))
    assert_redacted(str(loaded))
    # Only the output is redacted: requests carry the values.
    kwargs = loaded.client_kwargs()
    assert kwargs["base_url"] == BASE_URL and kwargs["extra_query"] == EXTRA_QUERY
    with ContainersClient(**kwargs) as client:
        # The client keeps the base URL without its query (sent with each request).
        assert repr(client) == "ContainersClient(base_url='https://gw.example/v1')"


def test_error_messages_naming_a_url_show_no_query_value() -> None:
    for message in (
        f"cannot reach {BASE_URL}: connection refused",
        f"HTTP 404: Invalid URL (GET /v1/containers?api-key={KEY_VALUE}&sig={SIG_VALUE})",
        f'redirected to "{BASE_URL}"',
    ):
        error = TransportError(message, operation="list_files")
        assert_redacted(error.message)
        assert_redacted(str(error))
        assert_redacted(redact(message))
    kept = ApiError(f"cannot reach {BASE_URL}: connection refused").message
    assert kept.endswith(": connection refused")
    # A file's name is not a URL: its "?id=3" stays as it is.
    assert LocalError("cannot read /data/page.php?id=3").message.endswith("page.php?id=3")


@pytest.mark.parametrize("log_format", ["console", "json"])
@pytest.mark.usefixtures("logging_restored")
def test_log_lines_show_no_query_value(log_format: str) -> None:
    stream = io.StringIO()
    configure(verbose=2, log_format=log_format, stream=stream)  # type: ignore[arg-type]
    get_logger("cntr_sync.test_url_redaction").info("request", url=BASE_URL)
    get_logger("cntr_sync.test_url_redaction").warning(f"retrying {BASE_URL}")
    # Another library's record (httpx logs each request with its URL).
    logging.getLogger("httpx").warning('HTTP Request: GET %s "HTTP/1.1 200 OK"', BASE_URL)
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert_redacted(line)


# -- the command line ---------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CNTR_SYNC_", "OPENAI_", "XDG_"))
    }
    env.update({"HOME": str(tmp_path / "home"), "OPENAI_API_KEY": "sk-redaction-test-0003"})
    return subprocess.run(
        [sys.executable, "-m", "cntr_sync", *args],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


@pytest.mark.e2e
def test_the_unreachable_line_shows_no_query_value(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    proc = _cli(
        tmp_path,
        "sync",
        str(root),
        "--container",
        "box",
        "--state-dir",
        str(tmp_path / "state"),
        "--base-url",
        f"http://127.0.0.1:{port}/v1?api-key={KEY_VALUE}&sig={SIG_VALUE}",
        "--extra-query",
        f"sig={SIG_VALUE}",
        "--max-retries",
        "0",
    )
    assert proc.returncode == 4, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"cannot reach the API at http://127.0.0.1:{port}/v1?api-key=[redacted]" in line
    assert_redacted(line)
    assert_redacted(proc.stdout + proc.stderr)


@pytest.mark.e2e
def test_config_check_shows_no_query_value(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'base_url = "{BASE_URL}"\n'
        f'extra_query = {{ sig = "{SIG_VALUE}", api-version = "2025-04-01-preview" }}\n',
        encoding="utf-8",
    )
    proc = _cli(tmp_path, "config", "check", str(config))
    assert proc.returncode == 0, proc.stderr
    dump = json.loads(proc.stdout)
    assert dump["base_url"] == "https://gw.example/v1?api-key=[redacted]&sig=[redacted]"
    assert dump["extra_query"] == {"sig": "[redacted]", "api-version": "[redacted]"}
    assert_redacted(proc.stdout + proc.stderr)
