"""A pair's hooks: ``exec_hook`` and ``webhook_url``, run after a pass that changed something.

git-sync's exechook and webhook contract: the pass summary (the ``pass-end``
event of ``events``: pair, reason, result, pass id, counts) goes as JSON on
the command's stdin and as the webhook's POST body. The command runs without
a shell, in the pair's directory, killed past ``hook_timeout``; the webhook is
tried up to ``WEBHOOK_ATTEMPTS`` times (tenacity), each within ``hook_timeout``,
with backoff between them, on no answer, a 429 or a 5xx.

Owns ``HookRunner``: hooks run on its small pool, never on a pass's thread, one
at a time per pair; passes that end while a pair's hooks run are coalesced into
one more run with the latest summary. A failing hook is logged (its URL
redacted), counted in metrics and kept for ``/status``; it never fails a pass.

Must not: block the caller, run a shell, or log a secret (a webhook URL's
query and password are redacted).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import tenacity

from cntr_sync.errors import one_line, redact, redact_url
from cntr_sync.logs import get_logger
from cntr_sync.metrics import Metrics
from cntr_sync.models import Pair

__all__ = ["HOOK_THREADS", "WEBHOOK_ATTEMPTS", "HookRunner", "HookStatus"]

log = get_logger("cntr_sync.hooks")

# Hooks of different pairs that may run at once; more wait their turn.
HOOK_THREADS = 4
WEBHOOK_ATTEMPTS = 3
# Characters of a failing command's stderr kept in its error.
STDERR_TAIL = 200


class HookFailedError(Exception):
    """One hook run failed; the message is one line, secrets redacted."""


class _RetryableStatusError(HookFailedError):
    """A 429 or 5xx: worth another attempt."""


@dataclass
class HookStatus:
    """What ``/status`` shows of a pair's hooks."""

    runs: int = 0
    failures: int = 0
    last_at: float | None = None
    last_result: Literal["ok", "failed"] | None = None
    last_error: str | None = None
    running: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "failures": self.failures,
            "last_at": self.last_at,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "running": self.running,
        }


class HookRunner:
    """Runs each pair's hooks off the passes' threads, one run at a time per pair."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        threads: int = HOOK_THREADS,
    ) -> None:
        """``transport``: the webhook's (tests pass a ``MockTransport``); ``sleep``:
        the wait between webhook attempts."""
        self._metrics = metrics
        self._transport = transport
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cntr-sync-hook")
        self._lock = threading.Lock()
        self._status: dict[str, HookStatus] = {}
        # The latest summary that arrived while the pair's hooks were running.
        self._pending: dict[str, tuple[Pair, dict[str, Any]]] = {}

    def submit(self, pair: Pair, summary: dict[str, Any]) -> None:
        """Run ``pair``'s hooks with ``summary`` soon; returns at once."""
        if not pair.exec_hook and pair.webhook_url is None:
            return
        with self._lock:
            status = self._status.setdefault(pair.name, HookStatus())
            if status.running:
                self._pending[pair.name] = (pair, summary)
                return
            status.running = True
        try:
            self._pool.submit(self._run, pair, summary)
        except RuntimeError:  # the pool is shut down: the daemon is stopping
            with self._lock:
                status.running = False

    def status(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            status = self._status.get(name)
            return status.as_json() if status is not None else None

    def forget(self, name: str) -> None:
        with self._lock:
            self._status.pop(name, None)
            self._pending.pop(name, None)

    def close(self) -> None:
        """No new runs; runs under way end within their timeout, unwaited."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait_idle(self, timeout: float) -> bool:
        """True once no hook runs or waits (for tests and a clean stop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not any(s.running for s in self._status.values()):
                    return True
            time.sleep(0.02)
        return False

    # -- one run ---------------------------------------------------------------------

    def _run(self, pair: Pair, summary: dict[str, Any]) -> None:
        current: tuple[Pair, dict[str, Any]] | None = (pair, summary)
        while current is not None:
            self._run_once(*current)
            with self._lock:
                current = self._pending.pop(pair.name, None)
                if current is None:
                    self._status[pair.name].running = False

    def _run_once(self, pair: Pair, summary: dict[str, Any]) -> None:
        body = json.dumps(summary, default=str, sort_keys=True).encode()
        hooks: list[tuple[Literal["exec", "webhook"], Callable[[], None]]] = []
        if pair.exec_hook:
            hooks.append(("exec", lambda: self._exec(pair, body)))
        if pair.webhook_url is not None:
            url = pair.webhook_url
            hooks.append(("webhook", lambda: self._webhook(url, pair.hook_timeout, body)))
        for kind, run in hooks:
            error: str | None = None
            try:
                run()
            except HookFailedError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a hook must not kill the pool's thread
                error = f"unexpected {type(exc).__name__}: {redact(str(exc))}"
            self._record(pair.name, kind, error)

    def _record(self, name: str, kind: Literal["exec", "webhook"], error: str | None) -> None:
        self._metrics.record_hook(name, kind, error is None)
        with self._lock:
            status = self._status.setdefault(name, HookStatus())
            status.runs += 1
            status.last_at = time.time()
            status.last_result = "ok" if error is None else "failed"
            status.last_error = None if error is None else f"{kind}: {error}"
            if error is not None:
                status.failures += 1
        if error is not None:
            log.warning("hook failed", pair=name, hook=kind, error=error)

    def _exec(self, pair: Pair, body: bytes) -> None:
        argv = list(pair.exec_hook)
        try:
            done = subprocess.run(  # noqa: S603 - an argv list the user configured, no shell
                argv,
                input=body,
                capture_output=True,
                timeout=pair.hook_timeout,
                cwd=pair.local,
                env={**os.environ, "CNTR_SYNC_PAIR": pair.name},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HookFailedError(
                f"{argv[0]} ran past hook_timeout ({pair.hook_timeout:g} s)"
            ) from None
        except OSError as exc:
            raise HookFailedError(f"{argv[0]}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-STDERR_TAIL:]
            raise HookFailedError(one_line(f"{argv[0]} exited {done.returncode}: {redact(tail)}"))

    def _webhook(self, url: str, timeout: float, body: bytes) -> None:
        shown = redact_url(url)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(WEBHOOK_ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=0.5, max=10.0),
            retry=tenacity.retry_if_exception_type((_RetryableStatusError, httpx.TransportError)),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            with httpx.Client(timeout=timeout, transport=self._transport) as client:
                for attempt in retrying:
                    with attempt:
                        self._post(client, url, shown, body)
        except httpx.TransportError as exc:
            raise HookFailedError(f"POST {shown}: {type(exc).__name__}") from None

    @staticmethod
    def _post(client: httpx.Client, url: str, shown: str, body: bytes) -> None:
        answer = client.post(url, content=body, headers={"Content-Type": "application/json"})
        if answer.status_code == 429 or answer.status_code >= 500:
            raise _RetryableStatusError(f"POST {shown}: HTTP {answer.status_code}")
        if answer.status_code >= 400:
            raise HookFailedError(f"POST {shown}: HTTP {answer.status_code}")
