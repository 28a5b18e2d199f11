"""The reference for target 1: the script a user would write instead of cntr-sync.

A sequential loop with the official ``openai`` SDK: create a container, then for
every file under DIR (sorted walk) ``client.containers.files.create(container_id,
file=(relpath, handle))``, one after the other, the SDK's defaults otherwise (two
retries). Prints one JSON line: files, seconds (the loop, from the container's
creation on) and the container id.

Run: ``.venv/bin/python bench/naive_sdk.py DIR --base-url URL --container NAME``
(the API key from ``OPENAI_API_KEY``); ``cold_push.py`` runs it beside cntr-sync.
The ``openai`` package comes with the ``bench`` (and ``dev``) extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--container", required=True, help="name of the container to create")
    args = parser.parse_args()
    if not args.directory.is_dir():
        print(f"naive_sdk.py: {args.directory}: not a directory", file=sys.stderr)
        return 2
    try:
        from openai import OpenAI  # noqa: PLC0415 (a one-line error when it is missing)
    except ImportError:
        print(
            "naive_sdk.py: the openai package is missing: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2

    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "naive"))
    started = time.perf_counter()
    container = client.containers.create(name=args.container)
    uploaded = 0
    for directory, subdirs, names in os.walk(args.directory):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory, name)
            relpath = path.relative_to(args.directory).as_posix()
            with path.open("rb") as handle:
                client.containers.files.create(container.id, file=(relpath, handle))
            uploaded += 1
    seconds = time.perf_counter() - started
    client.close()
    print(
        json.dumps({"files": uploaded, "seconds": round(seconds, 3), "container_id": container.id})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
