"""What the commands that are not a pass print: ``ls``, ``containers``, ``status``, ``config``.

Each takes the command's ``cli_output.Reporter`` (its mode, its consoles and
its ``line``) and prints the command's JSON document (one shape whatever
happens, as every ``--json``), or lines: tab-separated on a pipe, a table or
aligned columns on a terminal. Every name that came from a server is printed
escaped (``printable``), never as markup; rich is imported only for a table.

Must not: talk to the API, read settings or state, or decide exit codes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cntr_sync.cli_output import human_size
from cntr_sync.remote_paths import printable

if TYPE_CHECKING:
    from cntr_sync.cli_listing import LocalPlace
    from cntr_sync.cli_output import Reporter
    from cntr_sync.models import Container, ContainerFile


def listing(
    reporter: Reporter,
    container: Container,
    files: list[ContainerFile],
    local: Mapping[str, LocalPlace] | None = None,
) -> None:
    """``ls``: the JSON document; on a pipe whole tab-separated lines (paths
    escaped: easy to cut and grep); on a terminal a table. With ``local`` (a
    pair's directory was given), each file's local path and whether it is tracked
    (``-``: a pull would not write it)."""
    if reporter.mode.json:
        listed = []
        for f in files:
            place = local.get(f.id) if local is not None else None
            listed.append(
                {
                    "id": f.id,
                    "source": f.source,
                    "bytes": f.bytes,
                    "path": f.path,
                    "created_at": f.created_at,
                    "local_path": str(place.path) if place and place.path else None,
                    "tracked": place.tracked if place else None,
                }
            )
        document = {"container_id": container.id, "files": listed}
        print(json.dumps({**document, "exit_code": 0, "errors": []}))
        return
    rows = []
    for f in sorted(files, key=lambda f: f.path):
        row = [f.source, "-" if f.bytes is None else str(f.bytes), printable(f.path), f.id]
        if local is not None:
            place = local[f.id]
            row.append(printable(str(place.path)) if place.path else "-")
            row.append("tracked" if place.tracked else "untracked")
        rows.append(row)
    if not reporter.out.is_terminal:
        for row in rows:
            print("\t".join(row))
        return
    from rich.table import Table  # noqa: PLC0415 - a terminal only
    from rich.text import Text  # noqa: PLC0415

    title = f"{printable(container.name)} ({container.id}): {len(rows)} files"
    table = Table(box=None, title=title)
    table.add_column("source")
    table.add_column("bytes", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("id", no_wrap=True)
    if local is not None:
        table.add_column("local path", overflow="fold")
        table.add_column("index")
    for row in rows:
        # Paths come from the model: never let rich read them as markup.
        table.add_row(*(Text(cell) for cell in row))
    reporter.out.print(table)


def containers(
    reporter: Reporter, found: list[Container], indexed: Mapping[str, list[str]]
) -> None:
    """``containers``: name, id, status, created, last active, the local directories
    whose index points at it; a JSON document, or aligned columns."""
    if reporter.mode.json:
        listed = [
            {
                "id": c.id,
                "name": c.name,
                "status": c.status,
                "created_at": c.created_at,
                "last_active_at": c.last_active_at,
                "indexed_by": indexed.get(c.id, []),
            }
            for c in found
        ]
        print(json.dumps({"containers": listed, "exit_code": 0, "errors": []}))
        return
    header = ["NAME", "ID", "STATUS", "CREATED", "LAST ACTIVE", "LOCAL INDEX"]
    rows = [
        [
            printable(c.name) or "-",
            printable(c.id),
            printable(c.status),
            _when(c.created_at),
            _when(c.last_active_at),
            ", ".join(printable(root) for root in indexed.get(c.id, [])) or "-",
        ]
        for c in found
    ]
    if not reporter.mode.quiet:
        for line in aligned([header, *rows]):
            print(line)


def settings(reporter: Reporter, described: str, origin: str, dump: dict[str, Any]) -> None:
    """``config``: which file was read and the settings in effect (redacted)."""
    if reporter.mode.json:
        document = {"config_file": dump.get("config_file"), "config_origin": origin}
        print(json.dumps({**document, "settings": dump, "exit_code": 0, "errors": []}))
        return
    if reporter.mode.quiet:
        return
    print(f"# config file: {described}")
    print(f"# api key from: {dump.pop('api_key_source', 'none')}")
    pairs = dump.pop("pairs", [])
    dump.pop("config_file", None)
    for line in _toml_lines(dump):
        print(line)
    for pair in pairs:
        print("\n[[pairs]]")
        for line in _toml_lines(pair):
            print(line)


def status(
    reporter: Reporter,
    known: dict[str, Any],
    would: dict[str, int],
    warnings: list[str],
    exit_code: int,
) -> None:
    """``status``: what the index knows (``known``) and what a sync would do."""
    if reporter.mode.json:
        document = {"index": known, "would": would, "warnings": warnings}
        print(json.dumps({**document, "exit_code": exit_code, "errors": []}))
        return
    if reporter.mode.quiet:  # the exit code says it all, as ``git diff --quiet``
        return
    keeps = {True: "yes", False: "no (matched by content)", None: "not known yet"}
    lines = [
        ("directory", known["root"]),
        ("container", f"{known['container']} ({known['container_id'] or 'not created yet'})"),
        ("direction", known["direction"]),
        ("files in sync", known["tracked_files"]),
        ("uploads whose answer was lost", known["pending_uploads"]),
        ("old remote versions still to delete", known["pending_deletes"]),
        ("downloads waiting to be retried", known["failed_downloads"]),
        ("server keeps upload names", keeps[known["server_keeps_names"]]),
        ("index", known["index_path"]),
    ]
    for label, value in lines:
        print(f"{label}: {value}")
    copies = known.get("conflict_copies", [])
    if copies:
        print(f"conflict copies in the tree: {len(copies)}")
        for copy in copies:
            whose = "the container's" if copy["holds"] == "container" else "the local"
            print(f"  {printable(copy['copy'])} ({whose} version of {printable(copy['path'])})")
    counted = ", ".join(
        f"{count} {what.replace('_', ' ')}"
        for what, count in would.items()
        if count and not what.startswith("bytes")
    )
    print(
        f"a sync would: {counted or 'do nothing'} "
        f"({human_size(would['bytes'])} to upload, "
        f"{human_size(would['bytes_download'])} to download)"
    )
    for warning in warnings:
        reporter.line(f"warning: {warning}")


def _when(seconds: int | None) -> str:
    """A Unix time as ``2026-12-07 14:05`` UTC, or ``-``."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows as lines of columns padded to their widest cell (the last is not padded)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _toml_lines(values: Mapping[str, Any]) -> list[str]:
    """``key = value`` lines (a JSON value is TOML for these settings); an unset one as
    a comment, as in config.example.toml."""
    return [
        f"# {key} is not set" if value is None else f"{key} = {json.dumps(value)}"
        for key, value in values.items()
    ]


__all__ = ["aligned", "containers", "listing", "settings", "status"]
