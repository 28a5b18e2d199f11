"""The control surface: what ``flush`` costs and promises, and a reader that never reads.

Serves the recording emulator on 127.0.0.1 (25 ms added to every answer once the
daemon is ready) and starts ``cntr-sync run --config FILE`` as a child process: one
pair of 200 small files (``--quick``: 50), ``direction = "both"``, the product's
defaults but ``remote_poll_interval`` and ``rescan_interval`` of an hour (only the
flushes list the container) and the control socket in the state directory. Then,
through ``ControlClient`` on that socket:

- **edit, flush**: 20 times (``--quick``: 4), a file is written and ``flush`` called at
  once. Checked: the emulator stored the upload before ``flush`` returned (the file
  is in the container when it returns). Figure: the flush's wall time beside the
  pass's own ``seconds`` (from its summary): what waiting through the socket adds.
- **model writes, flush**: 10 times (``--quick``: 3), a file is added to the container
  as the model would; checked: it is on disk when ``flush`` returns.
- **100 flushes at once** (``--quick``: 20), from as many threads behind a barrier,
  while each listing page takes 500 ms (so a pass outlasts the threads' start): the
  passes they caused (``pass-start`` events of reason ``requested``), target one or two.
- **a reader that never reads**: a raw connection asks for ``GET /events`` and reads
  nothing; the edit-flush series is run again. Figures: p50 flush time with the
  stalled reader over without it, and the daemon's RSS growth meanwhile.

Run: ``.venv/bin/python bench/control_flush.py [--quick] [--json]``.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from _emulated import build_tree, check, emulator_server, latency, script_main, target_record
from _support import daemon_process, proc_status, run_main
from _support import write_config as shared_write_config
from cntr_sync.control_client import ControlClient
from cntr_sync.names import remote_names

AN_HOUR = 3600.0
FILE_BYTES = 512
PASS_TIMEOUT_S = 60.0


def write_config(path: Path, base_url: str, work_dir: Path, root: Path) -> Path:
    """The daemon's config; the path of its control socket."""
    socket_path = work_dir / "state" / "control.sock"
    shared_write_config(
        path,
        base_url=base_url,
        state_dir=work_dir / "state",
        root=root,
        container="bench-control",
        requests_per_second=None,
        pair_options={
            "direction": "both",
            "remote_poll_interval": AN_HOUR,
            "rescan_interval": AN_HOUR,
        },
        daemon_options={"control_socket": str(socket_path)},
    )
    return socket_path


def edit_and_flush(
    control: ControlClient, root: Path, stored: Any, label: str, count: int
) -> list[dict[str, Any]]:
    rows = []
    for number in range(count):
        name = f"edits/{label}{number:03d}.txt"
        (root / "edits").mkdir(exist_ok=True)
        started = time.monotonic()
        (root / name).write_text(f"{label} {number}\n" * (number + 1))
        outcome = control.flush("bench")["bench"]
        returned = time.monotonic()
        upload = stored(name, started)
        rows.append(
            {
                "flush_s": round(returned - started, 4),
                "pass_s": outcome.summary["seconds"],
                "in_container_at_return": upload is not None and upload <= returned,
                "exit_code": outcome.exit_code,
            }
        )
    return rows


def measure(work_dir: Path, *, quick: bool) -> dict[str, Any]:
    files = 50 if quick else 200
    edits = 4 if quick else 20
    model_writes = 3 if quick else 10
    concurrent = 20 if quick else 100
    command = ".venv/bin/python bench/control_flush.py" + (" --quick" if quick else "")
    root = work_dir / "tree"
    build_tree(root, files, FILE_BYTES)
    details: dict[str, Any] = {"files": files, "latency_ms": 25.0}
    checks: list[dict[str, Any]] = []
    with emulator_server(work_dir / "emulator") as (server, emulator):
        config = work_dir / "daemon.toml"
        socket_path = write_config(config, server.base_url, work_dir, root)
        with (
            daemon_process(config, work_dir) as daemon,
            ControlClient(socket_path) as control,
        ):
            daemon.wait_ready(timeout_s=120.0)
            container_id = daemon.pair()["container_id"]
            emulator.set_faults(latency())

            def stored(name: str, since: float) -> float | None:
                times = [u.at for u in emulator.uploads() if remote_names(u.path)[0] == name]
                later = [at for at in times if at >= since]
                return min(later) if later else None

            plain = edit_and_flush(control, root, stored, "plain", edits)
            details["edit_flush"] = plain
            in_place = all(row["in_container_at_return"] for row in plain)
            flush_p50 = statistics.median(row["flush_s"] for row in plain)
            pass_p50 = statistics.median(row["pass_s"] for row in plain)
            checks.append(
                check(
                    f"edit then flush: the file is in the container at return ({edits} of {edits})"
                    if in_place
                    else "edit then flush: a file was NOT there",
                    measured=sum(row["in_container_at_return"] for row in plain),
                    reference=edits,
                    unit="flushes",
                    ratio=1.0 if in_place else 0.0,
                    target="all",
                    passed=in_place,
                )
            )
            checks.append(
                check(
                    f"edit then flush: p50 flush wall time over p50 pass time ({edits})",
                    measured=flush_p50,
                    reference=pass_p50,
                    reference_name="the pass's own seconds",
                    ratio=flush_p50 / pass_p50,
                    target="about one pass",
                    passed=flush_p50 <= pass_p50 + 0.25,
                )
            )

            home = 0
            for number in range(model_writes):
                content = f"model {number}\n".encode()
                emulator.add_assistant_file(container_id, f"/mnt/data/model/m{number}.txt", content)
                control.flush("bench")
                target = root / "model" / f"m{number}.txt"
                home += target.is_file() and target.read_bytes() == content
            details["model_writes_home_at_return"] = home
            checks.append(
                check(
                    "model writes then flush: the file is on disk at return",
                    measured=home,
                    reference=model_writes,
                    unit="files",
                    ratio=home / model_writes,
                    target="all",
                    passed=home == model_writes,
                )
            )

            # Each listing page takes 500 ms meanwhile, so that a pass outlasts the
            # threads' start: their requests, on a loaded machine, spread over a few
            # hundred ms, and an ask after a pass began is served by the next one.
            emulator.set_faults(latency(500, only_operations=frozenset({"list_files"})))
            # Counted from the event stream: the passes the flushes asked for, not a
            # pass the watcher starts for the files the model-write flushes brought home.
            reasons: list[str] = []
            follower = ControlClient(socket_path)

            def follow() -> None:
                for event in follower.events("bench"):
                    if event["type"] == "pass-start":
                        reasons.append(event["reason"])

            threading.Thread(target=follow, daemon=True).start()
            time.sleep(0.5)  # the stream is open
            before = reasons.count("requested")
            barrier = threading.Barrier(concurrent, timeout=PASS_TIMEOUT_S)
            codes: list[int] = []

            def one_flush() -> None:
                with ControlClient(socket_path) as own:
                    barrier.wait()
                    codes.append(own.flush("bench")["bench"].exit_code)

            threads = [threading.Thread(target=one_flush) for _ in range(concurrent)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(PASS_TIMEOUT_S)
            passes = reasons.count("requested") - before
            details["concurrent_phase_pass_reasons"] = reasons
            emulator.set_faults(latency())
            details["concurrent"] = {"flushes": concurrent, "answered": len(codes)}
            checks.append(
                check(
                    f"{concurrent} flushes at once: passes caused",
                    measured=passes,
                    reference=concurrent,
                    reference_name="flushes",
                    unit="passes",
                    ratio=passes / concurrent,
                    target="1 or 2",
                    passed=1 <= passes <= 2 and codes == [0] * concurrent,
                )
            )

            rss_before = proc_status(daemon.child.pid, "VmRSS") or 0
            stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                stalled.connect(str(socket_path))
                stalled.sendall(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
                with_reader = edit_and_flush(control, root, stored, "stalled", edits)
            finally:
                stalled.close()
            rss_after = proc_status(daemon.child.pid, "VmRSS") or 0
            details["edit_flush_stalled_reader"] = with_reader
            stalled_p50 = statistics.median(row["flush_s"] for row in with_reader)
            details["daemon_rss_kib"] = {"before": rss_before, "after": rss_after}
            checks.append(
                check(
                    "a reader that never reads: p50 flush with it over without",
                    measured=stalled_p50,
                    reference=flush_p50,
                    reference_name="p50 without it",
                    ratio=stalled_p50 / flush_p50,
                    target="about 1",
                    passed=stalled_p50 <= flush_p50 * 1.5 + 0.05,
                )
            )
            growth_mib = (rss_after - rss_before) / 1024
            checks.append(
                check(
                    "a reader that never reads: daemon RSS growth",
                    measured=growth_mib,
                    reference=1.0,
                    reference_name="one buffer of 1,000 events, rounded up",
                    unit="MiB",
                    ratio=growth_mib / 1.0,
                    target="<= 1 MiB",
                    passed=growth_mib <= 1.0,
                )
            )
            details["daemon_exit"] = daemon.child.stop()[0]
            follower.close()
    return target_record("C", "control: flush and events", command, checks, details)


if __name__ == "__main__":
    run_main(lambda: script_main(measure, __doc__ or ""))
