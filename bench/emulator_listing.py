"""Emulator listing: the time to page through a container of 1k, 10k and 100k files.

One ``Emulator`` holds one container per size, filled through the Python control API
(``add_assistant_file`` without content, so no blob is written: the listing is what
is measured). Each container is paged through with ``limit=100`` following
``last_id``, three ways side by side in one run:

- in process, oldest first: ``httpx.Client`` over ``emulator.transport()``;
- in process, newest first (the API's default order);
- over HTTP: the same emulator behind ``EmulatorServer`` on 127.0.0.1, oldest first.

Each listing runs ``--repeat`` times (default 3) and the fastest counts, since the
machines are shared and noisy. It prints the total time, the pages, the cost per page
and the ratio of the cost per page to the one at the smallest size (1.0 means a page
costs the same whatever the container holds). It exits 1 if a listing does not
return every file exactly once in order.

    .venv/bin/python bench/emulator_listing.py                # 1k, 10k, 100k
    .venv/bin/python bench/emulator_listing.py --quick        # 1k, 5k
    .venv/bin/python bench/emulator_listing.py --sizes 1000 20000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import httpx

from cntr_sync.emulator import Emulator, EmulatorServer

PAGE_LIMIT = 100
HTTP_TIMEOUT_S = 30.0
MAX_PAGES = 10_000


@dataclass(frozen=True)
class Listing:
    size: int
    way: str
    seconds: float
    pages: int

    @property
    def ms_per_page(self) -> float:
        return 1000.0 * self.seconds / max(1, self.pages)


def fill(emulator: Emulator, size: int) -> tuple[str, list[str]]:
    """A container of ``size`` files; their ids, oldest first."""
    container_id = str(emulator.create_container(f"listing-{size}")["id"])
    ids = []
    for i in range(size):
        added = emulator.add_assistant_file(
            container_id, f"/mnt/data/f{i:06}", content_missing=True
        )
        ids.append(str(added["id"]))
    return container_id, ids


def page_through(client: httpx.Client, container_id: str, order: str) -> tuple[list[str], int]:
    seen: list[str] = []
    after: str | None = None
    for pages in range(1, MAX_PAGES + 1):
        params: dict[str, str | int] = {"limit": PAGE_LIMIT, "order": order}
        if after is not None:
            params["after"] = after
        response = client.get(f"/containers/{container_id}/files", params=params)
        response.raise_for_status()
        body = response.json()
        seen.extend(item["id"] for item in body["data"])
        if not body.get("has_more", False):
            return seen, pages
        after = body.get("after", body["last_id"])
    raise RuntimeError(f"listing did not end within {MAX_PAGES} pages")


def measure(
    client: httpx.Client,
    container_id: str,
    expected: list[str],
    size: int,
    way: str,
    order: str,
    repeat: int,
) -> Listing:
    best: Listing | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        seen, pages = page_through(client, container_id, order)
        seconds = time.perf_counter() - started
        want = expected if order == "asc" else expected[::-1]
        if seen != want:
            raise RuntimeError(f"{way} at {size}: listed {len(seen)} ids, not the {size} expected")
        if best is None or seconds < best.seconds:
            best = Listing(size, way, seconds, pages)
    assert best is not None
    return best


def run(sizes: list[int], repeat: int) -> list[Listing]:
    results: list[Listing] = []
    with Emulator() as emulator, EmulatorServer("127.0.0.1", 0, emulator=emulator) as server:
        in_process = httpx.Client(
            transport=emulator.transport(), base_url="http://emulator.test/v1", timeout=30.0
        )
        over_http = httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_S)
        with in_process, over_http:
            for size in sizes:
                started = time.perf_counter()
                container_id, ids = fill(emulator, size)
                filled_s = time.perf_counter() - started
                print(f"filled {size} files in {filled_s:.2f} s", file=sys.stderr)
                for client, way, order in (
                    (in_process, "in-process asc", "asc"),
                    (in_process, "in-process desc", "desc"),
                    (over_http, "HTTP asc", "asc"),
                ):
                    results.append(measure(client, container_id, ids, size, way, order, repeat))
    return results


def report(results: list[Listing]) -> None:
    base: dict[str, float] = {}
    print(f"{'files':>8}  {'way':<16} {'total s':>9} {'pages':>6} {'ms/page':>8} {'ratio':>6}")
    for listing in results:
        first = base.setdefault(listing.way, listing.ms_per_page)
        ratio = listing.ms_per_page / first if first else float("nan")
        print(
            f"{listing.size:>8}  {listing.way:<16} {listing.seconds:>9.3f} {listing.pages:>6}"
            f" {listing.ms_per_page:>8.3f} {ratio:>6.2f}"
        )
    print("ratio: cost per page against the smallest size, same way (1.00 = flat)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--quick", action="store_true", help="1k and 5k files only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--repeat", type=int, default=3, help="runs per listing; the best counts")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.quick else sorted(args.sizes)
    try:
        results = run(sizes, max(1, args.repeat))
    except RuntimeError as error:
        print(f"emulator_listing: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{**asdict(r), "ms_per_page": r.ms_per_page} for r in results]))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
