"""deploy/prometheus and deploy/grafana: the alert rules and the dashboard, checked against
the daemon itself.

The rules go through ``promtool check rules`` and their unit tests through ``promtool
test rules`` (Debian's ``prometheus`` package; ``make venv`` and ``.ci/run`` install it
where they can, else these tests skip and say so). Every metric the rules and the
dashboard name must be one a running daemon really exports: a ``cntr-sync run`` against
the emulator is asked for its ``/metrics`` (and ``cntr-sync healthcheck`` for its
``/livez``) once it has synced.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cntr_sync.emulator import EmulatorServer
from test_deploy import DEPLOY, analyze_output, run, tool

pytestmark = pytest.mark.e2e

RULES = DEPLOY / "prometheus" / "cntr-sync.rules.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "cntr-sync.rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "cntr-sync.json"
CLI = Path(sys.executable).with_name("cntr-sync")
DAEMON_DEADLINE_S = 30.0
POLL_S = 0.1

# The PromQL functions and aggregations the rules and the dashboard use; any other word
# outside label matchers, ranges and grouping clauses must be an exported metric.
PROMQL_FUNCTIONS = {"count", "histogram_quantile", "increase", "rate", "sum", "time"}


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (words that are not functions)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", text)
    text = re.sub(r"\b(?:and|or|unless)\b", "", text)
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)) - PROMQL_FUNCTIONS


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every panel's query, and the metric each templating query reads labels of."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), \w+\)", variable["query"]["query"])
            assert found is not None, variable["query"]
            exprs.append(found.group(1))
    return exprs


def test_the_rules_pass_promtool_check() -> None:
    proc = run(promtool(), "check", "rules", RULES)
    assert proc.returncode == 0, analyze_output(proc)
    assert "SUCCESS: 5 rules found" in proc.stdout


def test_the_rules_unit_tests_pass() -> None:
    proc = run(promtool(), "test", "rules", RULE_TESTS)
    assert proc.returncode == 0, analyze_output(proc)
    assert "SUCCESS" in proc.stdout


def test_the_unit_tests_would_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The tests above would fail if an alert fired later than they say."""
    broken = RULES.read_text(encoding="utf-8").replace("for: 15m", "for: 45m")
    (tmp_path / RULES.name).write_text(broken, encoding="utf-8")
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text("utf-8"), encoding="utf-8")
    proc = run(promtool(), "test", "rules", tmp_path / RULE_TESTS.name)
    assert proc.returncode != 0
    assert "alertname: CntrSyncPairFailing" in analyze_output(proc)


def test_every_alert_is_unit_tested() -> None:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == alerts


def test_the_metric_name_check_would_catch_a_typo() -> None:
    assert metric_names(
        'sum by (le, pair) (rate(cntr_sync_pass_total{pair=~"$pair"}[$__rate_interval]))'
    ) == {"cntr_sync_pass_total"}
    assert metric_names("time() - up > 3600 unless cntr_sync_pair_up") == {
        "up",
        "cntr_sync_pair_up",
    }


@pytest.fixture
def daemon_metrics(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A daemon that has synced one pair against the emulator: its /metrics and URL."""
    root = tmp_path / "tree"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# a\n", encoding="utf-8")
    (root / "b.txt").write_text("b\n", encoding="utf-8")
    then = time.time() - 3600  # older than the quiet period: nothing deferred
    for path in (root / "docs" / "a.md", root / "b.txt"):
        os.utime(path, (then, then))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CNTR_SYNC_", "OPENAI_"))
    }
    env["HOME"] = str(tmp_path)
    with EmulatorServer("127.0.0.1", 0, data_dir=tmp_path / "emulator") as server:
        config = tmp_path / "daemon.toml"
        config.write_text(
            "\n".join(
                [
                    f"base_url = {json.dumps(server.base_url)}",
                    'api_key = "sk-test"',
                    f"state_dir = {json.dumps(str(tmp_path / 'state'))}",
                    'http_listen = "127.0.0.1:0"',
                    "[[pairs]]",
                    'name = "docs"',
                    f"local = {json.dumps(str(root))}",
                    'container = "dashboard"',
                    # A hook, so that its series exists: it runs after the first pass.
                    f"exec_hook = {json.dumps([sys.executable, '-c', 'pass'])}",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        log_path = tmp_path / "daemon.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(CLI), "run", "--config", str(config)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            url = wait_until_synced(proc, log_path)
            with httpx.Client(base_url=url, timeout=10.0) as http:
                # The hook runs off the pass's thread: wait (bounded) for its count.
                deadline = time.monotonic() + DAEMON_DEADLINE_S
                while "cntr_sync_hook_runs_total{" not in (text := http.get("/metrics").text):
                    assert time.monotonic() < deadline, "the hook did not run"
                    time.sleep(POLL_S)
                yield text, url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=DAEMON_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=DAEMON_DEADLINE_S)


def wait_until_synced(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    """The daemon's HTTP URL, once /readyz says every pair has synced (bounded)."""
    deadline = time.monotonic() + DAEMON_DEADLINE_S
    url: str | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited ({proc.returncode}):\n{log_path.read_text()}")
        if url is None:
            url = started_url(log_path)
        elif httpx.get(url + "/readyz", timeout=5.0).status_code == 200:
            return url
        time.sleep(POLL_S)
    pytest.fail(f"the daemon did not sync within {DAEMON_DEADLINE_S} s:\n{log_path.read_text()}")


def started_url(log_path: Path) -> str | None:
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "daemon started":
            return str(event["http"]).rstrip("/")
    return None


def test_the_dashboard_and_the_rules_read_only_exported_metrics(
    daemon_metrics: tuple[str, str], tmp_path: Path
) -> None:
    text, url = daemon_metrics
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert "cntr_sync_pass_duration_seconds_bucket" in exported
    for source, exprs in (("dashboard", dashboard_expressions()), ("rules", rule_expressions())):
        assert exprs
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{source}: {expr!r} reads no metric"
            assert names <= exported, f"{source}: {expr!r} reads {sorted(names - exported)}"
    # Every series the daemon exports is on the dashboard (build_info as the version).
    shown = set().union(*(metric_names(expr) for expr in dashboard_expressions()))
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exported}
    assert families <= {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in shown}

    # The same daemon, asked as the image's HEALTHCHECK asks it.
    env = {**os.environ, "CNTR_SYNC_HTTP_LISTEN": url.removeprefix("http://")}
    env["HOME"] = str(tmp_path)
    proc = run(CLI, "healthcheck", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"healthy: {url}/livez answered 200\n"
