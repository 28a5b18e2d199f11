"""PURE: how the names we upload come back, and how a remote file is matched to a local one.

We upload each file under its relpath (``upload_name``); the server picks the
``path``. What comes back varies by server: ``/mnt/data/<name>`` or
``/mnt/data/<32 hex>-<name>`` (OpenAI's answer), the name as the multipart
encoder escaped it (httpx sends ``"`` as ``%22``; many parsers keep that),
in another Unicode normalisation, with its directories dropped (``x.txt``
for ``dir/x.txt``), or no name at all (Bifrost stores every upload as
``file``). This module owns the comparisons:

- ``canonical``: a name as compared (NFC, the encoder's escapes undone), so
  one odd name neither fails a match nor makes a pair distrust names;
- ``remote_names``: what a remote path may stand for, given whether the server
  is known to add a hash prefix (strip one only then; when unknown, the exact
  name ranks first);
- ``server_naming``: what one of our uploads tells about the server;
- ``infer_prefix`` and ``names_dropped``: what a listing tells, for when the
  index was lost and nothing was learnt yet.

Must not: import anything that performs I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from cntr_sync.models import IndexEntry, RemoteFile

MOUNT_PREFIX = "/mnt/data/"
HASH_PREFIX = re.compile(r"^[0-9a-f]{32}-")
# What multipart encoders escape in a filename (the HTML5 form rules httpx follows).
_ESCAPES = (("%22", '"'), ("%0D", "\r"), ("%0A", "\n"), ("%0d", "\r"), ("%0a", "\n"))
_PLAIN = re.compile(r"^[A-Za-z0-9._/ -]+$")


def strip_hash_prefix(name: str) -> str:
    """``name`` without the ``<32 hex>-`` an upload's path may start with."""
    return HASH_PREFIX.sub("", name, count=1)


def upload_name(relpath: str) -> str:
    """The multipart filename we send for ``relpath``: the relpath itself."""
    return relpath


def canonical(name: str) -> str:
    """``name`` as names are compared: the encoder's escapes undone, then NFC."""
    for escaped, raw in _ESCAPES:
        name = name.replace(escaped, raw)
    return unicodedata.normalize("NFC", name)


def remote_names(path: str, adds_prefix: bool | None = None) -> tuple[str, ...]:
    """Names a remote ``path`` may stand for, most likely first.

    Servers answer ``/mnt/data/<name>`` or ``/mnt/data/<32 hex>-<name>``. When
    the server is known to add the prefix (``adds_prefix`` True) only the
    stripped name counts; known not to (False), only the whole name; unknown
    (None), the stripped name first and the whole name too, since a name may
    merely start with 32 hex digits.
    """
    name = path.removeprefix(MOUNT_PREFIX)
    stripped = strip_hash_prefix(name)
    if stripped == name or adds_prefix is False:
        return (name,)
    if adds_prefix is True:
        return (stripped,)
    return (stripped, name)


@dataclass(frozen=True)
class ServerNaming:
    """What one upload's answer told about how the server names uploads."""

    keeps_names: bool | None  # None: the name was odd, nothing is concluded
    adds_prefix: bool | None


def server_naming(relpath: str, returned_path: str) -> ServerNaming:
    """What the path a server gave one of our uploads says about it."""
    sent = canonical(upload_name(relpath))
    whole = canonical(returned_path.removeprefix(MOUNT_PREFIX))
    stripped = canonical(strip_hash_prefix(returned_path.removeprefix(MOUNT_PREFIX)))
    if whole == sent:
        return ServerNaming(keeps_names=True, adds_prefix=False)
    if stripped == sent:
        return ServerNaming(keeps_names=True, adds_prefix=True)
    # Renamed. A plain name renamed means a renaming server (Bifrost's "file");
    # an odd one (quotes, accents, control characters) may just be mangled.
    plain = bool(_PLAIN.fullmatch(upload_name(relpath)))
    return ServerNaming(keeps_names=False if plain else None, adds_prefix=None)


def infer_prefix(user_paths: Iterable[str]) -> bool | None:
    """Whether a server adds hash prefixes, from the paths of the uploads it lists.

    Every upload prefixed: yes; none: no; a mix (or none listed): unknown.
    """
    flags = [bool(HASH_PREFIX.match(p.removeprefix(MOUNT_PREFIX))) for p in user_paths]
    if not flags:
        return None
    if all(flags):
        return True
    if not any(flags):
        return False
    return None


def names_dropped(user_paths: Iterable[str]) -> bool:
    """Whether the uploads listed carry no names at all (every one is called the same)."""
    # Stops at the first other name: after a lost index, a set of every upload's
    # name would be ~15 MB at 100,000 files, to learn what the first one tells.
    named = (canonical(strip_hash_prefix(p.removeprefix(MOUNT_PREFIX))) for p in user_paths)
    seen_one = False
    for name in named:
        if name != "file":
            return False
        seen_one = True
    return seen_one


def basename(relpath: str) -> str:
    return relpath.rpartition("/")[2]


def to_remote_file(
    file_id: str, path: str, size: int | None, source: str, created_at: int | None
) -> RemoteFile:
    """A listed file as planning sees it; ``name`` is its most likely upload name.

    (A full pass keeps its listing as a ``listing.Listing``, which makes these as
    they are looked at.)
    """
    return RemoteFile(
        id=file_id,
        path=path,
        name=remote_names(path)[0],
        size=size,
        source=source,
        created_at=created_at,
    )


def as_listed(entry: IndexEntry) -> RemoteFile:
    """The remote file an index entry records, as a listing would show it."""
    return to_remote_file(
        entry.remote_id,
        entry.remote_path,
        entry.remote_size if entry.remote_size is not None else entry.size,
        "user" if entry.origin == "push" else "assistant",
        entry.remote_created_at,
    )
