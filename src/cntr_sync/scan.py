"""Reading the local tree: walk, stat, ignore rules and content hashes -> ``Snapshot``.

Owns: what cntr-sync believes is under the sync root right now. ``scan`` walks
the tree with ``os.scandir`` (an explicit stack, no recursion), applies the
ignore rules, stats every entry once, and hashes regular files with xxh3-128,
asking a ``hashcache.HashCache`` first so an unchanged tree is not read again.
The wall clock (for the racy-clean rule below) and a progress tick (the
daemon's liveness) are injected.

Must not: write, rename or delete anything under the root; open anything that
is not a regular file (opening a FIFO blocks, opening a device may have side
effects); raise for a single entry's problem. Single-entry problems become
``ScanWarning``s; only a root that is missing or cannot be listed raises
``LocalError``, because an empty snapshot from a broken root would read as
"everything was deleted". Files and directories that exist but could not be
read are reported (``unreadable``, ``unreadable_dirs``) so the caller treats
them as unknown, never as deleted.

Ignore rules come from built-in defaults, the ``.cntrignore`` file at the root
(gitignore syntax) and configured patterns, in that order, so a later ``!``
line can re-include a default. Only the root ``.cntrignore`` is read; nested
``.cntrignore`` files are not (yet). ``.cntrsync/`` (our own state) is always
ignored, whatever the patterns say.
"""

from __future__ import annotations

import errno
import heapq
import operator
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import xxhash
from pathspec import GitIgnoreSpec

from cntr_sync.errors import ConfigError, LocalError
from cntr_sync.gc_pause import collector_paused
from cntr_sync.hashcache import HashCache, Row, ScanRows
from cntr_sync.ignore import Layer, Screen
from cntr_sync.models import LocalFile
from cntr_sync.remote_paths import (
    IGNORE_FILE,
    MAX_RELPATH_BYTES,
    PARTIAL_PREFIX,
    STATE_DIR_NAME,
    printable,
)

HASH_CHUNK = 1 << 20

# A file rewritten within the file system's timestamp granularity after we
# hashed it keeps its size and mtime, so a cached digest would hide the change
# (git's "racily clean" problem). Digests of files this young are not cached;
# the next scan hashes them again, by then they are old enough.
RACY_WINDOW_NS = 2_000_000_000

DEFAULT_PATTERNS: tuple[str, ...] = (
    # ".git" without a slash also covers the gitlink *file* of submodules and worktrees.
    ".git",
    ".hg/",
    ".svn/",
    ".bzr/",
    "_darcs/",
    f"{STATE_DIR_NAME}/",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    r"\#*#",  # escaped: a leading '#' would make the line a comment
    "4913",  # vim writes and removes this probe file to test a directory
    ".~lock.*#",
    "*.tmp",
    "*.crdownload",
    "*.part",
    ".DS_Store",
    "Thumbs.db",
)

# The API's multipart filename cannot carry these faithfully.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

Hasher = Callable[[Path], str]
StrPath = str | os.PathLike[str]
Tick = Callable[[], None]

_NAME = operator.attrgetter("name")

# The walk calls ``tick`` before each run of this many entries of a directory (and
# for every chunk it hashes): a sign of progress every few milliseconds, not a
# call per entry (a tenth of a microsecond each, 4 % of a scan of an unchanged tree).
TICK_EVERY = 256


def _no_tick() -> None:
    pass


# -- hashing -----------------------------------------------------------------------


def hash_file(path: StrPath, *, tick: Tick = _no_tick, limit: int | None = None) -> str:
    """xxh3-128 hex digest of a regular file, read in 1 MiB chunks.

    Raises ``OSError`` (``scan`` maps it); refuses anything that is not a
    regular file once opened, so a path swapped for a FIFO cannot block us.
    """
    fd = open_regular(path)
    try:
        return hash_fd(fd, tick=tick, limit=limit)
    finally:
        os.close(fd)


def hash_fd(fd: int, *, tick: Tick = _no_tick, limit: int | None = None) -> str:
    """xxh3-128 hex digest of an open file from its start (its first ``limit`` bytes,
    if given); the fd stays open.

    ``tick`` is called after every chunk: a large file is progress, not a hang.
    """
    if limit is not None and 0 < limit <= HASH_CHUNK:
        # Most files of a tree: one read and one call (the one-shot digest is the
        # same as the streamed one). A short read goes the long way below.
        chunk = os.pread(fd, limit, 0)
        if len(chunk) == limit:
            tick()
            return xxhash.xxh3_128_hexdigest(chunk)
    digest = xxhash.xxh3_128()
    offset = 0
    while True:
        want = HASH_CHUNK if limit is None else min(HASH_CHUNK, limit - offset)
        if want <= 0:
            break
        chunk = os.pread(fd, want, offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
        tick()
    return digest.hexdigest()


def _hash_sized(path: str, size: int, tick: Tick) -> str:
    """``hash_file(path, tick=tick, limit=size)``: the scan's, in one call for a small file.

    A first scan hashes every file, most of them small: ``open_regular`` and
    ``hash_fd``'s one-shot read inline, the rest as ``hash_fd`` reads it.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if 0 < size <= HASH_CHUNK:
            chunk = os.pread(fd, size, 0)
            if len(chunk) == size:
                tick()
                return xxhash.xxh3_128_hexdigest(chunk)
        return hash_fd(fd, tick=tick, limit=size)
    finally:
        os.close(fd)


# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
# A file the listing called regular, opened before any stat: a symlink swapped in
# since fails (ELOOP) instead of being followed.
_UNSEEN_FLAGS = _OPEN_FLAGS | os.O_NOFOLLOW


def _read_unseen(path: str) -> tuple[os.stat_result, bytes] | None:
    """A small regular file's stat and bytes, both taken through one descriptor; None
    for anything else (not a regular file, larger than a chunk, changed while it was
    read, any error), which the caller then decides the long way.

    For a file that no hash-cache row can match (its directory has none: a first
    scan): the walk has no use for an lstat to look a row up with, so the
    descriptor's fstat is the file's stat, and a second fstat after the read is the
    check that it held still. Nothing is read unless the first says "regular file",
    so a FIFO or device swapped in after the listing is opened (non-blocking) and
    closed unread, as with ``open_regular``. A file renamed over this path after the
    open is not what was read: the inode in the stat is the one that was, and
    uploads check it (``transfer.open_as_scanned``).
    """
    try:
        fd = os.open(path, _UNSEEN_FLAGS)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        size = before.st_size
        if not stat.S_ISREG(before.st_mode) or size > HASH_CHUNK:
            return None
        chunk = os.pread(fd, size, 0) if size else b""
        after = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if (
        len(chunk) != size
        or after.st_size != size
        or after.st_mtime_ns != before.st_mtime_ns
        or after.st_ctime_ns != before.st_ctime_ns
    ):
        return None
    return before, chunk


def open_regular(path: StrPath, *, follow_symlinks: bool = True) -> int:
    """Open a regular file read-only; OSError for anything else.

    ``follow_symlinks=False`` refuses a symlink in the last component (ELOOP),
    so a file swapped for a link after the scan cannot smuggle its target in.
    """
    flags = _OPEN_FLAGS
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- ignore rules ------------------------------------------------------------------


class IgnoreRules:
    """Which relpaths the mirror leaves alone (gitignore semantics, via pathspec).

    Precedence, highest first: the configured patterns (the ``ignore`` setting,
    ``--exclude``/``--include``), then ``.cntrignore`` files from the deepest
    directory up to the root, then the built-in defaults. The first layer with
    a matching line decides, and within a layer the last matching line, as in
    git; so ``!pattern`` in any layer re-includes what a lower layer ignores.
    """

    def __init__(self, base: GitIgnoreSpec, configured: GitIgnoreSpec) -> None:
        # Each spec is compiled once into a Layer that asks pathspec only for the
        # few paths a pattern may match (ignore.py): the same answers, far cheaper.
        self._base = Layer(base)
        self._configured = Layer(configured)
        self._nested: dict[str, Layer] = {}
        self._always: frozenset[str] = frozenset()
        # Screens by the nested files that apply (most directories share one).
        self._screens: dict[tuple[str, ...], Screen | None] = {}

    def always_ignore(self, relpaths: Iterable[str]) -> None:
        """Never mirror these relpaths (and what is under them), whatever any pattern says:
        cntr-sync's own state directory and container-id file when they sit in the tree."""
        self._always = frozenset(relpaths)
        self._screens.clear()

    @classmethod
    def load(cls, root: Path, patterns: Sequence[str] = ()) -> IgnoreRules:
        """Defaults, then ``root/.cntrignore`` if present, then ``patterns``.

        A bad line in ``.cntrignore`` raises ``LocalError`` naming file and line;
        a bad configured pattern raises ``ConfigError``. Nested ``.cntrignore``
        files are read by the scan as it enters their directories.
        """
        file_lines = _checked_ignore_lines(root / IGNORE_FILE)
        for pattern in patterns:
            if not _valid_pattern(pattern):
                raise ConfigError(f"invalid ignore pattern {pattern!r} in settings")
        return cls(
            GitIgnoreSpec.from_lines([*DEFAULT_PATTERNS, *file_lines]),
            GitIgnoreSpec.from_lines(patterns),
        )

    def add_directory_file(self, directory: str, path: Path) -> None:
        """Read ``.cntrignore`` of ``directory`` (a relpath); its patterns are relative to it."""
        lines = _checked_ignore_lines(path)
        if any(line.strip() and not line.lstrip().startswith("#") for line in lines):
            self._nested[directory] = Layer(GitIgnoreSpec.from_lines(lines))

    def ignored_path(self, relpath: str) -> bool:
        """Whether a file at ``relpath`` would be left alone, a parent directory included
        (what a download is checked against: nothing is written under ``.git/``)."""
        parts = relpath.split("/")
        return any(
            self.ignored("/".join(parts[:depth]), is_dir=True) for depth in range(1, len(parts))
        ) or self.ignored(relpath, is_dir=False)

    def ignored(self, relpath: str, is_dir: bool) -> bool:
        """True when ``relpath`` (POSIX, relative to the root) is not mirrored."""
        return self._check(relpath, relpath.rpartition("/")[2], is_dir, every_name=True)[0]

    def entry_ignored(
        self, relpath: str, name: str, is_dir: bool, parent_clean: bool
    ) -> tuple[bool, bool]:
        """``ignored`` for the walk, which enters a directory only when it is not ignored.

        ``parent_clean``: no component above ``name`` can match a pattern without
        a slash in any layer (the walk's answer for the parent directory), so
        only ``name`` is checked against those. Returns (ignored, clean), clean
        being the same promise for this entry's own path, for its children.
        """
        return self._check(relpath, name, is_dir, every_name=not parent_clean)

    def screen(self, directory: str) -> Screen | None:
        """What the walk asks first of each entry of ``directory`` (a relpath, "" for the
        root) whose ancestors are all clean: when it passes, the entry is not ignored
        and clean, and ``entry_ignored`` need not be asked. None: ask it every time."""
        applying = []
        while directory:
            if directory in self._nested:
                applying.append(directory)
            directory = directory.rpartition("/")[0]
        key = tuple(applying)
        if key not in self._screens:
            layers = [self._configured, *(self._nested[d] for d in key), self._base]
            # Our own names are never decided by a pattern: they must fail the screen.
            own = (STATE_DIR_NAME, *(relpath.rpartition("/")[2] for relpath in self._always))
            self._screens[key] = Screen(layers, own) if Screen.possible(layers) else None
        return self._screens[key]

    def _check(self, relpath: str, name: str, is_dir: bool, every_name: bool) -> tuple[bool, bool]:
        if is_dir and name == STATE_DIR_NAME:
            return True, False
        if self._always and (
            relpath in self._always or any(relpath.startswith(f"{own}/") for own in self._always)
        ):
            return True, False
        candidate = f"{relpath}/" if is_dir else relpath
        clean = not every_name
        # Precedence: configured patterns, nested files deepest first, then the base.
        layer = self._configured
        if not layer.empty:
            decided, clean = _layer_check(layer, candidate, name, every_name, clean)
            if decided is not None:
                return decided, False
        if self._nested:
            end = len(relpath)
            while (end := relpath.rfind("/", 0, end)) > 0:
                nested = self._nested.get(relpath[:end])
                if nested is None:
                    continue
                decided, clean = _layer_check(nested, candidate[end + 1 :], name, every_name, clean)
                if decided is not None:
                    return decided, False
        decided, clean = _layer_check(self._base, candidate, name, every_name, clean)
        return bool(decided), clean


def _layer_check(
    layer: Layer, candidate: str, name: str, every_name: bool, clean: bool
) -> tuple[bool | None, bool]:
    """(the layer's decision, still clean): pathspec is asked only if a pattern may match."""
    if every_name:
        return layer.decide(candidate), False
    if layer.name_may_match(name) or "\n" in name:
        return layer.exact(candidate), False
    if layer.path_may_match(candidate):
        return layer.exact(candidate), clean
    return None, clean


def _checked_ignore_lines(path: Path) -> list[str]:
    lines = _read_ignore_file(path)
    for lineno, line in enumerate(lines, start=1):
        if not _valid_pattern(line):
            raise LocalError(f"{path}:{lineno}: invalid ignore pattern {line!r}", path=str(path))
    return lines


def _valid_pattern(line: str) -> bool:
    try:
        GitIgnoreSpec.from_lines([line])
    except ValueError:
        return False
    return True


def _read_ignore_file(path: Path) -> list[str]:
    try:
        fd = open_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    try:
        with open(fd, "rb") as stream:  # noqa: PTH123 (an fd, not a path)
            data = stream.read()
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lineno = data[: exc.start].count(b"\n") + 1
        raise LocalError(f"{path}:{lineno}: not valid UTF-8", path=str(path)) from None
    return [line.removesuffix("\r") for line in text.split("\n")]


# -- the snapshot ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanWarning:
    """One entry the scan skipped, and why. ``relpath`` is printable (bad bytes escaped)."""

    relpath: str
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """What one scan saw.

    ``files`` holds every regular file that was hashed with a stable stat.
    ``unstable`` files changed while being hashed (defer them); ``unreadable``
    files and the contents of ``unreadable_dirs`` exist but could not be read.
    None of those three may be taken as deleted: see ``is_uncertain``.
    ``ignored_count`` counts entries the ignore rules skipped (an ignored
    directory once, its contents not at all); ``hashed_count`` the files read.
    """

    files: dict[str, LocalFile]
    warnings: tuple[ScanWarning, ...] = ()
    unstable: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    unreadable_dirs: tuple[str, ...] = ()
    ignored_count: int = 0
    hashed_count: int = 0
    # Leftover temporary files of interrupted downloads (ours; never synced).
    partials: tuple[str, ...] = ()

    @cached_property
    def _uncertain_files(self) -> frozenset[str]:
        return frozenset(self.unstable) | frozenset(self.unreadable)

    @cached_property
    def _uncertain_dirs(self) -> frozenset[str]:
        return frozenset(self.unreadable_dirs)

    def is_uncertain(self, relpath: str) -> bool:
        """True when ``relpath`` may exist although it is not in ``files``."""
        if relpath in self._uncertain_files:
            return True
        if not self._uncertain_dirs:
            return False
        parts = relpath.split("/")
        return any(
            "/".join(parts[:depth]) in self._uncertain_dirs for depth in range(1, len(parts))
        )


# -- the walk ----------------------------------------------------------------------


def scan(
    root: Path,
    *,
    rules: IgnoreRules,
    hash_cache: HashCache,
    follow_symlinks: bool = False,
    hasher: Hasher | None = None,
    now_ns: Callable[[], int] = time.time_ns,
    tick: Tick = _no_tick,
    accept_growth: bool = False,
    only: Iterable[str] | None = None,
) -> Snapshot:
    """Walk ``root`` and return what is there; see the module docstring for the rules.

    ``only``: relpaths to look at instead of the whole tree (the daemon's
    incremental passes); a directory among them is walked whole. Their parent
    directories must be real directories (the caller checks), and ``rules``
    must hold the ignore files a full scan read.

    ``hasher`` exists so tests can change a file while it is being hashed.
    ``now_ns`` is the wall clock in nanoseconds; ``tick`` is called before every
    ``TICK_EVERY`` entries of a directory and for every hashed chunk.
    ``accept_growth``: a file appended to while it is hashed is taken as it was
    when first stat'ed (its first bytes), not as unstable (the daemon's overdue
    passes: a log that never stops growing).
    Raises ``LocalError`` only when the root is missing, not a directory, or
    cannot be listed.
    """
    root_stat = _stat_root(root)
    walk = _Walk(root, rules, hash_cache, hasher, follow_symlinks, now_ns, tick, accept_growth)
    if only is not None:
        walk.run_only(root_stat, only)
        return walk.snapshot()
    with hash_cache.scanning() as rows, collector_paused():
        walk.use_rows(rows)
        walk.run(root_stat)
    return walk.snapshot()


def _stat_root(root: Path) -> os.stat_result:
    try:
        root_stat = root.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise LocalError(f"sync root {root} does not exist", path=str(root)) from None
    except OSError as exc:
        raise LocalError(
            f"sync root {root} cannot be read: {exc.strerror}", path=str(root)
        ) from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise LocalError(f"sync root {root} is not a directory", path=str(root))
    return root_stat


def _name_problem(name: str, relpath: str) -> str | None:
    if relpath.isascii() and name.isprintable():
        # The common case, without encoding: ASCII is valid UTF-8 of the same length,
        # and printable ASCII has no control character.
        if len(relpath) > MAX_RELPATH_BYTES:
            return f"path is longer than {MAX_RELPATH_BYTES} UTF-8 bytes"
        return None
    try:
        encoded = relpath.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if _CONTROL_CHARS.search(name):
        return "name contains a control character"
    if len(encoded) > MAX_RELPATH_BYTES:
        return f"path is longer than {MAX_RELPATH_BYTES} UTF-8 bytes"
    return None


def _only_grew(before: os.stat_result, after: os.stat_result) -> bool:
    return after.st_ino == before.st_ino and after.st_size > before.st_size


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


class _Walk:
    """The mutable state of one scan; ``snapshot()`` freezes it.

    Paths inside the walk are ``str`` (``DirEntry.path``), not ``Path``: a
    ``Path`` per entry costs real time on a 100k-file tree (hence the PTH noqa).
    """

    def __init__(
        self,
        root: Path,
        rules: IgnoreRules,
        hash_cache: HashCache,
        hasher: Hasher | None,
        follow_symlinks: bool,
        now_ns: Callable[[], int],
        tick: Tick,
        accept_growth: bool,
    ) -> None:
        self._root = str(root)
        self._now_ns = now_ns
        self._tick = tick
        self._accept_growth = accept_growth
        self._root_real = os.path.realpath(root)
        self._rules = rules
        self._cache = hash_cache
        self._hasher = hasher
        self._follow = follow_symlinks
        self._files: dict[str, LocalFile] = {}
        self._warnings: list[ScanWarning] = []
        self._unstable: list[str] = []
        self._unreadable: list[str] = []
        self._unreadable_dirs: list[str] = []
        self._ignored = 0
        self._hashed = 0
        self._partials: list[str] = []
        # Real directories first (a stack), symlinked ones after all of them (a
        # heap by relpath), so a directory reachable both ways is always synced
        # at its real place, whatever order scandir returns names in.
        # Each real directory carries its "clean" flag (IgnoreRules.entry_ignored).
        self._dirs: list[tuple[str, str, bool]] = []
        self._linked_dirs: list[tuple[str, str]] = []
        # (st_dev, st_ino) -> relpath: each directory is walked once, which also
        # ends symlink cycles.
        self._visited: dict[tuple[int, int], str] = {}
        # The cache's rows while a whole-tree scan runs, if it hands them out: each
        # directory's entries by name, asked for as the walk lists the directory.
        self._rows: ScanRows | None = None
        # The entries of the directory being visited (None: ask ``lookup``).
        self._here: dict[str, tuple[Any, ...]] | None = None

    def use_rows(self, rows: ScanRows | None) -> None:
        """Look files up in ``rows``' entries (what ``HashCache.scanning`` yielded)
        without a call to the cache per file, and hand it each directory's new ones."""
        self._rows = rows

    def snapshot(self) -> Snapshot:
        return Snapshot(
            files=self._files,
            warnings=tuple(self._warnings),
            unstable=tuple(self._unstable),
            unreadable=tuple(self._unreadable),
            unreadable_dirs=tuple(self._unreadable_dirs),
            ignored_count=self._ignored,
            hashed_count=self._hashed,
            partials=tuple(self._partials),
        )

    def run(self, root_stat: os.stat_result) -> None:
        self._visited[(root_stat.st_dev, root_stat.st_ino)] = "."
        self._list_root()
        self._walk_pending()

    def run_only(self, root_stat: os.stat_result, relpaths: Iterable[str]) -> None:
        """Visit each of ``relpaths`` (and all below a directory) as the full walk would."""
        self._visited[(root_stat.st_dev, root_stat.st_ino)] = "."
        chosen: list[str] = []
        for relpath in sorted(set(relpaths)):
            if chosen and relpath.startswith(chosen[-1] + "/"):
                continue  # below a directory already named
            chosen.append(relpath)
        for relpath in chosen:
            parent, _, name = relpath.rpartition("/")
            if not name or any(
                self._rules.ignored(ancestor, is_dir=True) for ancestor in _ancestors(parent)
            ):
                continue
            try:
                entry = _NamedEntry(f"{self._root}/{relpath}", name)
            except FileNotFoundError:
                # Gone: absent from the snapshot, as a deletion should be, and its
                # digest from the cache (one delta row, no directory rewritten).
                self._cache.forget(relpath)
                continue
            except OSError as exc:
                self._unreadable_file(relpath, exc)
                continue
            self._visit_all(parent, [entry], parent_clean=False)  # type: ignore[list-item]
        self._walk_pending()

    def _walk_pending(self) -> None:
        """Every directory found so far and all below it: real ones first, linked after."""
        while self._dirs or self._linked_dirs:
            if self._dirs:
                relpath, path, clean = self._dirs.pop()
                self._list_dir(relpath, path, clean)
            else:
                relpath, path = heapq.heappop(self._linked_dirs)
                self._enter_linked_dir(relpath, path)

    # -- directories

    def _list_root(self) -> None:
        try:
            with os.scandir(self._root) as listing:
                entries = list(listing)
        except OSError as exc:
            raise LocalError(
                f"sync root {self._root} cannot be listed: {exc.strerror}", path=self._root
            ) from None
        self._visit_all("", entries, parent_clean=True)

    def _list_dir(self, relpath: str, path: str, clean: bool) -> None:
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._unreadable_dir(relpath, exc)
            return
        if IGNORE_FILE in map(_NAME, entries):  # a C loop: most directories have none
            for entry in entries:
                if entry.name == IGNORE_FILE and entry.is_file(follow_symlinks=False):
                    # Its patterns apply to this directory's entries: read it first.
                    self._rules.add_directory_file(relpath, Path(entry.path))
        self._visit_all(relpath, entries, parent_clean=clean)

    def _enter_linked_dir(self, relpath: str, path: str) -> None:
        try:
            dir_stat = os.stat(path)  # noqa: PTH116
        except FileNotFoundError:
            return
        except OSError as exc:
            self._unreadable_dir(relpath, exc)
            return
        key = (dir_stat.st_dev, dir_stat.st_ino)
        if key in self._visited:
            self._warn(relpath, f"symlink to a directory already synced as {self._visited[key]}")
            return
        self._visited[key] = relpath
        # Reached through a link: its path is checked whole below, not name by name.
        self._list_dir(relpath, path, clean=False)

    def _visit_dir(self, relpath: str, entry: os.DirEntry[str], clean: bool) -> None:
        try:
            dir_stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._unreadable_dir(relpath, exc)
            return
        key = (dir_stat.st_dev, dir_stat.st_ino)
        if key in self._visited:
            # Only a bind mount or a directory first reached through a symlink gets here.
            self._warn(relpath, f"same directory as {self._visited[key]}, skipped")
            return
        self._visited[key] = relpath
        self._dirs.append((relpath, entry.path, clean))

    # -- entries

    def _visit_all(
        self, parent: str, entries: list[os.DirEntry[str]], *, parent_clean: bool
    ) -> None:
        """Every entry of one directory: the scan's hot loop, so lookups are hoisted.

        Most entries of a tree are regular files with plain names that no ignore
        pattern can match: they take the lane below, which asks for no more than
        that (the directory entry's type, one lstat, the cache, one ``LocalFile``;
        in a directory the cache has no rows of, a small file's stat is the fstat of
        the descriptor it is read through instead: ``_read_unseen``).
        Any other entry, and any that fails on the way, goes to ``_visit_entry``,
        which decides it from the start, as if the lane had not looked at it.
        """
        tick = self._tick
        other = self._visit_entry
        prefix = f"{parent}/" if parent else ""
        screen = self._rules.screen(parent) if parent_clean else None
        # The lane's screen: Screen.passes, inline when it is only prefixes and
        # suffixes (the defaults); a partial file's name fails it too.
        prefixes: tuple[str, ...] | None = (PARTIAL_PREFIX,)
        suffixes: tuple[str, ...] = ()
        if screen is None:
            prefixes = None  # every entry takes the other lane
        elif screen.names_only:
            names, suffixes = screen.affixes
            prefixes = (*names, PARTIAL_PREFIX)
        if prefixes is not None and ("" in prefixes or "" in suffixes):
            prefixes = None  # an empty affix fits every name
        # A name starts with a prefix only if it starts with the prefix's first
        # character: one set lookup rules out most names before the tuple is tried.
        firsts = frozenset(p[0] for p in prefixes or ())
        lasts = frozenset(s[-1] for s in suffixes)
        passes = screen.passes if screen is not None and not screen.names_only else None
        rows = self._rows
        here = self._here = rows.take(parent) if rows is not None else None
        get = here.get if here is not None else None
        lookup = self._cache.lookup
        files = self._files
        # Digests this directory's files got, for the cache in one piece at the end.
        fresh: dict[str, Row] = {}
        # Hash in the lane (below) unless a test's hasher must be called.
        inline = self._hasher is None and rows is not None
        # A directory the cache has no rows of (all of them, in a first scan).
        unseen = inline and not here
        read_unseen = _read_unseen
        now_ns = self._now_ns
        hashed = 0
        # What the lane calls per file, as locals.
        os_open, os_stat, fstat, pread, close = os.open, os.stat, os.fstat, os.pread, os.close
        is_regular, hexdigest = stat.S_ISREG, xxhash.xxh3_128_hexdigest
        local_file, max_bytes = LocalFile, MAX_RELPATH_BYTES
        for start in range(0, len(entries), TICK_EVERY):
            tick()
            for entry in entries[start : start + TICK_EVERY]:
                name = entry.name
                relpath = prefix + name
                if (
                    prefixes is None
                    or (name[0] in firsts and name.startswith(prefixes))
                    or (name[-1] in lasts and name.endswith(suffixes))
                    # A directory's path holds the file's, and more: if no pattern can
                    # match the one, none can match the other.
                    or (passes is not None and not passes(relpath, name, True))
                    # _name_problem's common case (isprintable: no newline either).
                    or not (name.isprintable() and relpath.isascii() and len(relpath) <= max_bytes)
                ):
                    other(entry, relpath, parent_clean, screen)
                    continue
                if unseen:
                    # No row of this directory can match, so no lstat to look one up
                    # with: a small file is read through one descriptor, whose fstat
                    # is its stat (_read_unseen). Anything else goes on below.
                    try:
                        listed_file = entry.is_file(follow_symlinks=False)  # d_type
                    except OSError:
                        listed_file = False
                    read = read_unseen(entry.path) if listed_file else None
                    if read is not None:
                        file_stat, content = read
                        mtime_ns = file_stat.st_mtime_ns
                        inode, size = file_stat.st_ino, file_stat.st_size
                        tick()
                        read_hash = hexdigest(content)
                        hashed += 1
                        ctime_ns = file_stat.st_ctime_ns
                        if now_ns() - mtime_ns >= RACY_WINDOW_NS:
                            fresh[name] = (inode, size, mtime_ns, ctime_ns, read_hash)
                        files[relpath] = local_file(
                            relpath, size, mtime_ns, inode, read_hash, ctime_ns
                        )
                        continue
                try:
                    # One lstat, which the entry keeps: a directory or anything else
                    # the other lane takes asks it again for free.
                    file_stat = entry.stat(follow_symlinks=False)
                except OSError:
                    other(entry, relpath, parent_clean, screen)
                    continue
                if not is_regular(file_stat.st_mode):
                    other(entry, relpath, parent_clean, screen)
                    continue
                inode, size, mtime_ns = file_stat.st_ino, file_stat.st_size, file_stat.st_mtime_ns
                ctime_ns = file_stat.st_ctime_ns
                if get is not None:
                    # The cache's lookup, inline: this directory's row for the name.
                    row = get(name)
                    digest = (
                        row[4]
                        if row is not None
                        and row[0] == inode
                        and row[1] == size
                        and row[2] == mtime_ns
                        and row[3] == ctime_ns
                        else None
                    )
                else:
                    digest = lookup(relpath, inode, size, mtime_ns, ctime_ns)
                if digest is None and inline and 0 < size <= HASH_CHUNK:
                    # _hash for a small file, inline: the same calls, or none of the
                    # results (an error, another type, a change) and the long way below
                    # decides the file from the start.
                    path = entry.path
                    chunk = None
                    try:
                        fd = os_open(path, _OPEN_FLAGS)
                        try:
                            if is_regular(fstat(fd).st_mode):  # nothing else is read
                                chunk = pread(fd, size, 0)
                        finally:
                            close(fd)
                        after = os_stat(path)
                    except OSError:
                        chunk = None
                    if (
                        chunk is not None
                        and len(chunk) == size
                        and after.st_ino == inode
                        and after.st_size == size
                        and after.st_mtime_ns == mtime_ns
                    ):
                        tick()
                        digest = hexdigest(chunk)
                        hashed += 1
                        if now_ns() - mtime_ns >= RACY_WINDOW_NS:
                            fresh[name] = (inode, size, mtime_ns, ctime_ns, digest)
                if digest is None:
                    digest = self._hash(relpath, entry.path, file_stat)
                    if digest is None:
                        continue
                files[relpath] = local_file(relpath, size, mtime_ns, inode, digest, ctime_ns)
        self._hashed += hashed
        if rows is not None and here is not None:  # one is None only with the other
            self._here = None
            rows.done(parent, here, fresh)

    def _visit_entry(
        self, entry: os.DirEntry[str], relpath: str, parent_clean: bool, screen: Screen | None
    ) -> None:
        """One entry of any kind, decided from the start (``_visit_all``'s other lane)."""
        name = entry.name
        if name.startswith(PARTIAL_PREFIX):
            # A download in progress or interrupted: never a file of the tree.
            self._partials.append(relpath)
            return
        # Errors count as "no": the handlers stat again and report.
        try:
            is_link = entry.is_symlink()
        except OSError:
            is_link = False
        try:
            is_dir = entry.is_dir(follow_symlinks=self._follow)
        except OSError:
            is_dir = False
        # Ignore rules come before name checks so users can silence a warning
        # about a hostile name by ignoring it.
        if screen is not None and screen.passes(relpath, name, is_dir):
            clean = True  # no pattern can match: the common case, without pathspec
        else:
            ignored, clean = self._rules.entry_ignored(relpath, name, is_dir, parent_clean)
            if ignored:
                self._ignored += 1
                return
        problem = _name_problem(name, relpath)
        if problem is not None:
            self._warn(relpath, problem)
            return
        if is_link:
            self._visit_link(relpath, entry.path)
            return
        if is_dir:
            self._visit_dir(relpath, entry, clean)
            return
        try:
            file_stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._unreadable_file(relpath, exc)
            return
        self._add_file(relpath, entry.path, file_stat)

    def _visit_link(self, relpath: str, path: str) -> None:
        if not self._follow:
            self._warn(relpath, "symlink not followed")
            return
        try:
            target_stat = os.stat(path)  # noqa: PTH116
        except FileNotFoundError:
            if os.path.lexists(path):
                self._warn(relpath, "symlink target does not exist")
            return
        except OSError as exc:
            reason = "symlink loop" if exc.errno == errno.ELOOP else exc.strerror
            self._warn(relpath, f"symlink not followed: {reason}")
            return
        target = os.path.realpath(path)
        if target != self._root_real and not target.startswith(self._root_real + os.sep):
            self._warn(relpath, "symlink points outside the sync root")
            return
        is_dir = stat.S_ISDIR(target_stat.st_mode)
        if self._target_ignored(os.path.relpath(target, self._root_real), is_dir):
            self._warn(relpath, "symlink points to an ignored path")
        elif is_dir:
            heapq.heappush(self._linked_dirs, (relpath, path))
        else:
            self._add_file(relpath, path, target_stat)

    def _target_ignored(self, target_relpath: str, is_dir: bool) -> bool:
        if target_relpath == ".":
            return False
        parts = Path(target_relpath).parts
        for depth in range(1, len(parts) + 1):
            last = depth == len(parts)
            if self._rules.ignored("/".join(parts[:depth]), is_dir or not last):
                return True
        return False

    # -- files

    def _add_file(self, relpath: str, path: str, file_stat: os.stat_result) -> None:
        if not stat.S_ISREG(file_stat.st_mode):
            self._warn(relpath, f"{_kind(file_stat.st_mode)} skipped")
            return
        inode, size, mtime_ns = file_stat.st_ino, file_stat.st_size, file_stat.st_mtime_ns
        ctime_ns = file_stat.st_ctime_ns
        here = self._here
        if here is not None:
            row = here.get(relpath.rpartition("/")[2])
            digest = (
                row[4]
                if row is not None
                and row[0] == inode
                and row[1] == size
                and row[2] == mtime_ns
                and row[3] == ctime_ns
                else None
            )
        else:
            digest = self._cache.lookup(relpath, inode, size, mtime_ns, ctime_ns)
        if digest is None:
            digest = self._hash(relpath, path, file_stat)
            if digest is None:
                return
        self._files[relpath] = LocalFile(relpath, size, mtime_ns, inode, digest, ctime_ns)

    def _hash(self, relpath: str, path: str, before: os.stat_result) -> str | None:
        try:
            if self._hasher is None:
                # Reading the size the stat saw is enough: a file that grew, shrank
                # or changed fails the identity check below (and saves a read call).
                digest = _hash_sized(path, before.st_size, self._tick)
            else:
                digest = self._hasher(Path(path))
            after = os.stat(path)  # noqa: PTH116
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._unreadable_file(relpath, exc)
            return None
        self._hashed += 1
        inode, size, mtime_ns = before.st_ino, before.st_size, before.st_mtime_ns
        if after.st_ino != inode or after.st_size != size or after.st_mtime_ns != mtime_ns:
            if self._accept_growth and _only_grew(before, after):
                return self._hash_as_it_was(relpath, path, before)
            self._unstable.append(relpath)
            return None
        if self._now_ns() - mtime_ns >= RACY_WINDOW_NS:
            self._cache.store(relpath, inode, size, mtime_ns, before.st_ctime_ns, digest)
        return digest

    def _hash_as_it_was(self, relpath: str, path: str, before: os.stat_result) -> str | None:
        """A file being appended to, as it was at ``before``: its first bytes, hashed."""
        try:
            digest = hash_file(path, tick=self._tick, limit=before.st_size)
            after = os.stat(path)  # noqa: PTH116
        except OSError:
            self._unstable.append(relpath)
            return None
        if not _only_grew(before, after) and after.st_size != before.st_size:
            self._unstable.append(relpath)
            return None
        return digest  # never cached: the file on disk is no longer this

    # -- problems

    def _warn(self, relpath: str, reason: str) -> None:
        self._warnings.append(ScanWarning(printable(relpath), reason))

    def _unreadable_file(self, relpath: str, exc: OSError) -> None:
        self._unreadable.append(relpath)
        self._warn(relpath, f"cannot be read: {exc.strerror or exc}")

    def _unreadable_dir(self, relpath: str, exc: OSError) -> None:
        self._unreadable_dirs.append(relpath)
        self._warn(relpath, f"directory cannot be read: {exc.strerror or exc}")


def _ancestors(parent: str) -> list[str]:
    """``a``, ``a/b``, ``a/b/c`` for ``a/b/c``; nothing for the root."""
    if not parent:
        return []
    parts = parent.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]


class _NamedEntry:
    """What the walk reads of an ``os.DirEntry``, for one path named by an event."""

    __slots__ = ("_lstat", "name", "path")

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self._lstat = os.lstat(path)

    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self._lstat.st_mode)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if follow_symlinks and self.is_symlink():
            return os.stat(self.path)  # noqa: PTH116
        return self._lstat

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        try:
            return stat.S_ISDIR(self.stat(follow_symlinks=follow_symlinks).st_mode)
        except OSError:
            return False

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        try:
            return stat.S_ISREG(self.stat(follow_symlinks=follow_symlinks).st_mode)
        except OSError:
            return False
