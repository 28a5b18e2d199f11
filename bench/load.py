"""Load: many pairs in one daemon against an emulator that rate-limits; how it converges.

Builds ``--pairs`` (10) local trees holding ``--files`` (50,000) files in all, of
``--file-size`` bytes (1 KiB) of seeded random bytes, backdated an hour. The
emulator runs in this process on 127.0.0.1 with a token-bucket rate limit of
``--rate-limit`` requests a second (burst: the same number, at least 1): over it,
a request is answered 429 with ``retry-after-ms`` saying when the next one
would pass. The emulator is wrapped so that it notes the arrival time and the
answer's status of every request. The daemon (``cntr-sync run --config FILE``)
runs as a child process with one ``[[pairs]]`` table per tree, each into its
own container, and a client-side ``requests_per_second`` of
``--requests-per-second`` (default: the server's limit).

Every 0.5 s the script reads the daemon's ``/status`` and ``VmRSS``, until every
pair has finished its first full sync (``first_sync_done``; then ``/readyz``
must answer 200) or ``--timeout`` passes. Then it reads the daemon's
``/metrics`` and ``VmHWM``, lifts the rate limit, lists every container and
compares it with its tree by name and size, and stops the daemon with SIGTERM.

It prints: the time until each pair and all pairs converged (from the daemon's
start), the requests the server saw by operation and by answer (429s apart)
and the daemon's own count of them, the peak number of requests the server saw
in any 60 s window (all of them, and those let through) against the limit, the
same per 1 s, the daemon's passes by result, its RSS (peak and at the end),
and the mirror check. It exits 1 when a pair did not converge, a container
does not mirror its tree, or the daemon did not exit 0.

``--small``: 10 pairs x 25 files against the issue's limit of 100 requests a
minute (client at the same rate), about 3 minutes; see bench/README.md.

Run: ``.venv/bin/python bench/load.py [--small] [--files N] [--rate-limit R]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from prometheus_client.parser import text_string_to_metric_families

from _support import (
    API_KEY,
    Daemon,
    backdate,
    daemon_process,
    log_events,
    mib,
    problem_lines,
    proc_status,
    run_main,
    user_files,
)
from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, EmulatorServer, FaultConfig
from cntr_sync.emulator.wire import EmuRequest, EmuResponse, match_route

POLL_S = 0.5
PROGRESS_EVERY_S = 30.0
FILES_PER_DIRECTORY = 100
WINDOW_S = 60.0
SMALL = {"pairs": 10, "files": 250, "rate_limit": 100 / 60, "timeout": 900.0}
DROPPED = -1
NO_ANSWER = 0


# -- the emulator, recording -----------------------------------------------------------------


class RecordingEmulator(Emulator):
    """The emulator, noting when each API request arrived, what it was and how it was
    answered."""

    def __init__(self, data_dir: Path, faults: FaultConfig) -> None:
        super().__init__(data_dir=data_dir, faults=faults)
        self._records_lock = threading.Lock()
        self._records: list[Record] = []

    def dispatch(self, request: EmuRequest) -> EmuResponse:
        arrived = time.monotonic()
        operation = match_route(request.method, request.path).operation
        status = NO_ANSWER  # the client went away mid-body, or a bug: no answer
        try:
            response = super().dispatch(request)
            status = DROPPED if response.drop else response.status
            return response
        finally:
            with self._records_lock:
                self._records.append(Record(arrived, operation, status))

    def records(self) -> list[Record]:
        """Every request so far, by arrival."""
        with self._records_lock:
            return sorted(self._records)


class Record(NamedTuple):
    arrived: float
    operation: str
    status: int


def stored_upload(record: Record) -> bool:
    return record.operation == "create_file" and 200 <= record.status < 300


def peak_in_window(times: Sequence[float], window: float) -> int:
    """The most of the sorted ``times`` that fall in any ``window`` seconds."""
    peak = 0
    start = 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


# -- the trees ----------------------------------------------------------------------------------


def build_trees(work: Path, pairs: int, files: int, size: int, seed: int) -> list[Path]:
    """``files`` files of ``size`` seeded random bytes, dealt over ``pairs`` trees, at most
    FILES_PER_DIRECTORY per directory; backdated an hour (see _support.backdate)."""
    rng = random.Random(seed)
    roots = [work / f"tree-{index:02d}" for index in range(pairs)]
    for index, root in enumerate(roots):
        count = files // pairs + (1 if index < files % pairs else 0)
        root.mkdir()
        for number in range(count):
            directory = root / f"d{number // FILES_PER_DIRECTORY:03d}"
            if number % FILES_PER_DIRECTORY == 0:
                directory.mkdir()
            (directory / f"f{number:05d}.bin").write_bytes(rng.randbytes(size))
        backdate(root)
    return roots


def tree_sizes(root: Path) -> dict[str, int]:
    return {
        path.relative_to(root).as_posix(): path.stat().st_size
        for path in root.rglob("*")
        if path.is_file()
    }


# -- the daemon ---------------------------------------------------------------------------------


def pair_name(index: int) -> str:
    return f"p{index:02d}"


def write_config(
    path: Path,
    *,
    base_url: str,
    state_dir: Path,
    roots: Sequence[Path],
    requests_per_second: float,
    concurrency: int,
) -> None:
    """One [[pairs]] table per tree; strings are JSON-quoted (valid TOML)."""
    lines = [
        f"base_url = {json.dumps(base_url)}",
        f"api_key = {json.dumps(API_KEY)}",
        f"state_dir = {json.dumps(str(state_dir))}",
        'http_listen = "127.0.0.1:0"',
        f"requests_per_second = {requests_per_second!r}",
        f"concurrency = {concurrency}",
    ]
    for index, root in enumerate(roots):
        lines += [
            "",
            "[[pairs]]",
            f'name = "{pair_name(index)}"',
            f"local = {json.dumps(str(root))}",
            f'container = "load-{index:02d}"',
            "quiet_period = 1.0",
            "max_delay = 10.0",
            # No rescans or polls during the run: every request is the first sync's.
            "rescan_interval = 86400.0",
            "remote_poll_interval = 86400.0",
        ]
    path.write_text("\n".join(lines) + "\n")


def metric_samples(daemon: Daemon, name: str) -> list[tuple[dict[str, str], float]]:
    response = daemon.http.get("/metrics")
    response.raise_for_status()
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    ]


@dataclass
class Watch:
    """What the polling loop saw of the daemon."""

    converged_at: dict[str, float] = field(default_factory=dict)
    rss_kib: list[int] = field(default_factory=list)
    last_errors: dict[str, str] = field(default_factory=dict)

    def poll(self, daemon: Daemon, since: float) -> None:
        rss = proc_status(daemon.child.pid, "VmRSS")
        if rss is not None:
            self.rss_kib.append(rss)
        try:
            pairs: dict[str, Any] = daemon.status()["pairs"]
        except httpx.HTTPError:
            return
        for name, pair in pairs.items():
            if pair.get("first_sync_done") and name not in self.converged_at:
                self.converged_at[name] = time.monotonic() - since
            if pair.get("last_error"):
                self.last_errors[name] = str(pair["last_error"])


def wait_converged(
    daemon: Daemon,
    emulator: RecordingEmulator,
    pairs: int,
    uploads_needed: int,
    timeout_s: float,
) -> tuple[Watch, float | None]:
    """Poll until every pair is synced and /readyz is 200 (bounded); the watch and the
    seconds from the daemon's start to /readyz 200 (None: not within the timeout)."""
    watch = Watch()
    since = daemon.child.started_at
    deadline = since + timeout_s
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    while time.monotonic() < deadline:
        if daemon.child.process.poll() is not None:
            print(f"the daemon exited with {daemon.child.process.returncode}", file=sys.stderr)
            return watch, None
        watch.poll(daemon, since)
        if len(watch.converged_at) == pairs:
            try:
                if daemon.http.get("/readyz").status_code == 200:
                    return watch, time.monotonic() - since
            except httpx.HTTPError:
                pass
        if time.monotonic() >= next_progress:
            next_progress += PROGRESS_EVERY_S
            records = emulator.records()
            limited = sum(1 for record in records if record.status == 429)
            uploads = sum(1 for record in records if stored_upload(record))
            rss_now = watch.rss_kib[-1] if watch.rss_kib else None
            print(
                f"... {time.monotonic() - since:.0f} s: {len(watch.converged_at)}/{pairs} pairs "
                f"synced, {uploads}/{uploads_needed} uploads stored, {len(records)} requests "
                f"({limited} answered 429), daemon RSS {mib(rss_now)}",
                flush=True,
            )
        time.sleep(POLL_S)
    return watch, None


# -- checks -------------------------------------------------------------------------------------


def check_mirrors(base_url: str, daemon: Daemon, roots: Sequence[Path]) -> list[str]:
    """One line per pair whose container does not hold exactly its tree (names, sizes), and
    per container name used more than once."""
    problems = []
    status = daemon.status()["pairs"]
    with ContainersClient(API_KEY, base_url=base_url) as client:
        containers = Counter(container.name for container in client.iter_containers())
        problems += [
            f"{count} containers named {name}" for name, count in containers.items() if count > 1
        ]
        for index, root in enumerate(roots):
            name = pair_name(index)
            container_id = status[name]["container_id"]
            if not container_id:
                problems.append(f"{name}: no container id")
                continue
            local = tree_sizes(root)
            remote = list(user_files(client, container_id))
            names = Counter(relpath for relpath, _ in remote)
            duplicated = sum(1 for count in names.values() if count > 1)
            sizes = {relpath: item.bytes for relpath, item in remote}
            differ = sum(
                1
                for relpath in local.keys() | sizes.keys()
                if local.get(relpath) != sizes.get(relpath)
            )
            if duplicated or differ:
                problems.append(
                    f"{name}: {differ} names differ, {duplicated} duplicated "
                    f"({len(remote)} remote, {len(local)} local)"
                )
    return problems


# -- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="10 pairs x 25 files at 100/min")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--files", type=int, default=50_000, help="files in all pairs together")
    parser.add_argument("--file-size", type=int, default=1024, help="bytes per file")
    parser.add_argument(
        "--rate-limit", type=float, default=100.0, help="the emulator's limit, requests/second"
    )
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=None,
        help="the daemon's requests_per_second (default: the emulator's limit)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="the daemon's, per pair")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to converge")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.small:
        for key, value in SMALL.items():
            setattr(args, key, value)
    if args.requests_per_second is None:
        args.requests_per_second = args.rate_limit
    if args.pairs < 1 or args.files < args.pairs or args.rate_limit <= 0:
        parser.error("need --pairs >= 1, --files >= --pairs and --rate-limit > 0")
    return args


def rate(per_second: float) -> str:
    return f"{per_second:g}/s = {per_second * 60:g}/min"


def main() -> int:
    args = parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="cntr-load-") as temp:
        work = Path(temp)
        made = time.monotonic()
        roots = build_trees(work, args.pairs, args.files, args.file_size, args.seed)
        print(
            f"{args.files} files of {args.file_size} B in {args.pairs} pairs, written in "
            f"{time.monotonic() - made:.1f} s; emulator limit {rate(args.rate_limit)}, "
            f"daemon requests_per_second {rate(args.requests_per_second)}, "
            f"concurrency {args.concurrency} per pair",
            flush=True,
        )
        (work / "emulator").mkdir()
        emulator = RecordingEmulator(
            work / "emulator", FaultConfig(rate_limit_per_s=args.rate_limit)
        )
        with emulator, EmulatorServer("127.0.0.1", 0, emulator=emulator) as server:
            config = work / "daemon.toml"
            write_config(
                config,
                base_url=server.base_url,
                state_dir=work / "state",
                roots=roots,
                requests_per_second=args.requests_per_second,
                concurrency=args.concurrency,
            )
            with daemon_process(config, work) as daemon:
                # Per pair: find the container (list), create it, upload every file.
                needed = args.files + 2 * args.pairs
                print(
                    f"daemon pid {daemon.child.pid}; at least {needed} requests, "
                    f"{needed / args.rate_limit:.0f} s at the limit",
                    flush=True,
                )
                watch, ready_s = wait_converged(
                    daemon, emulator, args.pairs, args.files, args.timeout
                )
                hwm = proc_status(daemon.child.pid, "VmHWM")
                rss_end = proc_status(daemon.child.pid, "VmRSS")
                records = emulator.records()
                try:
                    client_requests = metric_samples(daemon, "cntr_sync_api_requests_total")
                    passes = metric_samples(daemon, "cntr_sync_passes_total")
                except httpx.HTTPError as exc:
                    print(f"metrics unreadable: {exc}", file=sys.stderr)
                    client_requests, passes = [], []
                problems: list[str] = []
                if ready_s is not None:
                    emulator.set_faults(FaultConfig())  # the check's own listings go unlimited
                    problems = check_mirrors(server.base_url, daemon, roots)
                exit_code, stop_s = daemon.child.stop()
                lines = daemon.child.log_lines()

        report(
            args,
            watch=watch,
            ready_s=ready_s,
            records=records,
            client_requests=client_requests,
            passes=passes,
            hwm=hwm,
            rss_end=rss_end,
        )
        print(f"{'mirrors (names, sizes)':<34} ", end="")
        if ready_s is None:
            print("not checked: not converged")
            ok = False
        elif problems:
            print(f"MISMATCH in {len(problems)} pairs: " + "; ".join(problems[:5]))
            ok = False
        else:
            print(f"MATCH: {args.pairs} containers, {args.files} files")
        print(f"{'daemon stop (SIGTERM)':<34} exit code {exit_code} after {stop_s:.2f} s")
        print(f"{'daemon log lines by level':<34} {log_events(lines)}")
        for line in problem_lines(lines, limit=3):
            print(f"  {line}")
        if watch.last_errors:
            sample = sorted(watch.last_errors.items())[:3]
            print(
                f"{'last errors seen in /status':<34} {len(watch.last_errors)} pairs, e.g. {sample}"
            )
        ok = ok and exit_code == 0
    return 0 if ok else 1


def report(
    args: argparse.Namespace,
    *,
    watch: Watch,
    ready_s: float | None,
    records: list[Record],
    client_requests: list[tuple[dict[str, str], float]],
    passes: list[tuple[dict[str, str], float]],
    hwm: int | None,
    rss_end: int | None,
) -> None:
    print()
    converged = sorted(watch.converged_at.values())
    if ready_s is None:
        print(
            f"{'converged':<34} NO: {len(converged)}/{args.pairs} pairs within {args.timeout:.0f} s"
        )
    else:
        print(f"{'all pairs converged (/readyz 200)':<34} {ready_s:.1f} s after the daemon started")
    if converged:
        print(
            f"{'pairs converged at':<34} first {converged[0]:.1f} s, median "
            f"{converged[len(converged) // 2]:.1f} s, last {converged[-1]:.1f} s"
        )
    times = [record.arrived for record in records]
    passed = [record.arrived for record in records if record.status != 429]
    statuses = Counter(record.status for record in records)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    print(f"{'server: requests':<34} {len(records)} in {span:.1f} s")
    print(
        f"{'server: answered 429':<34} {statuses[429]} ({statuses[429] / max(1, len(records)):.1%})"
    )
    others = {status: n for status, n in sorted(statuses.items()) if status != 429}
    print(f"{'server: other answers':<34} {others}")
    sent = Counter(record.operation for record in records)
    refused = Counter(record.operation for record in records if record.status == 429)
    operations = ", ".join(f"{name} {n}/{refused[name]}" for name, n in sorted(sent.items()))
    print(f"{'server: by operation (all/429)':<34} {operations}")
    uploads = sum(1 for record in records if stored_upload(record))
    print(f"{'server: uploads stored':<34} {uploads} for {args.files} files")
    client_total = sum(value for _, value in client_requests)
    client_429 = sum(value for labels, value in client_requests if labels.get("status") == "429")
    print(
        f"{'daemon: requests (its metrics)':<34} {client_total:.0f}, of which 429: {client_429:.0f}"
    )
    limit_window = args.rate_limit * WINDOW_S
    burst = max(1.0, args.rate_limit)
    whole = " (the run is shorter: the whole run)" if span < WINDOW_S else ""
    print(
        f"{'peak in any 60 s: all requests':<34} {peak_in_window(times, WINDOW_S)}{whole}; "
        f"limit {limit_window:g} (+ burst {burst:g})"
    )
    print(f"{'peak in any 60 s: let through':<34} {peak_in_window(passed, WINDOW_S)}")
    print(
        f"{'peak in any 1 s: all / let through':<34} {peak_in_window(times, 1.0)} / "
        f"{peak_in_window(passed, 1.0)}; limit {args.rate_limit:g} (+ burst {burst:g})"
    )
    if span > 0:
        print(
            f"{'mean rate: all / let through':<34} {len(times) / span:.2f}/s / "
            f"{len(passed) / span:.2f}/s"
        )
    by_result = Counter[str]()
    for labels, value in passes:
        by_result[labels.get("result", "?")] += int(value)
    print(f"{'daemon passes by result':<34} {dict(by_result)}")
    print(f"{'daemon RSS peak (VmHWM)':<34} {mib(hwm)}")
    peak_sampled = max(watch.rss_kib, default=None)
    print(f"{'daemon RSS at the end / sampled max':<34} {mib(rss_end)} / {mib(peak_sampled)}")


if __name__ == "__main__":
    run_main(main)
