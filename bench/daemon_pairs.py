"""Target M: hundreds of pairs in one daemon (issue 26, item 7).

Builds N pairs of 20 files of 512 bytes each (500; ``--quick`` 40), serves the
emulator on 127.0.0.1 in this process, and starts ``cntr-sync run --config FILE``
as a child process: N ``[[pairs]]`` tables, the product's defaults except
``http_listen = "127.0.0.1:0"``, ``requests_per_second`` (the shared pacer's cap,
so that what it allows is known: RATE_PER_S) and, so that an idle window is idle,
``remote_poll_interval`` and ``rescan_interval`` of an hour (as target 4 does: a
periodic listing of 500 containers is a cost of its own, bounded by those
intervals). It measures, from /proc of the daemon:

- first sync: from the process's start until /readyz answers 200 (every pair has
  had a pass that ended in sync), against what the pacer allows: the requests the
  emulator answered meanwhile / RATE_PER_S. Target: within 1.2x;
- threads: the most seen (sampled every 0.25 s) and at the end of the idle window,
  against one per pair (watchdog's emitter) + 2 x max_parallel_passes + 16;
- RSS: the peak (VmHWM) against 150 MiB + 0.3 MiB a pair;
- idle CPU: utime + stime over a window with no change (300 s; ``--quick`` 20 s),
  as a share of one core. Target: under 2 %;
- a one-file change: 20 (``--quick`` 5), each a new file in another pair, from the
  file's close to the moment the emulator stored the upload (it notes the moment
  itself), with 25 ms added to every answer. Target: p95 within quiet period + 100 ms.

It also prints the daemon's inotify descriptors (one observer: one) and how the
pairs are watched (native or poll, from /status).

Run: ``.venv/bin/python bench/daemon_pairs.py [--quick] [--json] [--pairs N]
[--idle-seconds S] [--changes N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _emulated import (
    LATENCY_MS,
    check,
    emulator_server,
    latency,
    script_main,
    target_record,
)
from _support import API_KEY, Daemon, daemon_process, proc_status, run_main
from cntr_sync.config import Settings
from cntr_sync.models import PAIR_DEFAULTS
from cntr_sync.names import remote_names

FILES_PER_PAIR = 20
FILE_BYTES = 512
RATE_PER_S = 40.0
AN_HOUR = 3600.0
FIRST_SYNC_RATIO = 1.2
CPU_SHARE_LIMIT = 0.02
THREADS_SPARE = 16
RSS_BASE_MIB, RSS_PER_PAIR_MIB = 150.0, 0.3
LAND_TIMEOUT_S = 30.0
SAMPLE_EVERY_S = 0.25


def build_pairs(root: Path, pairs: int) -> list[Path]:
    """``pairs`` trees of FILES_PER_PAIR seeded files in a few directories each,
    backdated an hour (a daemon defers files younger than its quiet period)."""
    rng = random.Random(26)
    then = time.time() - 3600
    roots = []
    for number in range(pairs):
        pair_root = root / f"p{number:03d}"
        for index in range(FILES_PER_PAIR):
            directory = pair_root / ("src", "docs", "data", "")[index % 4]
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"f{index:02d}.bin"
            path.write_bytes(rng.randbytes(FILE_BYTES))
            os.utime(path, (then, then))
        roots.append(pair_root)
    return roots


def write_config(path: Path, base_url: str, state_dir: Path, roots: list[Path]) -> None:
    lines = [
        f"base_url = {json.dumps(base_url)}",
        f"api_key = {json.dumps(API_KEY)}",
        f"state_dir = {json.dumps(str(state_dir))}",
        'http_listen = "127.0.0.1:0"',
        f"requests_per_second = {RATE_PER_S!r}",
    ]
    for number, root in enumerate(roots):
        lines += [
            "",
            "[[pairs]]",
            f'name = "p{number:03d}"',
            f"local = {json.dumps(str(root))}",
            f'container = "bench-pairs-{number:03d}"',
            f"remote_poll_interval = {AN_HOUR!r}",
            f"rescan_interval = {AN_HOUR!r}",
        ]
    path.write_text("\n".join(lines) + "\n")


class Sampler:
    """The daemon's thread count, every SAMPLE_EVERY_S on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            threads = proc_status(self.pid, "Threads")
            if threads is not None:
                self.most_threads = max(self.most_threads, threads)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inotify_descriptors(pid: int) -> int:
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += str(entry.readlink()) == "anon_inode:inotify"
        except OSError:
            continue
    return count


def wait_ready(daemon: Daemon, timeout_s: float) -> float:
    """/readyz polled every 0.1 s (not /status: at 500 pairs it is a large answer)."""
    return daemon.wait_ready(timeout_s=timeout_s)


def wait_uploaded(emulator: Any, name: str, started: float, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for upload in emulator.uploads():
            if upload.at >= started and remote_names(upload.path)[0] == name:
                return float(upload.at)
        time.sleep(0.002)
    raise RuntimeError(f"{name} was not uploaded within {timeout_s:.0f} s")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def measure(
    work_dir: Path,
    *,
    quick: bool,
    pairs: int | None = None,
    idle_seconds: float | None = None,
    changes: int | None = None,
) -> dict[str, Any]:
    count = pairs or (40 if quick else 500)
    idle_s = idle_seconds or (20.0 if quick else 300.0)
    change_count = changes or (5 if quick else 20)
    command = ".venv/bin/python bench/daemon_pairs.py" + (" --quick" if quick else "")
    # Its default; 4 for a build before the setting (a baseline run).
    setting = Settings.model_fields.get("max_parallel_passes")
    parallel = int(setting.default) if setting is not None else 4
    quiet = float(PAIR_DEFAULTS["quiet_period"])
    details: dict[str, Any] = {
        "pairs": count,
        "files_per_pair": FILES_PER_PAIR,
        "rate_cap_per_s": RATE_PER_S,
        "max_parallel_passes": parallel,
        "quiet_period": quiet,
        "idle_window_s": idle_s,
    }
    roots = build_pairs(work_dir / "trees", count)
    checks: list[dict[str, Any]] = []
    with emulator_server(work_dir / "emulator") as (server, emulator):
        config = work_dir / "daemon.toml"
        write_config(config, server.base_url, work_dir / "state", roots)
        with daemon_process(config, work_dir) as daemon:
            pid = daemon.child.pid
            with Sampler(pid) as sampler:
                ready_s = wait_ready(daemon, 600.0 + count * 2.0)
                first_requests = emulator.total()
                allowed_s = first_requests / RATE_PER_S
                status = daemon.status()
                watch_kinds = Counter(str(p["watch"]) for p in status["pairs"].values())
                details.update(
                    {
                        "first_sync_s": round(ready_s, 2),
                        "first_sync_requests": first_requests,
                        "first_sync_allowed_s": round(allowed_s, 2),
                        "first_sync_by_operation": emulator.by_operation(),
                        "watch": dict(watch_kinds),
                        "inotify_descriptors": inotify_descriptors(pid),
                        "threads_most_during_first_sync": sampler.most_threads,
                    }
                )
                time.sleep(5.0)  # the last turns after the first passes end
                cpu_before, window_started = cpu_seconds(pid), time.monotonic()
                time.sleep(idle_s)
                idle_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - window_started)
                idle_threads = proc_status(pid, "Threads") or 0
                idle_requests = emulator.total() - first_requests
                details.update(
                    {
                        "idle_cpu_share": round(idle_cpu, 5),
                        "idle_threads": idle_threads,
                        "idle_requests": idle_requests,
                        "rss_idle_mib": round((proc_status(pid, "VmRSS") or 0) / 1024, 1),
                    }
                )
                emulator.set_faults(latency())
                rng = random.Random(7)
                latencies: list[float] = []
                for number in range(change_count):
                    root = roots[rng.randrange(count)]
                    path = root / f"change-{number:02d}.txt"
                    started = time.monotonic()
                    path.write_bytes(f"change {number}\n".encode())
                    stored = wait_uploaded(emulator, path.name, started, LAND_TIMEOUT_S)
                    latencies.append(stored - started)
                    time.sleep(0.3)
                details["change_latencies_s"] = [round(x, 4) for x in latencies]
                peak_rss_mib = (proc_status(pid, "VmHWM") or 0) / 1024
                details["rss_peak_mib"] = round(peak_rss_mib, 1)
                details["threads_most"] = sampler.most_threads
            details["daemon_exit"] = daemon.child.stop()[0]

    thread_limit = count + 2 * parallel + THREADS_SPARE
    rss_limit = RSS_BASE_MIB + RSS_PER_PAIR_MIB * count
    change_bound = quiet + 0.1
    worst_change = p95(latencies)
    checks += [
        check(
            f"{count} pairs, first sync / requests over the pacer's cap",
            measured=ready_s,
            reference=allowed_s,
            reference_name=f"{first_requests} requests / {RATE_PER_S:g} per s",
            ratio=ready_s / allowed_s,
            target=f"<= {FIRST_SYNC_RATIO}x",
            passed=ready_s <= FIRST_SYNC_RATIO * allowed_s,
        ),
        check(
            f"{count} pairs, threads when idle (most during the run: {sampler.most_threads})",
            measured=idle_threads,
            reference=thread_limit,
            reference_name=f"{count} + 2 x {parallel} + {THREADS_SPARE}",
            unit="threads",
            ratio=idle_threads / thread_limit,
            target=f"<= {thread_limit}",
            passed=idle_threads <= thread_limit,
        ),
        check(
            f"{count} pairs, peak RSS",
            measured=peak_rss_mib,
            reference=rss_limit,
            reference_name=f"{RSS_BASE_MIB:g} + {RSS_PER_PAIR_MIB:g} x {count} MiB",
            unit="MiB",
            ratio=peak_rss_mib / rss_limit,
            target=f"<= {rss_limit:g} MiB",
            passed=peak_rss_mib <= rss_limit,
        ),
        check(
            f"{count} pairs, idle CPU over {idle_s:g} s (share of one core)",
            measured=idle_cpu * 100,
            reference=CPU_SHARE_LIMIT * 100,
            unit="%",
            ratio=idle_cpu / CPU_SHARE_LIMIT,
            target=f"< {CPU_SHARE_LIMIT * 100:g} %",
            passed=idle_cpu < CPU_SHARE_LIMIT,
        ),
        check(
            f"{count} pairs, one-file change to listed, p95 of {len(latencies)}"
            f" ({LATENCY_MS:g} ms a request)",
            measured=worst_change,
            reference=change_bound,
            reference_name="quiet period + 100 ms",
            ratio=worst_change / change_bound,
            target=f"<= {change_bound:g} s",
            passed=worst_change <= change_bound,
        ),
    ]
    return target_record("M", f"{count} pairs in one daemon", command, checks, details)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=None, help="pairs (500; --quick 40)")
    parser.add_argument(
        "--idle-seconds", type=float, default=None, help="idle window (300; --quick 20)"
    )
    parser.add_argument("--changes", type=int, default=None, help="one-file changes (20)")


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__.splitlines()[0], options))
