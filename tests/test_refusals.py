"""Refusals no retry cures (issue 25, finding 9): quota errors, and a pass whose every
request is refused for longer than ``REFUSAL_LIMIT``.

The emulator answers in process (its ``fail_next`` with ``code`` plays OpenAI's
``insufficient_quota``), retries sleep on a fake clock that the refusal count
reads too, so ten minutes of 429s take no real time. One test runs the console
script, to see the exit code and the one error line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.cli_common import EXIT_PARTIAL, EXIT_USAGE, exit_code_for
from cntr_sync.emulator import Emulator, EmulatorServer, FaultConfig
from cntr_sync.engine import Engine
from cntr_sync.errors import QuotaExceededError, RateLimitedError, RefusedTooLongError
from cntr_sync.index import Index
from cntr_sync.models import Pair
from cntr_sync.refusals import REFUSAL_LIMIT, RefusalWatch, quota_refusal
from helpers import NoSleep

BASE_URL = "http://emulator.test/v1"
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
FILES = 40
# Uploads handed to the pool before the first answer is read: a pass's concurrency
# plus apply.SUBMIT_AHEAD (8). What a fatal answer may still let out.
IN_FLIGHT = 8


class FakeClock:
    """Time moves only when a retry sleeps; shared by the pass's threads."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def body(code: str | None, error_type: str | None, message: str = "x") -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


# -- what counts as a quota refusal --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "message", "code"),
    [
        # OpenAI, as it answers an account without quota (code and type).
        (
            429,
            body("insufficient_quota", "insufficient_quota"),
            QUOTA_MESSAGE,
            "insufficient_quota",
        ),
        # Older answers left the code out.
        (429, body(None, "insufficient_quota"), QUOTA_MESSAGE, "insufficient_quota"),
        (429, body("billing_not_active", "billing_not_active"), "not active", "billing_not_active"),
        (400, body("billing_hard_limit_reached", None), "limit", "billing_hard_limit_reached"),
        # LiteLLM rewrites code and type; the upstream text stays in the message.
        (
            429,
            body("429", "throttling_error"),
            f"litellm.RateLimitError: OpenAIException - {QUOTA_MESSAGE}",
            "insufficient_quota",
        ),
        (429, None, '{"error": {"code": "insufficient_quota"}}', "insufficient_quota"),
        # A rate limit passes with waiting: not a quota refusal.
        (429, body("rate_limit_exceeded", "requests"), "Rate limit reached", None),
        (503, body("insufficient_quota", None), "odd", None),
        # A 400's message may echo a file name: only its code and type count.
        (400, body(None, "invalid_request_error"), "bad name 'exceeded your current quota'", None),
    ],
)
def test_quota_refusals_are_told_from_rate_limits(
    status: int, answer: object, message: str, code: str | None
) -> None:
    assert quota_refusal(status, answer, message) == code


# -- quota: fatal at once -------------------------------------------------------------------


def test_a_quota_429_is_not_retried(emu: Emulator) -> None:
    emu.fail_next("*", 429, count=10, code="insufficient_quota")
    sleeps = NoSleep()
    with (
        ContainersClient(
            "sk-test", base_url=BASE_URL, transport=emu.transport(), sleep=sleeps
        ) as client,
        pytest.raises(QuotaExceededError) as caught,
    ):
        list(client.iter_containers())
    assert sum(emu.counts().values()) == 1
    assert sleeps.sleeps == []
    # One line that says what is wrong and that waiting will not help.
    assert "insufficient_quota" in caught.value.message
    assert "no request can succeed" in caught.value.message
    assert caught.value.status == 429
    assert isinstance(caught.value, RateLimitedError)  # still a 429 to whoever catches those


def test_the_cli_exits_2_on_a_quota_error_and_1_on_a_long_refusal() -> None:
    quota = QuotaExceededError("the account has no quota", status=429)
    assert exit_code_for(quota) == EXIT_USAGE
    assert exit_code_for(RefusedTooLongError("429s for 10 min", status=429)) == EXIT_PARTIAL


def make_pass(tmp_path: Path, emu: Emulator, clock: FakeClock) -> tuple[Engine, Index, Any]:
    root = tmp_path / "tree"
    root.mkdir()
    for number in range(FILES):
        (root / f"f{number:02}.txt").write_text(f"file {number}")
    client = ContainersClient(
        "sk-test",
        base_url=BASE_URL,
        transport=emu.transport(),
        sleep=clock.sleep,
        clock=clock.time,
        refusals=RefusalWatch(monotonic=clock.time),
    )
    index = Index.open(tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box")
    pair = Pair(name="box", local=root, container="box")
    return Engine(client, index, pair, concurrency=4), index, client


def test_a_quota_refusal_of_the_uploads_stops_the_pass_at_once(
    tmp_path: Path, emu: Emulator
) -> None:
    """Before: every file took 5 attempts (16 files: 80, and 145 s), and the pass went on."""
    emu.fail_next("create_file", 429, count=1000, code="insufficient_quota")
    clock = FakeClock()
    engine, index, client = make_pass(tmp_path, emu, clock)
    with index, client, pytest.raises(QuotaExceededError):
        engine.run_pass()
    # At most the uploads already handed out when the first answer came.
    assert emu.counts()["create_file"] <= 4 + IN_FLIGHT
    assert clock.sleeps == []


# -- a pass refused for longer than the bound -------------------------------------------------


def test_a_pass_refused_for_longer_than_the_limit_stops_with_a_reason(
    tmp_path: Path, emu: Emulator
) -> None:
    """Every upload answers 429 with Retry-After: 60, for good, and says nothing of
    quota: the pass stops once everything was refused for ``REFUSAL_LIMIT``, instead
    of retrying every file (10,000 files: about 28 hours)."""
    emu.set_faults(
        FaultConfig(
            rate_429=1.0,
            retry_header="retry-after",
            retry_value=60.0,
            only_operations=frozenset({"create_file"}),
        )
    )
    clock = FakeClock()
    engine, index, client = make_pass(tmp_path, emu, clock)
    started = clock.time()
    with index, client, pytest.raises(RefusedTooLongError) as caught:
        engine.run_pass()
    waited = clock.time() - started
    assert REFUSAL_LIMIT <= waited <= REFUSAL_LIMIT + 8 * 60.0
    assert "every answer for 10 min was HTTP 429 or 503" in caught.value.message
    # Each wait is the server's hint; far fewer than the 80 attempts of 5 a file.
    assert set(clock.sleeps) == {60.0}
    assert emu.counts()["create_file"] < FILES


def test_one_answer_that_is_not_a_refusal_starts_the_count_again() -> None:
    clock = FakeClock()
    watch = RefusalWatch(monotonic=clock.time)
    watch.answered(refused=True)
    clock.sleep(REFUSAL_LIMIT - 1)
    watch.answered(refused=True)
    assert not watch.exceeded()
    watch.answered(refused=False)  # a 200, or a 404: the server answers
    clock.sleep(REFUSAL_LIMIT)
    assert watch.refused_for() == 0.0
    watch.answered(refused=True)
    clock.sleep(REFUSAL_LIMIT)
    assert watch.exceeded()


def test_after_the_limit_a_later_pass_stops_at_its_first_refusal(
    tmp_path: Path, emu: Emulator
) -> None:
    """The daemon's worker keeps one watch for the pair: a pass after the one that
    stopped costs one refused request, not ten more minutes."""
    clock = FakeClock()
    watch = RefusalWatch(monotonic=clock.time)
    watch.answered(refused=True)
    clock.sleep(REFUSAL_LIMIT)
    emu.fail_next("list_containers", 429, headers={"retry-after": "60"})
    with (
        ContainersClient(
            "sk-test",
            base_url=BASE_URL,
            transport=emu.transport(),
            sleep=clock.sleep,
            clock=clock.time,
            refusals=watch,
        ) as client,
        pytest.raises(RefusedTooLongError),
    ):
        list(client.iter_containers())
    assert emu.counts()["list_containers"] == 1


# -- the command line --------------------------------------------------------------------------


@pytest.mark.e2e
def test_sync_prints_one_line_and_exits_2_when_the_account_has_no_quota(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    for number in range(FILES):
        (root / f"f{number:02}.txt").write_text(f"file {number}")
    home = tmp_path / "home"
    home.mkdir()
    with EmulatorServer("127.0.0.1", 0, data_dir=tmp_path / "emu") as server:
        server.emulator.fail_next("create_file", 429, count=1000, code="insufficient_quota")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CNTR_SYNC_", "OPENAI_"))},
            "HOME": str(home),
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test",
        }
        command = [str(Path(sys.executable).with_name("cntr-sync")), "sync", str(root)]
        proc = subprocess.run(
            [*command, "--container", "box", "--state-dir", str(tmp_path / "state")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        uploads = server.emulator.counts()["create_file"]
    assert proc.returncode == 2, proc.stderr
    # The new container is announced (issue 24); then the one error line.
    notice, *lines = proc.stderr.strip().splitlines()
    assert notice.startswith('cntr-sync: new container "box" created container_id='), notice
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cntr-sync: error:")
    assert "insufficient_quota" in lines[0]
    assert "Traceback" not in proc.stderr
    # Stopped at the first answer (the default concurrency is 8), not 5 attempts a file.
    assert uploads <= 8 + IN_FLIGHT
