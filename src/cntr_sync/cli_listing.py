"""What ``ls`` and ``containers`` add to a listing from the local side.

``ls DIRECTORY``: the local path each remote file of the pair's container maps
to (the index's relpath for a file it tracks, else where a pull would put it,
else nothing: a path a pull refuses), and whether the index tracks it.
``containers``: which local directory's index points at each container, read
from every index file in the state directory.

Must not: write to the state directory (indexes are read as ``status`` reads
them, a copy without the lock, or read only), talk to the API, or print
(``cli_output`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cntr_sync.api import normalized_base_url
from cntr_sync.config import Settings
from cntr_sync.index_file import indexed_pairs, strip_userinfo
from cntr_sync.models import Container, ContainerFile, Pair
from cntr_sync.remote_paths import PathRules, Refused, local_relpath
from cntr_sync.session import open_index


@dataclass(frozen=True)
class LocalPlace:
    """Where one remote file is, or would be, under the pair's root."""

    path: Path | None  # None: a pull would not write it (the path is refused or skipped)
    tracked: bool


def local_places(
    settings: Settings, pair: Pair, container: Container, files: list[ContainerFile]
) -> dict[str, LocalPlace]:
    """Each file of ``container`` (by id): its local path and whether the pair's index
    tracks it (only when the index is of this container)."""
    with open_index(settings, pair, lock=False) as index:
        tracked = (
            {entry.remote_id: entry.relpath for entry in index.entries().values()}
            if index.container_id == container.id
            else {}
        )
    rules = PathRules(
        prefixes=pair.remote_prefixes,
        outside=pair.outside_prefix,
        outside_subdir=pair.outside_subdir,
    )
    places: dict[str, LocalPlace] = {}
    for remote in files:
        relpath: str | Refused | None = tracked.get(remote.id)
        if relpath is None:
            relpath = local_relpath(remote.path, remote.source, rules)
        path = None if isinstance(relpath, Refused) else pair.local / relpath
        places[remote.id] = LocalPlace(path, remote.id in tracked)
    return places


def indexed_roots(settings: Settings) -> dict[str, list[str]]:
    """Container id -> the local directories whose index (in ``state_dir``, for this
    API) points at it."""
    base_url = strip_userinfo(normalized_base_url(settings.effective_base_url))
    roots: dict[str, list[str]] = {}
    for pair in indexed_pairs(settings.state_dir):
        if pair.container_id is not None and pair.base_url == base_url:
            roots.setdefault(pair.container_id, []).append(pair.root)
    return roots


__all__ = ["LocalPlace", "indexed_roots", "local_places"]
