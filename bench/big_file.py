"""Target 6: one big file up and down with the whole command, against raw httpx streaming.

Writes one file of ``--size-mib`` (1024; ``--quick`` 64) from ``os.urandom`` in 1 MiB
chunks, serves the emulator on 127.0.0.1 (25 ms added to every answer), and in the
same run, each in its own process:

- raw upload: httpx posting the file as a streamed multipart body (the reference);
- ``cntr-sync sync DIR --json``: the upload, the whole command timed (start-up, scan,
  hash, container look-up and upload);
- raw download: httpx streaming the command's upload into a file (the reference);
- ``cntr-sync sync EMPTY --container bench-big --direction pull --json``: the whole
  command bringing that upload home (a file it has no record of is downloaded); the
  result is compared with the original by xxh3-128.

Both uploads meet the server in the same state: dirty pages are written back
(``os.sync``, untimed) before each, and the raw upload's file is deleted before the
command's. The emulator spools uploads to its disk, and every 1 GiB file it keeps
makes the next one slower to write: four raw uploads in a row took 1.2, 2.9, 3.2
and 6.0 s (its system CPU 0.6 -> 4.9 s), and 1.1 to 1.9 s each with the previous one
deleted. Kept, the raw upload's file slowed the command's upload that follows it.

Peak RSS of each command is its own ``ru_maxrss`` (``os.wait4``); the growth is that
minus the peak of the same command moving a 1 KiB file. Targets: growth under 50 MiB;
throughput at least 0.8x raw httpx (raw seconds / command seconds).

Run: ``.venv/bin/python bench/big_file.py [--quick] [--json] [--size-mib N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import xxhash

from _emulated import (
    CliRun,
    check,
    cli_env,
    emulator_server,
    latency,
    run_cli,
    run_command,
    script_main,
    target_record,
)
from _support import API_KEY, run_main

MIB = 1024 * 1024
TIMEOUT_S = 900.0
NAME = "big.bin"


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        for offset in range(0, size, MIB):
            handle.write(os.urandom(min(MIB, size - offset)))


def file_hash(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def raw_client(base_url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT_S)


def raw_upload(base_url: str, container_id: str, path: Path) -> int:
    """The reference (run as a child process): one streamed multipart upload."""
    with raw_client(base_url) as client, path.open("rb") as handle:
        started = time.perf_counter()
        response = client.post(
            f"/containers/{container_id}/files",
            files={"file": (path.name, handle, "application/octet-stream")},
        )
        response.raise_for_status()
        print(f"{time.perf_counter() - started:.6f} {response.json()['id']}")
    return 0


def raw_download(base_url: str, container_id: str, file_id: str, target: Path) -> int:
    """The reference (run as a child process): one streamed download into a file."""
    with raw_client(base_url) as client, target.open("wb") as handle:
        started = time.perf_counter()
        url = f"/containers/{container_id}/files/{file_id}/content"
        with client.stream("GET", url) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(MIB):
                handle.write(chunk)
        print(f"{time.perf_counter() - started:.6f}")
    return 0


def delete_remote(base_url: str, container_id: str, file_id: str) -> None:
    with raw_client(base_url) as client:
        client.delete(f"/containers/{container_id}/files/{file_id}").raise_for_status()


def find_upload(base_url: str, container_name: str, name: str) -> tuple[str, str]:
    """The container id and file id of the upload ``name`` in ``container_name``."""
    with raw_client(base_url) as client:
        containers = client.get("/containers", params={"name": container_name})
        containers.raise_for_status()
        for container in containers.json()["data"]:
            files = client.get(f"/containers/{container['id']}/files")
            files.raise_for_status()
            for item in files.json()["data"]:
                if str(item["path"]).endswith(name):
                    return str(container["id"]), str(item["id"])
    raise RuntimeError(f"no upload named {name} in {container_name}")


def raw_child(mode: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), f"--raw-{mode}", *args]


def median_run(runs: list[CliRun]) -> CliRun:
    """The run of median wall time (the lower middle one of an even number)."""
    return sorted(runs, key=lambda run: run.wall_s)[(len(runs) - 1) // 2]


def parse_raw(run: CliRun, what: str) -> list[str]:
    if run.exit_code != 0 or not run.stdout.strip():
        tail = run.stderr.strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"raw {what} exited {run.exit_code}: {tail[0][:300]}")
    return run.stdout.split()


def measure(
    work_dir: Path, *, quick: bool, size_mib: int | None = None, repeat: int | None = None
) -> dict[str, Any]:
    size = (size_mib or (64 if quick else 1024)) * MIB
    rounds = max(1, repeat or (1 if quick else 3))
    command = ".venv/bin/python bench/big_file.py" + (" --quick" if quick else "")
    up_dir, small_dir = work_dir / "up", work_dir / "small"
    for directory in (up_dir, small_dir, work_dir / "down-small"):
        directory.mkdir()
    source = up_dir / NAME
    started = time.perf_counter()
    write_random(source, size)
    (small_dir / "small.bin").write_bytes(os.urandom(1024))
    os.sync()
    details: dict[str, Any] = {
        "size_mib": size // MIB,
        "generate_s": round(time.perf_counter() - started, 2),
        "rounds": rounds,
    }
    timeout = TIMEOUT_S
    with emulator_server(work_dir / "emulator", latency()) as (server, _emulator):
        env = cli_env(server.base_url)
        with raw_client(server.base_url) as client:
            created = client.post("/containers", json={"name": "bench-big-raw"})
            created.raise_for_status()
            raw_container = str(created.json()["id"])

        def sync(*args: str) -> CliRun:
            return run_cli(["sync", *args, "--json"], env, timeout)

        ups: list[CliRun] = []
        downs: list[CliRun] = []
        raw_ups: list[float] = []
        raw_downs: list[float] = []
        try:
            # Raw and command in turns, each meeting the server as the other did: the
            # previous 1 GiB upload deleted and dirty pages written back (untimed).
            for number in range(rounds):
                raw_up = run_command(
                    raw_child("upload", server.base_url, raw_container, str(source)), env, timeout
                )
                raw_seconds, raw_file_id = parse_raw(raw_up, "upload")
                raw_ups.append(float(raw_seconds))
                delete_remote(server.base_url, raw_container, raw_file_id)
                os.sync()
                name = f"bench-big-{number}"
                up = sync(str(up_dir), "--container", name, "--state-dir", str(work_dir / name))
                ups.append(up)
                if up.failure():
                    raise RuntimeError(f"upload: {up.failure()}")
                if number > 0:  # the first one stays, for the downloads
                    delete_remote(server.base_url, *find_upload(server.base_url, name, NAME))
                os.sync()
            up_small = sync(
                str(small_dir), "--container", "bench-small", "--state-dir", str(work_dir / "s2")
            )
            big_container, big_file_id = find_upload(server.base_url, "bench-big-0", NAME)
            raw_target = work_dir / "raw-download.bin"
            pull = ("--direction", "pull")
            for number in range(rounds):
                raw_down = run_command(
                    raw_child(
                        "download", server.base_url, big_container, big_file_id, str(raw_target)
                    ),
                    env,
                    timeout,
                )
                raw_downs.append(float(parse_raw(raw_down, "download")[0]))
                raw_target.unlink()
                os.sync()
                into = work_dir / f"down-{number}"
                into.mkdir()
                state = str(work_dir / f"s3-{number}")
                down = sync(str(into), "--container", "bench-big-0", *pull, "--state-dir", state)
                downs.append(down)
                if down.failure():
                    raise RuntimeError(f"download: {down.failure()}")
                if number < rounds - 1:  # the last one is compared with the original
                    (into / NAME).unlink(missing_ok=True)
                os.sync()
            down_small = sync(
                str(work_dir / "down-small"),
                "--container",
                "bench-small",
                *pull,
                "--state-dir",
                str(work_dir / "s4"),
            )
        except RuntimeError as exc:
            return target_record("6", "big file", command, [], details, reason=str(exc))
    up, down = median_run(ups), median_run(downs)
    raw_up_s, raw_down_s = statistics.median(raw_ups), statistics.median(raw_downs)
    details["rounds_s"] = {
        "raw_upload": raw_ups,
        "upload": [round(run.wall_s, 3) for run in ups],
        "raw_download": raw_downs,
        "download": [round(run.wall_s, 3) for run in downs],
    }
    runs = {"upload": up, "upload_1k": up_small, "download": down, "download_1k": down_small}
    details["runs"] = {
        name: {
            "exit_code": run.exit_code,
            "wall_s": round(run.wall_s, 3),
            "cli_seconds": run.summary.get("seconds"),
            "max_rss_mib": round(run.max_rss_kib / 1024, 1),
        }
        for name, run in runs.items()
    }
    details["raw"] = {"upload_s": raw_up_s, "download_s": raw_down_s}
    failed = [name for name, run in runs.items() if run.failure()]
    failures = [f"{', '.join(failed)}: {runs[failed[0]].failure()}"] if failed else []
    downloaded = work_dir / f"down-{rounds - 1}" / NAME
    if not failures and not (downloaded.exists() and file_hash(downloaded) == file_hash(source)):
        failures.append("the pulled file is missing or differs from the original")
    if failures:
        return target_record("6", "big file", command, [], details, reason="; ".join(failures))
    mib_size = size / MIB
    checks: list[dict[str, Any]] = []
    for direction, run, small, raw_s in (
        ("upload", up, up_small, raw_up_s),
        ("download", down, down_small, raw_down_s),
    ):
        throughput = mib_size / run.wall_s
        raw_throughput = mib_size / raw_s
        checks.append(
            check(
                f"{mib_size:.0f} MiB {direction}, whole command / raw httpx",
                measured=throughput,
                reference=raw_throughput,
                reference_name="raw httpx",
                unit="MiB/s",
                ratio=throughput / raw_throughput,
                target=">= 0.8x",
                passed=throughput >= 0.8 * raw_throughput,
            )
        )
        growth = (run.max_rss_kib - small.max_rss_kib) / 1024
        checks.append(
            check(
                f"{mib_size:.0f} MiB {direction}, peak RSS growth over a 1 KiB {direction}",
                measured=growth,
                reference=50.0,
                unit="MiB",
                ratio=growth / 50.0,
                target="< 50 MiB",
                passed=growth < 50.0,
            )
        )
    return target_record("6", "big file", command, checks, details)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=None, help="file size (1024; quick 64)")
    parser.add_argument(
        "--repeat", type=int, default=None, help="rounds of raw and command, each way (3; quick 1)"
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-upload":
        return raw_upload(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-download":
        return raw_download(sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]))
    return script_main(measure, __doc__.splitlines()[0], options)


if __name__ == "__main__":
    run_main(main)
