"""A floor for target 1: the fastest plain push a user could write with httpx.

What is left of a cold push once everything cntr-sync adds is taken away: no
settings, scan, hash, index, intents, pacing or retries. One ``httpx.Client``
(keep-alive, a pool as large as the threads) shared by ``--threads`` threads,
each posting files (a sorted walk under DIR) as streamed multipart uploads
named by their relative path, the answers parsed. Prints one JSON line: files,
seconds (the uploads, from the container's creation on) and the container id.

The ideal of target 1 (N x latency / concurrency) counts neither the client's
nor the server's time per request; this loop counts both, with the same HTTP
library and the same server, so ``cold_push.py`` reports it beside the ideal.

Run: ``.venv/bin/python bench/parallel_httpx.py DIR --base-url URL --container NAME
[--threads 8]`` (the API key from ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def files_under(directory: Path) -> list[tuple[str, Path]]:
    found = []
    for parent, subdirs, names in os.walk(directory):
        subdirs.sort()
        for name in sorted(names):
            path = Path(parent, name)
            found.append((path.relative_to(directory).as_posix(), path))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--container", required=True, help="name of the container to create")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    if not args.directory.is_dir():
        print(f"parallel_httpx.py: {args.directory}: not a directory", file=sys.stderr)
        return 2
    files = files_under(args.directory)
    headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'floor')}"}
    limits = httpx.Limits(max_connections=args.threads, max_keepalive_connections=args.threads)
    with httpx.Client(
        base_url=args.base_url.rstrip("/") + "/", headers=headers, limits=limits, timeout=60
    ) as client:
        started = time.perf_counter()
        created = client.post("containers", json={"name": args.container})
        created.raise_for_status()
        container_id = str(created.json()["id"])

        def upload(item: tuple[str, Path]) -> str:
            relpath, path = item
            with path.open("rb") as handle:
                answer = client.post(
                    f"containers/{container_id}/files",
                    files={"file": (relpath, handle, "application/octet-stream")},
                )
            answer.raise_for_status()
            return str(answer.json()["id"])

        with ThreadPoolExecutor(args.threads) as pool:
            uploaded = len(list(pool.map(upload, files)))
        seconds = time.perf_counter() - started
    print(
        json.dumps({"files": uploaded, "seconds": round(seconds, 3), "container_id": container_id})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
