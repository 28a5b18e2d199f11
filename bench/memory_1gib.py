"""Memory of a large transfer: upload then download one big file through ContainersClient.

Measures whether memory stays flat while a file far larger than any buffer goes
through the client and the emulator. The emulator runs as a separate process
(``cntr-sync emulator``) so the two resident-set figures are separate. The file
is generated on disk in 1 MiB chunks of ``os.urandom`` (never held in memory),
uploaded with ``create_file``, downloaded with ``download_file`` into another
file, and both are compared by size and xxh3-128.

Resident memory is read three ways: a thread samples ``VmRSS`` of this process
and of the emulator from ``/proc/*/status`` during each transfer; this
process's ``VmHWM`` (the kernel's peak) is reset through ``/proc/self/clear_refs``
before each transfer, where the kernel allows it, and read after it; and
``ru_maxrss`` is printed as this process's lifetime peak. Each size gets a
fresh emulator process, and a 1 MiB round trip before "before" is read, so the
growth shows what the transfer costs per byte rather than one-time set-up
(``--no-warmup`` shows the cold figure).

Run: ``.venv/bin/python bench/memory_1gib.py [--size-mib 1024] [--compare]``.
``--compare`` runs 64 MiB first and then ``--size-mib``, and prints them side
by side: flat memory means the RSS growth is about the same for both.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import xxhash

from _support import API_KEY, emulator_process, mib, proc_status, run_main
from cntr_sync.api import ContainersClient

MIB = 1024 * 1024
CHUNK = MIB
EMULATOR_STOP_TIMEOUT_S = 10.0

_T = TypeVar("_T")


# -- /proc readings ----------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def ru_maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


class RssSampler:
    """A thread recording the highest VmRSS of this process and of ``other_pid``."""

    def __init__(self, other_pid: int, interval_s: float) -> None:
        self._other_pid = other_pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.self_peak_kib = 0
        self.other_peak_kib = 0
        self.samples = 0

    def _sample(self) -> None:
        mine = proc_status("self", "VmRSS")
        theirs = proc_status(self._other_pid, "VmRSS")
        if mine is not None:
            self.self_peak_kib = max(self.self_peak_kib, mine)
        if theirs is not None:
            self.other_peak_kib = max(self.other_peak_kib, theirs)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


# -- one measurement -------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One transfer (upload or download): its time and the highest RSS seen during it."""

    seconds: float
    client_peak_kib: int  # max of the sampled VmRSS and VmHWM (reset before the phase)
    emulator_peak_kib: int
    samples: int


@dataclass(frozen=True)
class Result:
    size_bytes: int
    generate_s: float
    upload: Phase
    download: Phase
    hashes_match: bool
    client_before_kib: int
    client_ru_maxrss_kib: int
    emulator_before_kib: int
    emulator_hwm_kib: int | None  # the emulator process's lifetime peak

    @property
    def client_peak_kib(self) -> int:
        return max(self.upload.client_peak_kib, self.download.client_peak_kib)

    @property
    def client_growth_kib(self) -> int:
        return self.client_peak_kib - self.client_before_kib

    @property
    def emulator_peak_kib(self) -> int:
        return max(self.upload.emulator_peak_kib, self.download.emulator_peak_kib)

    @property
    def emulator_growth_kib(self) -> int:
        return self.emulator_peak_kib - self.emulator_before_kib


def write_random_file(path: Path, size_bytes: int) -> str:
    """Write ``size_bytes`` of os.urandom in 1 MiB chunks; return the xxh3-128 hex digest."""
    digest = xxhash.xxh3_128()
    with path.open("wb") as sink:
        left = size_bytes
        while left > 0:
            chunk = os.urandom(min(CHUNK, left))
            digest.update(chunk)
            sink.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def run_phase(transfer: Callable[[], _T], emulator_pid: int, interval_s: float) -> tuple[_T, Phase]:
    """Run ``transfer`` while sampling both processes; reset the kernel's peak first."""
    peak_reset = reset_peak_rss()
    with RssSampler(emulator_pid, interval_s) as sampler:
        started = time.perf_counter()
        outcome = transfer()
        seconds = time.perf_counter() - started
    hwm = (proc_status("self", "VmHWM") or 0) if peak_reset else 0
    phase = Phase(
        seconds=seconds,
        client_peak_kib=max(sampler.self_peak_kib, hwm),
        emulator_peak_kib=sampler.other_peak_kib,
        samples=sampler.samples,
    )
    return outcome, phase


def measure(
    size_mib: int, work_dir: Path, interval_s: float, timeout_s: float, *, warmup: bool
) -> Result:
    size_bytes = size_mib * MIB
    run_dir = work_dir / f"{size_mib}mib"
    run_dir.mkdir()
    source = run_dir / "source.bin"
    target = run_dir / "downloaded.bin"
    started = time.perf_counter()
    source_hash = write_random_file(source, size_bytes)
    generate_s = time.perf_counter() - started

    with (
        emulator_process(run_dir, stop_timeout_s=EMULATOR_STOP_TIMEOUT_S) as emulator,
        ContainersClient(
            API_KEY, base_url=emulator.base_url, timeout=timeout_s, max_retries=0
        ) as client,
    ):
        container = client.create_container("bench-memory")
        if warmup:
            # One small round trip first, so "before" already holds what any transfer
            # allocates once (connection pool, parsers) and the growth is per-byte cost.
            small = client.create_file(container.id, os.urandom(MIB), filename="warmup.bin")
            client.download_file(container.id, small.id, io.BytesIO())
        client_before = proc_status("self", "VmRSS") or 0
        emulator_before = proc_status(emulator.pid, "VmRSS") or 0

        stored, upload = run_phase(
            lambda: client.create_file(container.id, source, filename="big.bin"),
            emulator.pid,
            interval_s,
        )

        def download() -> int:
            with target.open("wb") as sink:
                return client.download_file(container.id, stored.id, sink)

        written, download_phase = run_phase(download, emulator.pid, interval_s)
        emulator_hwm = proc_status(emulator.pid, "VmHWM")

    matches = (
        stored.bytes == size_bytes
        and written == size_bytes
        and target.stat().st_size == size_bytes
        and hash_file(target) == source_hash
    )
    source.unlink()
    target.unlink()
    return Result(
        size_bytes=size_bytes,
        generate_s=generate_s,
        upload=upload,
        download=download_phase,
        hashes_match=matches,
        client_before_kib=client_before,
        client_ru_maxrss_kib=ru_maxrss_kib(),
        emulator_before_kib=emulator_before,
        emulator_hwm_kib=emulator_hwm,
    )


# -- report -------------------------------------------------------------------------------


def _rate(size_bytes: int, seconds: float) -> str:
    return f"{seconds:.2f} s ({size_bytes / MIB / seconds:.0f} MiB/s)" if seconds > 0 else "n/a"


def _ratio(growth_kib: int, result: Result) -> str:
    return f"{growth_kib * 1024 / result.size_bytes:.4%}"


def report(results: list[Result]) -> None:
    rows: list[tuple[str, list[str]]] = [
        ("file size", [f"{r.size_bytes // MIB} MiB" for r in results]),
        ("generate (urandom -> disk)", [f"{r.generate_s:.2f} s" for r in results]),
        ("upload", [_rate(r.size_bytes, r.upload.seconds) for r in results]),
        ("download", [_rate(r.size_bytes, r.download.seconds) for r in results]),
        ("size + xxh3-128 match", ["yes" if r.hashes_match else "NO" for r in results]),
        ("client RSS before", [mib(r.client_before_kib) for r in results]),
        ("client RSS peak, upload", [mib(r.upload.client_peak_kib) for r in results]),
        ("client RSS peak, download", [mib(r.download.client_peak_kib) for r in results]),
        ("client ru_maxrss (lifetime)", [mib(r.client_ru_maxrss_kib) for r in results]),
        ("client peak growth", [mib(r.client_growth_kib) for r in results]),
        ("client growth / file size", [_ratio(r.client_growth_kib, r) for r in results]),
        ("emulator RSS before", [mib(r.emulator_before_kib) for r in results]),
        ("emulator RSS peak, upload", [mib(r.upload.emulator_peak_kib) for r in results]),
        ("emulator RSS peak, download", [mib(r.download.emulator_peak_kib) for r in results]),
        ("emulator VmHWM (lifetime)", [mib(r.emulator_hwm_kib) for r in results]),
        ("emulator peak growth", [mib(r.emulator_growth_kib) for r in results]),
        ("emulator growth / file size", [_ratio(r.emulator_growth_kib, r) for r in results]),
        (
            "RSS samples (upload/download)",
            [f"{r.upload.samples}/{r.download.samples}" for r in results],
        ),
    ]
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(values[i]) for _, values in rows) for i in range(len(results))]
    for label, values in rows:
        cells = "  ".join(value.rjust(width) for value, width in zip(values, widths, strict=True))
        print(f"{label.ljust(label_width)}  {cells}")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"\nfile size x{last.size_bytes / first.size_bytes:.0f}: client growth "
            f"{mib(first.client_growth_kib)} -> {mib(last.client_growth_kib)}, "
            f"emulator growth {mib(first.emulator_growth_kib)} -> "
            f"{mib(last.emulator_growth_kib)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument(
        "--compare", action="store_true", help="run 64 MiB first, then --size-mib, side by side"
    )
    parser.add_argument(
        "--interval-ms", type=float, default=10.0, help="RSS sampling interval (default 10)"
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the 1 MiB round trip before measuring (growth then includes one-time costs)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="client read/write timeout in seconds (default 120)",
    )
    args = parser.parse_args()
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    sizes = [64, args.size_mib] if args.compare else [args.size_mib]

    python = sys.version.split()[0]
    print(f"python {python}, {os.cpu_count()} CPUs, temp dir {tempfile.gettempdir()}")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="cntr-bench-memory-") as work:
        for size_mib in sizes:
            print(f"... {size_mib} MiB: generating, uploading, downloading", flush=True)
            results.append(
                measure(
                    size_mib,
                    Path(work),
                    args.interval_ms / 1000,
                    args.timeout,
                    warmup=not args.no_warmup,
                )
            )
    print()
    report(results)
    return 0 if all(r.hashes_match for r in results) else 1


if __name__ == "__main__":
    run_main(main)
