"""Target P: what the daemon's remote poll costs, and what a pass that finds nothing writes.

For each size (1,000, 10,000 and 100,000 files; ``--quick``: 300; or ``--sizes``) it
builds a tree of small files, serves the emulator on 127.0.0.1 and starts
``cntr-sync run --config FILE``: one pair in ``both``, ``remote_poll_interval`` of
2 s, rescans and full listings an hour apart (so that only polls run). Once the
first pass and the poll after it (a full listing: the container was empty before
the first pass) are done, it measures:

- idle polls: the list requests of two polls that find nothing new (target: 1 each,
  where a full listing costs ceil(N/100)), and, with ``strace`` attached to the
  daemon for those two polls, every write and sync to a file under the state
  directory (target: 0);
- 5 files the model writes: the list requests of the poll that brings them home
  (target: at most 2, ceil(5/100) + 1) and when the last of them is on disk,
  counted from the moment the emulator stored it (target: within the poll
  interval + 1 s).

At the smallest size, with the daemon stopped, it also runs a no-op one-shot
``cntr-sync sync`` of the same pair under ``strace -f`` and counts the same writes
and syncs (target: 0). Without ``strace`` on the machine the write figures are
taken from the state directory's stat instead (files whose size, times or inode
changed, and files made or removed), and named so.

Run: ``.venv/bin/python bench/remote_poll.py [--quick] [--json] [--sizes 1000,10000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _emulated import (
    RecordingEmulator,
    build_tree,
    check,
    cli_env,
    emulator_server,
    run_cli,
    script_main,
    target_record,
)
from _support import Daemon, backdate, cntr_sync_command, daemon_process, run_main
from _support import write_config as shared_write_config
from cntr_sync.config import Settings

CONTAINER = "bench-remote-poll"
POLL_S = 2.0
NEW_FILES = 5
FILE_BYTES = 256
AN_HOUR = 3600.0
WAIT_S = 60.0
# What strace reports that changes a file: writes, syncs, truncation, and files made
# or removed beside it (the WAL's -shm is made and written when a WAL file is opened).
TRACED = "write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,ftruncate,unlink,rename,creat"
SYNCS = ("fsync(", "fdatasync(")


def write_config(path: Path, base_url: str, work_dir: Path, root: Path) -> None:
    # A product default rate would pace the first pass; lifted, as daemon_change does.
    lifted = Settings.model_fields["requests_per_second"].default is not None
    shared_write_config(
        path,
        base_url=base_url,
        state_dir=work_dir / "state",
        root=root,
        container=CONTAINER,
        requests_per_second=100000.0 if lifted else None,
        pair_options={
            "direction": "both",
            "remote_poll_interval": POLL_S,
            "full_listing_interval": AN_HOUR,
            "rescan_interval": AN_HOUR,
        },
    )


def wait_passes(daemon: Daemon, count: int, timeout_s: float) -> dict[str, Any]:
    """Until the pair has run ``count`` passes and is idle (bounded); its status."""
    deadline = time.monotonic() + timeout_s
    pair: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pair = daemon.pair()
        if int(pair.get("passes") or 0) >= count and pair.get("state") == "idle":
            return pair
        time.sleep(0.05)
    raise RuntimeError(f"the daemon did not reach {count} passes within {timeout_s:.0f} s: {pair}")


# -- counting writes -------------------------------------------------------------------------


def state_writes(trace: Path, state_dir: Path) -> tuple[int, int]:
    """(writes, syncs) in an ``strace -y`` log that name a file under ``state_dir``."""
    prefix = f"<{state_dir}"
    writes = syncs = 0
    for line in trace.read_text(errors="replace").splitlines():
        if prefix not in line and f'"{state_dir}' not in line:
            continue
        if any(call in line for call in SYNCS):
            syncs += 1
        elif "resumed>" not in line:
            writes += 1
    return writes, syncs


@contextlib.contextmanager
def traced(pid: int, log: Path) -> Iterator[None]:
    """``strace`` attached to ``pid`` and its threads while the block runs."""
    strace = shutil.which("strace")
    assert strace is not None
    process = subprocess.Popen(
        [strace, "-f", "-qq", "-y", "-e", f"trace={TRACED}", "-p", str(pid), "-o", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # attaching to every thread takes a moment
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def picture(state_dir: Path) -> dict[str, tuple[int, int, int, int]]:
    paths = [state_dir, *sorted(state_dir.iterdir())]
    return {
        p.name: (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino)
        for p in paths
        for s in [p.stat()]
    }


def picture_changes(before: dict[str, Any], after: dict[str, Any]) -> int:
    return sum(1 for name in before.keys() | after.keys() if before.get(name) != after.get(name))


# -- one size ----------------------------------------------------------------------------------


def measure_size(work_dir: Path, size: int, *, one_shot: bool) -> dict[str, Any]:
    root = work_dir / "tree"
    build_tree(root, size, FILE_BYTES)
    backdate(root)
    state_dir = work_dir / "state"
    use_strace = shutil.which("strace") is not None
    figures: dict[str, Any] = {"files": size, "full_listing_requests": math.ceil(size / 100)}
    with emulator_server(work_dir / "emulator") as (server, emulator):
        config = work_dir / "daemon.toml"
        write_config(config, server.base_url, work_dir, root)
        with daemon_process(config, work_dir) as daemon:
            daemon.wait_ready(timeout_s=120.0 + size * 0.05)
            # The first pass, then the poll after it (a full listing: the first pass
            # found the container empty), then one quick poll.
            start = wait_passes(daemon, 3, 120.0 + size * 0.05)
            figures.update(
                idle_polls(daemon, emulator, state_dir, int(start["passes"]), use_strace)
            )
            figures.update(new_model_files(daemon, emulator, root, str(start["container_id"])))
        if one_shot:
            figures.update(one_shot_sync(work_dir, server.base_url, root, state_dir, use_strace))
    figures["writes_counted_by"] = "strace" if use_strace else "stat"
    return figures


def idle_polls(
    daemon: Daemon,
    emulator: RecordingEmulator,
    state_dir: Path,
    passes: int,
    use_strace: bool,
) -> dict[str, Any]:
    trace = state_dir.parent / "idle.strace"
    before = picture(state_dir)
    with traced(daemon.child.pid, trace) if use_strace else contextlib.nullcontext():
        wait_passes(daemon, passes + 1, WAIT_S)  # a poll that began before strace was attached
        emulator.reset_answers()
        pair = wait_passes(daemon, passes + 3, WAIT_S)
        counts = emulator.by_operation()
    polls = int(pair["passes"]) - passes - 1
    if use_strace:
        writes, syncs = state_writes(trace, state_dir)
    else:
        writes, syncs = picture_changes(before, picture(state_dir)), 0
    return {
        "idle_polls": polls,
        "idle_list_requests_per_poll": counts.get("list_files", 0) / polls,
        "idle_requests_per_poll": sum(counts.values()) / polls,
        "idle_state_writes": writes,
        "idle_state_syncs": syncs,
    }


def new_model_files(
    daemon: Daemon, emulator: RecordingEmulator, root: Path, container_id: str
) -> dict[str, Any]:
    passes = int(daemon.pair()["passes"])
    emulator.reset_answers()
    names = [f"model-{number}.txt" for number in range(NEW_FILES)]
    written = time.monotonic()
    for name in names:
        emulator.add_assistant_file(container_id, f"/mnt/data/{name}", b"the model wrote this\n")
    deadline = written + WAIT_S
    while time.monotonic() < deadline and not all((root / n).exists() for n in names):
        time.sleep(0.01)
    on_disk = time.monotonic() - written
    if not all((root / n).exists() for n in names):
        raise RuntimeError(f"the model's files were not on disk within {WAIT_S:.0f} s")
    wait_passes(daemon, passes + 1, WAIT_S)
    counts = emulator.by_operation()
    return {
        "new_list_requests": counts.get("list_files", 0),
        "new_downloads": counts.get("file_content", 0),
        "new_on_disk_s": round(on_disk, 3),
    }


def one_shot_sync(
    work_dir: Path, base_url: str, root: Path, state_dir: Path, use_strace: bool
) -> dict[str, Any]:
    args = ["sync", str(root), "--container", CONTAINER, "--direction", "both"]
    args += ["--state-dir", str(state_dir)]
    env = cli_env(base_url)
    run_cli(args, env, 600.0)  # whatever the daemon left to settle (it wrote nothing either)
    trace = work_dir / "sync.strace"
    before = picture(state_dir)
    if use_strace:
        strace = shutil.which("strace")
        assert strace is not None
        prefix = [strace, "-f", "-qq", "-y", "-e", f"trace={TRACED}", "-o", str(trace), "--"]
        completed = subprocess.run(
            [*prefix, *cntr_sync_command(), *args],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
        exit_code = completed.returncode
        writes, syncs = state_writes(trace, state_dir)
    else:
        exit_code = run_cli(args, env, 600.0).exit_code
        writes, syncs = picture_changes(before, picture(state_dir)), 0
    return {"sync_exit": exit_code, "sync_state_writes": writes, "sync_state_syncs": syncs}


# -- the target ------------------------------------------------------------------------------


def measure(work_dir: Path, *, quick: bool = False, sizes: str | None = None) -> dict[str, Any]:
    chosen = (
        [int(s) for s in sizes.split(",")]
        if sizes
        else ([300] if quick else [1000, 10_000, 100_000])
    )
    command = ".venv/bin/python bench/remote_poll.py" + (" --quick" if quick else "")
    checks: list[dict[str, Any]] = []
    details: dict[str, Any] = {"poll_interval_s": POLL_S, "sizes": []}
    for position, size in enumerate(chosen):
        size_dir = work_dir / f"n{size}"
        size_dir.mkdir()
        try:
            figures = measure_size(size_dir, size, one_shot=position == 0)
        finally:
            shutil.rmtree(size_dir, ignore_errors=True)
        details["sizes"].append(figures)
        checks += size_checks(figures)
    return target_record("P", "remote poll, quiet passes", command, checks, details)


def size_checks(f: dict[str, Any]) -> list[dict[str, Any]]:
    n, full = f["files"], f["full_listing_requests"]
    by = f["writes_counted_by"]
    per_poll = f["idle_list_requests_per_poll"]
    items = [
        check(
            f"{n} files, idle poll: list requests",
            measured=per_poll,
            reference=full,
            reference_name="a full listing",
            ratio=per_poll / full,
            target="1",
            passed=per_poll == 1,
            unit="requests",
        ),
        check(
            f"{n} files, {NEW_FILES} new model files: list requests",
            measured=f["new_list_requests"],
            reference=full,
            reference_name="a full listing",
            ratio=f["new_list_requests"] / full,
            target="<= 2",
            passed=f["new_list_requests"] <= 2 and f["new_downloads"] == NEW_FILES,
            unit="requests",
        ),
        check(
            f"{n} files, {NEW_FILES} new model files: on disk after",
            measured=f["new_on_disk_s"],
            reference=POLL_S + 1,
            reference_name="poll interval + 1 s",
            ratio=f["new_on_disk_s"] / (POLL_S + 1),
            target="<= poll interval + 1 s",
            passed=f["new_on_disk_s"] <= POLL_S + 1,
        ),
        zero_check(
            f"{n} files, idle polls: writes under the state dir ({by})", f["idle_state_writes"]
        ),
    ]
    if by == "strace":
        items.append(
            zero_check(f"{n} files, idle polls: fsyncs under the state dir", f["idle_state_syncs"])
        )
    if "sync_state_writes" in f:
        items.append(
            zero_check(
                f"{n} files, no-op sync: writes under the state dir ({by})", f["sync_state_writes"]
            )
        )
        if by == "strace":
            items.append(
                zero_check(
                    f"{n} files, no-op sync: fsyncs under the state dir", f["sync_state_syncs"]
                )
            )
    return items


def zero_check(figure: str, count: int) -> dict[str, Any]:
    return check(
        figure,
        measured=count,
        reference=0,
        reference_name="none",
        ratio=float(count),
        target="0",
        passed=count == 0,
        unit="calls",
    )


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", help="comma-separated file counts (default 1000,10000,100000)")


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__ or "", options))
