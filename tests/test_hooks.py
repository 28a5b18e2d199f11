"""hooks: exec_hook and webhook_url after a pass that changed something; timeouts,
failures, retries, coalescing; and in the daemon (in-process), /status and metrics."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from cntr_sync.control_client import ControlClient
from cntr_sync.daemon import running
from cntr_sync.hooks import WEBHOOK_ATTEMPTS, HookRunner
from cntr_sync.metrics import Metrics
from cntr_sync.models import Pair
from test_control import socket_dir, start, synced
from test_daemon import SYNC_TIMEOUT, env, make_tree, pair, server, wait_until

_ = (socket_dir, env, server)  # fixtures

SUMMARY = {"type": "pass-end", "pair": "docs", "result": "success", "summary": {"uploaded": 1}}


def make_pair(tmp_path: Path, **hooks: Any) -> Pair:
    return Pair(name="docs", local=tmp_path, container="box", **hooks)


def hook_count(metrics: Metrics, hook: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "cntr_sync_hook_runs_total", {"pair": "docs", "hook": hook, "result": result}
    )
    return value or 0.0


class Webhook:
    """A MockTransport handler answering from a script of status codes (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)


def runner(metrics: Metrics, webhook: Webhook, sleeps: list[float] | None = None) -> HookRunner:
    recorded = sleeps if sleeps is not None else []
    return HookRunner(metrics, transport=httpx.MockTransport(webhook), sleep=recorded.append)


# -- the webhook -----------------------------------------------------------------------------


def test_the_webhook_gets_the_summary_and_retries_5xx_with_backoff(tmp_path: Path) -> None:
    metrics, webhook, sleeps = Metrics(), Webhook(503, 502), []
    hooks = runner(metrics, webhook, sleeps)
    hooks.submit(make_pair(tmp_path, webhook_url="http://hook.test/synced"), SUMMARY)
    assert hooks.wait_idle(10.0)
    assert webhook.bodies == [SUMMARY] * 3
    assert len(sleeps) == 2 and sleeps[1] >= sleeps[0] > 0  # backoff between attempts
    assert hooks.status("docs") == {
        **(hooks.status("docs") or {}),
        "runs": 1,
        "failures": 0,
        "last_result": "ok",
        "last_error": None,
    }
    assert hook_count(metrics, "webhook", "ok") == 1


def test_a_webhook_that_keeps_failing_is_given_up_logged_counted_and_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics, webhook = Metrics(), Webhook(*[500] * 10)
    hooks = runner(metrics, webhook)
    url = "http://hook.test/synced?token=s3cret"
    hooks.submit(make_pair(tmp_path, webhook_url=url), SUMMARY)
    assert hooks.wait_idle(10.0)
    assert len(webhook.bodies) == WEBHOOK_ATTEMPTS  # bounded
    status = hooks.status("docs")
    assert status is not None and status["failures"] == 1
    assert status["last_error"].startswith("webhook: POST http://hook.test/synced?token=")
    assert "HTTP 500" in status["last_error"]
    assert hook_count(metrics, "webhook", "failed") == 1
    assert "hook failed" in caplog.text
    assert "s3cret" not in caplog.text and "s3cret" not in status["last_error"]


def test_a_4xx_is_not_retried(tmp_path: Path) -> None:
    metrics, webhook = Metrics(), Webhook(404)
    hooks = runner(metrics, webhook)
    hooks.submit(make_pair(tmp_path, webhook_url="http://hook.test/x"), SUMMARY)
    assert hooks.wait_idle(10.0)
    assert len(webhook.bodies) == 1
    assert hook_count(metrics, "webhook", "failed") == 1


def test_passes_that_end_while_a_hook_runs_coalesce_into_one_more_run(tmp_path: Path) -> None:
    release = threading.Event()
    bodies: list[dict[str, Any]] = []

    def slow(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        release.wait(10.0)
        return httpx.Response(200)

    hooks = HookRunner(Metrics(), transport=httpx.MockTransport(slow))
    hooked = make_pair(tmp_path, webhook_url="http://hook.test/x")
    for number in range(5):  # returns at once each time: the first run is still waiting
        hooks.submit(hooked, {"n": number})
    wait_until(lambda: bodies, 5.0, message="the first run")
    release.set()
    assert hooks.wait_idle(10.0)
    assert bodies == [{"n": 0}, {"n": 4}]  # the latest summary, once


# -- the command (processes: e2e) ---------------------------------------------------------------


@pytest.mark.e2e
def test_the_command_gets_the_summary_on_stdin_in_the_pairs_directory(tmp_path: Path) -> None:
    script = "import sys, pathlib; pathlib.Path('got.json').write_bytes(sys.stdin.buffer.read())"
    hooks = HookRunner(Metrics())
    hooks.submit(make_pair(tmp_path, exec_hook=(sys.executable, "-c", script)), SUMMARY)
    assert hooks.wait_idle(30.0)
    assert json.loads((tmp_path / "got.json").read_text()) == SUMMARY
    assert (hooks.status("docs") or {})["last_result"] == "ok"


@pytest.mark.e2e
def test_a_command_past_its_timeout_is_killed_and_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    hooks = HookRunner(metrics)
    sleeper = (sys.executable, "-c", "import time; time.sleep(60)")
    hooks.submit(make_pair(tmp_path, exec_hook=sleeper, hook_timeout=0.5), SUMMARY)
    assert hooks.wait_idle(30.0)
    status = hooks.status("docs")
    assert status is not None
    assert status["last_error"] == f"exec: {sys.executable} ran past hook_timeout (0.5 s)"
    assert hook_count(metrics, "exec", "failed") == 1


@pytest.mark.e2e
def test_a_failing_or_missing_command_is_a_failed_hook(tmp_path: Path) -> None:
    hooks = HookRunner(Metrics())
    failing = (sys.executable, "-c", "import sys; sys.exit('no good')")
    hooks.submit(make_pair(tmp_path, exec_hook=failing), SUMMARY)
    assert hooks.wait_idle(30.0)
    assert "exited 1: no good" in (hooks.status("docs") or {})["last_error"]
    hooks.submit(make_pair(tmp_path, exec_hook=(str(tmp_path / "none"),)), SUMMARY)
    assert hooks.wait_idle(30.0)
    status = hooks.status("docs") or {}
    assert "No such file or directory" in status["last_error"]
    assert status["failures"] == 2


# -- in the daemon ---------------------------------------------------------------------------


def test_the_daemon_calls_hooks_after_a_pass_that_changed_something_only(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    hooked = pair("docs", root, watch="off", webhook_url="http://hook.test/synced")
    daemon = start(tmp_path, env, socket_dir, [hooked])
    webhook = Webhook(*[503] * 100)  # always failing: passes go on regardless
    daemon.hooks = HookRunner(daemon.metrics, transport=httpx.MockTransport(webhook))
    with running(daemon), ControlClient(socket_dir / "control.sock") as control:
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        wait_until(lambda: daemon.hooks.wait_idle(0.1), SYNC_TIMEOUT, message="the hook")
        assert webhook.bodies[0]["pair"] == "docs"
        assert webhook.bodies[0]["summary"]["uploaded"] == 1
        (root / "b.txt").write_text("beta")
        assert control.flush()["docs"].in_sync
        control.flush()  # nothing changed: no hook
        wait_until(lambda: daemon.hooks.wait_idle(0.1), SYNC_TIMEOUT, message="the hook")
        assert len(webhook.bodies) == 2 * WEBHOOK_ATTEMPTS
        status = control.pairs()
        assert status["pairs"]["docs"]["settings"]["webhook_url"] == "http://hook.test/synced"
        hooks = daemon.status()["pairs"]["docs"]["hooks"]
        assert hooks["failures"] == 2 and hooks["last_result"] == "failed"
        assert "HTTP 503" in hooks["last_error"]
        assert hook_count(daemon.metrics, "webhook", "failed") == 2
