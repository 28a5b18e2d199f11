"""Load, small: 10 pairs in one daemon against a rate-limiting emulator all converge exactly.

The CI-sized version of ``bench/load.py``. One ``cntr-sync run --config FILE``
subprocess with 10 ``[[pairs]]`` tables (30 files of 1-4 KiB each, one
container each) syncs to an ``EmulatorServer`` on 127.0.0.1 that lets 20
requests a second through (token bucket) and answers the rest 429 with
``retry-after-ms``. The daemon's own limit is set far higher (100 a second,
8 transfers per pair), so it gets 429s and must get through them: with the
server's retry hints, retries, and passes that end partial or fail and are
tried again.

It proves, within a bounded deadline: every pair finishes its first full sync
(``/status``, then ``/readyz`` 200); every container then holds exactly its
tree (each file once, same bytes, nothing else, one container per name); the
server did answer 429s and the daemon counted every one of them; and the
daemon's peak RSS (``VmHWM``) stays under a generous bound.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, EmulatorServer, FaultConfig
from cntr_sync.emulator.wire import EmuRequest, EmuResponse
from helpers import assert_exact_mirror

# The daemon runs as a subprocess.
pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).with_name("cntr-sync")
API_KEY = "sk-test"
PAIRS = 10
FILES_PER_PAIR = 30
SERVER_LIMIT = 20.0  # requests a second the emulator lets through
CLIENT_RATE = 100.0  # the daemon's requests_per_second: well over the server's limit
START_DEADLINE_S = 20.0
CONVERGE_DEADLINE_S = 50.0  # 320 requests need 16 s at the limit
STOP_DEADLINE_S = 20.0
RSS_BOUND_KIB = 300 * 1024  # generous: about 80 MiB was seen
POLL_S = 0.2

T = TypeVar("T")


class RecordingEmulator(Emulator):
    """The emulator, noting the status of every answer (-1: the connection was dropped)."""

    def __init__(self, data_dir: Path, faults: FaultConfig) -> None:
        super().__init__(data_dir=data_dir, faults=faults)
        self._statuses_lock = threading.Lock()
        self._statuses: list[int] = []

    def dispatch(self, request: EmuRequest) -> EmuResponse:
        response = super().dispatch(request)
        with self._statuses_lock:
            self._statuses.append(-1 if response.drop else response.status)
        return response

    def statuses(self) -> Counter[int]:
        with self._statuses_lock:
            return Counter(self._statuses)


def write_tree(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    for number in range(FILES_PER_PAIR):
        path = root / f"d{number % 3}" / f"file-{number:02d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1024, 4096)))
    # Older than quiet_period: the first pass defers nothing.
    then = time.time() - 3600
    for path in root.rglob("*.dat"):
        os.utime(path, (then, then))


def write_config(path: Path, base_url: str, state_dir: Path, roots: list[Path]) -> None:
    """Strings as JSON strings, which are valid TOML basic strings."""
    lines = [
        f"base_url = {json.dumps(base_url)}",
        f"api_key = {json.dumps(API_KEY)}",
        f"state_dir = {json.dumps(str(state_dir))}",
        'http_listen = "127.0.0.1:0"',
        f"requests_per_second = {CLIENT_RATE!r}",
        "flush_timeout = 5.0",
    ]
    for index, root in enumerate(roots):
        lines += [
            "",
            "[[pairs]]",
            f'name = "p{index}"',
            f"local = {json.dumps(str(root))}",
            f'container = "load-{index}"',
            "quiet_period = 0.3",
            "max_delay = 3.0",
            "rescan_interval = 600.0",
            "remote_poll_interval = 600.0",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def log_events(log_path: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            found.append(event)
    return found


def vm_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/{pid}/status")


def wait_for(
    predicate: Callable[[], T],
    proc: subprocess.Popen[bytes],
    log_path: Path,
    what: Callable[[], str],
    timeout: float,
) -> T:
    """Poll ``predicate`` until truthy (returned); fail at once if the daemon exits, and after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited ({proc.returncode}) before {what()}:\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what()} within {timeout:.0f} s:\n{tail}")
        time.sleep(POLL_S)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[RecordingEmulator, EmulatorServer]]:
    (tmp_path / "emu").mkdir()
    recording = RecordingEmulator(tmp_path / "emu", FaultConfig(rate_limit_per_s=SERVER_LIMIT))
    with recording, EmulatorServer("127.0.0.1", 0, emulator=recording) as server:
        yield recording, server


@pytest.mark.slow
def test_ten_pairs_in_one_daemon_converge_exactly_through_429s(
    tmp_path: Path, emulator: tuple[RecordingEmulator, EmulatorServer]
) -> None:
    recording, server = emulator
    roots = [tmp_path / f"tree-{index}" for index in range(PAIRS)]
    for index, root in enumerate(roots):
        write_tree(root, seed=index)
    config = tmp_path / "daemon.toml"
    write_config(config, server.base_url, tmp_path / "state", roots)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CNTR_SYNC_", "OPENAI_"))
    }
    env["HOME"] = str(tmp_path)
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
        started = wait_for(
            lambda: log_events(log_path, "daemon started"),
            proc,
            log_path,
            lambda: "the daemon's start",
            START_DEADLINE_S,
        )
        url = str(started[0]["http"]).rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=10.0) as http:
            synced: set[str] = set()

            def all_synced() -> bool:
                pairs: dict[str, Any] = http.get("/status").json()["pairs"]
                synced.update(name for name, pair in pairs.items() if pair["first_sync_done"])
                return len(synced) == PAIRS and http.get("/readyz").status_code == 200

            began = time.monotonic()
            wait_for(
                all_synced,
                proc,
                log_path,
                lambda: f"every pair synced (so far {sorted(synced)})",
                CONVERGE_DEADLINE_S,
            )
            converged_s = time.monotonic() - began
            peak_kib = vm_kib(proc.pid, "VmHWM")
            pairs = http.get("/status").json()["pairs"]
            metrics = http.get("/metrics").text
        statuses = recording.statuses()
        container_ids = {name: pair["container_id"] for name, pair in pairs.items()}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    # The limit was felt, and the daemon saw every 429 the server sent.
    assert statuses[429] > 0, statuses
    client_429 = sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "cntr_sync_api_requests_total" and sample.labels["status"] == "429"
    )
    assert client_429 == statuses[429]
    assert peak_kib < RSS_BOUND_KIB, f"daemon VmHWM {peak_kib} KiB"
    recording.set_faults(FaultConfig())  # the checks' own requests go unlimited
    with ContainersClient(API_KEY, base_url=server.base_url) as client:
        names = Counter(container.name for container in client.iter_containers())
        assert names == Counter(f"load-{index}" for index in range(PAIRS))
        for index, root in enumerate(roots):
            assert_exact_mirror(client, container_ids[f"p{index}"], root)
    print(
        f"converged in {converged_s:.1f} s; server answers {dict(statuses)}; "
        f"daemon VmHWM {peak_kib / 1024:.1f} MiB"
    )
