"""PURE: where a remote file lands under the local root, and which remote paths are refused.

A remote ``path`` is hostile input: the model (or anyone with the key) chooses
it, and a gateway may mangle it. ``local_relpath`` turns it into a relpath that
is relative, has no ``.``/``..``/empty segments, no NUL, control or bidi characters,
no segment longer than the file system allows and nothing of ours
(``.cntrsync``), or refuses it with a one-line reason. It cannot see symlinks;
the writer (``transfer``) refuses to write through any.

Also here: the names of conflict copies (never uploaded back), suffixed names
for collisions (both cut to fit a name's byte limit), the key two names share
on a case- or normalisation-insensitive file system, and the names in use under
the root (``TakenNames``). The local tree's own names and limits are
``tree_names``'s.

Must not: import anything that does I/O, or read the clock.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from cntr_sync.errors import ConfigError
from cntr_sync.names import strip_hash_prefix
from cntr_sync.tree_names import (
    IGNORE_FILE,
    MAX_RELPATH_BYTES,
    NAME_MAX_BYTES,
    PARTIAL_PREFIX,
    STATE_DIR_NAME,
    VCS_DIRS,
    ancestors,
)

#: C0 and C1 controls, DEL, and the bidirectional marks, overrides and isolates that make
#: a name display as another (``evil\u202egnp.exe`` shows as ``evilexe.png``).
_CONTROL_RANGES = (  # first and last code of each run
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0x061C, 0x061C),
    (0x200E, 0x200F),
    (0x202A, 0x202E),
    (0x2066, 0x2069),
)
_CONTROL_CODES = [code for first, last in _CONTROL_RANGES for code in range(first, last + 1)]
# A class of ranges, not of 77 single characters: compiled in a twentieth of the time
# (1.3 ms of every command's start).
_CONTROL = re.compile(
    "["
    + "".join(f"{re.escape(chr(first))}-{re.escape(chr(last))}" for first, last in _CONTROL_RANGES)
    + "]"
)
_CONTROL_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROL_CODES
}
CONFLICT_MARK = re.compile(r" \((?:container|local) conflict \d{4}-\d{2}-\d{2} \d{6}(?: \d+)?\)")


@dataclass(frozen=True)
class PathRules:
    """How remote paths map to local relpaths (from the pair's settings)."""

    prefixes: tuple[str, ...] = ("/mnt/data/",)
    outside: Literal["subdir", "skip"] = "subdir"
    outside_subdir: str = "_container"


@dataclass(frozen=True)
class Refused:
    """A remote path that is not written locally. ``quiet``: by choice, not a problem."""

    reason: str
    quiet: bool = False


def local_relpath(path: str, source: str, rules: PathRules) -> str | Refused:
    """The relpath a remote file at ``path`` lands at, or why it does not."""
    if _CONTROL.search(path):
        return Refused("the remote path contains a NUL, control or bidi character")
    prefixes = tuple(p if p.endswith("/") else p + "/" for p in rules.prefixes)
    prefix = max((p for p in prefixes if path.startswith(p)), key=len, default=None)
    if prefix is None:
        if rules.outside == "skip":
            return Refused("outside the remote prefixes", quiet=True)
        rest = f"{rules.outside_subdir.strip('/')}/{path.lstrip('/')}"
    else:
        rest = path[len(prefix) :]
        if any(p in "/" + rest for p in prefixes):
            return Refused("several paths run together in one remote path")
        if source == "user":
            # Uploads come back as <32 hex>-<name>; files the model writes do not.
            rest = strip_hash_prefix(rest)
    problem = relpath_problem(rest)
    return Refused(problem) if problem else rest


def relpath_problem(relpath: str) -> str | None:
    """Why ``relpath`` may not be written under the root, or None when it may."""
    if not relpath:
        return "the remote path names no file"
    if relpath.startswith("/"):
        return "the remote path is absolute"
    try:
        encoded = relpath.encode("utf-8")
    except UnicodeEncodeError:
        return "the remote path is not valid UTF-8"
    if len(encoded) > MAX_RELPATH_BYTES:
        return f"the remote path is longer than {MAX_RELPATH_BYTES} bytes"
    if _CONTROL.search(relpath):
        return "the remote path contains a NUL, control or bidi character"
    segments = relpath.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            return f"the remote path has a {segment or 'empty'!r} segment"
        if len(segment.encode("utf-8")) > NAME_MAX_BYTES:
            return f"a name in the remote path is longer than {NAME_MAX_BYTES} bytes"
        # Case-folded: on a case-insensitive file system .CNTRIGNORE is .cntrignore.
        folded = segment.casefold()
        if folded == STATE_DIR_NAME or folded.startswith(PARTIAL_PREFIX):
            return "the remote path names cntr-sync's own files"
        if folded in VCS_DIRS:
            return f"the remote path is inside a version-control directory ({segment})"
        if folded == IGNORE_FILE:
            # Ignore rules are the user's: a pulled one could re-include .git.
            return f"the remote path is a {IGNORE_FILE} (ignore rules come from you only)"
    return None


def restorable_relpath(path: str) -> str:
    """``path`` as a relpath a file can be restored at (``./a//b`` is ``a/b``), or
    ``ConfigError`` naming it."""
    parts = path.replace("\\", "/").split("/")
    relpath = "/".join(part for part in parts if part not in ("", "."))
    problem = relpath_problem(relpath)
    if problem is not None:
        raise ConfigError(f"PATH {path!r}: not a file inside DIRECTORY ({problem})")
    return relpath


def printable(text: str) -> str:
    """``text`` with undecodable bytes and control characters escaped, for messages."""
    try:
        decoded = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        decoded = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return decoded.translate(_CONTROL_ESCAPES)


# -- names that must not overwrite each other ------------------------------------------


@dataclass(frozen=True)
class FileSystemTraits:
    """How the local file system compares names (probed by ``transfer``)."""

    case_insensitive: bool = False
    normalization_insensitive: bool = False

    def key(self, relpath: str) -> str:
        """Two relpaths with the same key are one file on this file system."""
        if self.normalization_insensitive or self.case_insensitive:
            relpath = unicodedata.normalize("NFC", relpath)
        if self.case_insensitive:
            relpath = relpath.casefold()
        return relpath


def split_name(relpath: str) -> tuple[str, str, str]:
    """(directory with trailing slash or "", stem, extension with its dot or "")."""
    directory, _, name = relpath.rpartition("/")
    directory = f"{directory}/" if directory else ""
    dot = name.rfind(".")
    if dot <= 0:  # no extension, or a dotfile such as ".bashrc"
        return directory, name, ""
    return directory, name[:dot], name[dot:]


def with_mark(relpath: str, mark: str) -> str:
    """``relpath`` with ``mark`` before the extension (``a (2).txt``), its name cut to fit
    ``NAME_MAX_BYTES``: the stem is shortened first, then the extension; the mark stays
    whole, since it is what tells the copy from the original."""
    directory, stem, extension = split_name(relpath)
    room = NAME_MAX_BYTES - len(mark.encode("utf-8"))
    extension = _cut(extension, room)
    stem = _cut(stem, room - len(extension.encode("utf-8")))
    return f"{directory}{stem}{mark}{extension}"


def _cut(text: str, most: int) -> str:
    """``text``'s longest start of at most ``most`` UTF-8 bytes, whole characters only."""
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) <= most:
        return text
    return encoded[: max(most, 0)].decode("utf-8", "ignore")


def suffixed(relpath: str, taken: Collection[str], traits: FileSystemTraits) -> str:
    """``relpath`` with " (2)", " (3)", ... before the extension: the first free one."""
    number = 2
    while True:
        candidate = with_mark(relpath, f" ({number})")
        if traits.key(candidate) not in taken:
            return candidate
        number += 1


def conflict_copy_name(
    relpath: str,
    side: Literal["container", "local"],
    now: float,
    taken: Collection[str],
    traits: FileSystemTraits,
) -> str:
    """``NAME (container conflict YYYY-MM-DD HHMMSS).EXT`` (UTC), free on this file system
    and short enough for it, however long ``NAME`` is."""
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.gmtime(now))
    candidate = with_mark(relpath, f" ({side} conflict {stamp})")
    number = 2
    while traits.key(candidate) in taken:
        candidate = with_mark(relpath, f" ({side} conflict {stamp} {number})")
        number += 1
    return candidate


class TakenNames:
    """Names in use under the root, as its file system compares them (``traits.key``):
    every file and the directories above it that the scan or the index knows, and what
    this pass will write. A conflict copy or a renamed download takes a free name."""

    def __init__(self, traits: FileSystemTraits, relpaths: Iterable[str] = ()) -> None:
        self.traits = traits
        self._names: set[str] = set()  # files and directories
        self._files: set[str] = set()
        for relpath in relpaths:
            self.take(relpath)

    def take(self, relpath: str) -> None:
        """``relpath`` is (or will be) a file: it and its directories are in use."""
        key = self.traits.key
        self._names.add(key(relpath))
        self._files.add(key(relpath))
        self._names.update(key(directory) for directory in ancestors(relpath))

    def __contains__(self, relpath: object) -> bool:
        return isinstance(relpath, str) and self.traits.key(relpath) in self._names

    def file_above(self, relpath: str) -> str | None:
        """The first directory of ``relpath`` that is a file here, if any."""
        key = self.traits.key
        return next((d for d in ancestors(relpath) if key(d) in self._files), None)

    def free_name(self, relpath: str) -> str:
        """``relpath``, numbered until it is free (``suffixed``); taken."""
        name = suffixed(relpath, self._names, self.traits)
        self.take(name)
        return name

    def conflict_copy(self, relpath: str, side: Literal["container", "local"], now: float) -> str:
        """A free conflict-copy name of ``relpath`` (``conflict_copy_name``); taken."""
        name = conflict_copy_name(relpath, side, now, self._names, self.traits)
        self.take(name)
        return name


def is_conflict_copy(relpath: str) -> bool:
    """Whether the file name is one cntr-sync gives conflict copies (only those it
    recorded are never uploaded: ``conflict_copies``)."""
    return bool(CONFLICT_MARK.search(relpath.rpartition("/")[2]))


def copy_side(copy: str) -> Literal["container", "local"]:
    """Whose version a conflict copy holds, as its name says."""
    return "local" if " (local conflict " in copy.rpartition("/")[2] else "container"


def original_of(copy: str) -> str:
    """The relpath a conflict copy's name was made from (its mark taken out)."""
    directory, slash, name = copy.rpartition("/")
    return f"{directory}{slash}{CONFLICT_MARK.sub('', name, count=1)}"
