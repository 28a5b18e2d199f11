"""Reading the local tree: walk, stat, ignore rules and content hashes -> ``Snapshot``.

Owns: what cntr-sync believes is under the sync root right now. ``scan`` walks
the tree with ``os.scandir`` (an explicit stack, no recursion), applies the
ignore rules, stats every entry once, and hashes regular files (``hashing``),
asking the hash cache (``hashcache``) first so an unchanged tree is not read
again. The wall clock (for the racily-clean rule below) and a progress tick (the
daemon's liveness) are injected.

Must not: write, rename or delete anything under the root; open anything that
is not a regular file (opening a FIFO blocks, opening a device may have side
effects); raise for a single entry's problem. Single-entry problems become
``ScanWarning``s; only a root that is missing or cannot be listed raises
``LocalError``, because an empty snapshot from a broken root would read as
"everything was deleted". Files and directories that exist but could not be
read are reported (``unreadable``, ``unreadable_dirs``) so the caller treats
them as unknown, never as deleted.

Ignore rules (``ignore.IgnoreRules``) come from the built-in defaults, the
``.cntrignore`` file at the root, the ``.cntrignore`` files of directories below
it (each read as the walk enters its directory, before that directory's entries;
its patterns apply beneath it) and the configured patterns; see ``IgnoreRules``
for which wins. ``.cntrsync/`` (our own state) is always ignored, whatever the
patterns say.
"""

from __future__ import annotations

import errno
import heapq
import operator
import os
import re
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cntr_sync.errors import LocalError
from cntr_sync.gc_pause import collector_paused
from cntr_sync.hashcache import HashCache
from cntr_sync.hashing import Tick, hash_file, hash_listed_file, no_tick
from cntr_sync.ignore import IgnoreRules, Prefilter
from cntr_sync.models import LocalFile
from cntr_sync.remote_paths import printable
from cntr_sync.tree_names import IGNORE_FILE, MAX_RELPATH_BYTES, PARTIAL_PREFIX, ancestors

# A file rewritten within the file system's timestamp granularity after we
# hashed it keeps its size and mtime, so a cached digest would hide the change
# (git's "racily clean" problem). Digests of files this young are not cached;
# the next scan hashes them again, by then they are old enough.
RACY_WINDOW_NS = 2_000_000_000

# The API's multipart filename cannot carry these faithfully.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

Hasher = Callable[[Path], str]

_NAME = operator.attrgetter("name")

# The walk calls ``tick`` before each run of this many entries of a directory (and
# for every chunk it hashes): a sign of progress every few milliseconds, not a
# call per entry (a tenth of a microsecond each, 4 % of a scan of an unchanged tree).
TICK_EVERY = 256


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
        return any(directory in self._uncertain_dirs for directory in ancestors(relpath))


# -- the walk ----------------------------------------------------------------------


def scan(
    root: Path,
    *,
    rules: IgnoreRules,
    hash_cache: HashCache,
    follow_symlinks: bool = False,
    hasher: Hasher | None = None,
    now_ns: Callable[[], int] = time.time_ns,
    tick: Tick = no_tick,
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
    else:
        with hash_cache.scanning(), collector_paused():
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
    """Why ``name`` (at ``relpath``) cannot be mirrored, or None.

    A printable ASCII relpath within the limit never has a problem (ASCII is valid
    UTF-8 of the same length, and printable ASCII has no control character): the
    walk's fast path checks that much without calling this.
    """
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
        # at its real place, whatever order scandir returns names in. Each real
        # directory carries whether its names are ruled out (``IgnoreRules``).
        self._dirs: list[tuple[str, str, bool]] = []
        self._linked_dirs: list[tuple[str, str]] = []
        # (st_dev, st_ino) -> relpath: each directory is walked once, which also
        # ends symlink cycles.
        self._visited: dict[tuple[int, int], str] = {}

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
            if not name or any(self._rules.ignored(d, is_dir=True) for d in ancestors(relpath)):
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
            self._visit_all(parent, [entry], names_ruled_out=False)  # type: ignore[list-item]
        self._walk_pending()

    def _walk_pending(self) -> None:
        """Every directory found so far and all below it: real ones first, linked after."""
        while self._dirs or self._linked_dirs:
            if self._dirs:
                relpath, path, names_ruled_out = self._dirs.pop()
                self._list_dir(relpath, path, names_ruled_out)
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
        self._visit_all("", entries, names_ruled_out=True)

    def _list_dir(self, relpath: str, path: str, names_ruled_out: bool) -> None:
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
        self._visit_all(relpath, entries, names_ruled_out=names_ruled_out)

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
        self._list_dir(relpath, path, names_ruled_out=False)

    def _visit_dir(self, relpath: str, entry: os.DirEntry[str], names_ruled_out: bool) -> None:
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
        self._dirs.append((relpath, entry.path, names_ruled_out))

    # -- entries

    def _visit_all(
        self, parent: str, entries: list[os.DirEntry[str]], *, names_ruled_out: bool
    ) -> None:
        """Every entry of one directory, with the cache's digests of its files: the
        scan's hot loop.

        The fast path takes most entries of a tree, regular files with plain names
        that no pattern can match, with what the profile justified (callgrind, 100k
        files: sending each through ``_visit_entry`` cost 32 % more instructions
        warm, 23 % cold): the prefilter and a name check instead of
        ``_visit_entry``'s questions, then one lstat, or none in a directory the
        cache holds no digest of (all of a first scan's: ``hash_listed_file``). Any
        other entry, and any that fails on the way, goes to ``_visit_entry``, which
        decides it from the start and hands back the stat of a regular file to keep.
        """
        prefix = f"{parent}/" if parent else ""
        prefilter = self._rules.prefilter(parent) if names_ruled_out else None
        digests = self._cache.directory(parent)
        # A test's hasher must see every file: nothing is read around it.
        read_before_stat = digests.empty and self._hasher is None
        files = self._files
        for start in range(0, len(entries), TICK_EVERY):
            self._tick()
            for entry in entries[start : start + TICK_EVERY]:
                name = entry.name
                relpath = prefix + name
                read = None
                if (
                    prefilter is not None
                    # Asked as of a directory (is_dir True), whose path holds a file's
                    # and more: if no pattern can match the one, none can match the other.
                    and prefilter.rules_out(relpath, name, True)
                    # A printable ASCII relpath within the limit: nothing for
                    # _name_problem to warn about (checked here without a call).
                    and name.isprintable()
                    and relpath.isascii()
                    and len(relpath) <= MAX_RELPATH_BYTES
                ):
                    if read_before_stat:
                        read = hash_listed_file(entry)
                    if read is not None:
                        file_stat: os.stat_result | None = read[0]
                    else:
                        try:
                            file_stat = entry.stat(follow_symlinks=False)
                        except OSError:
                            file_stat = None
                        if file_stat is None or not stat.S_ISREG(file_stat.st_mode):
                            # _visit_entry asks the entry's kept lstat again, for free.
                            file_stat = self._visit_entry(
                                entry, relpath, names_ruled_out, prefilter
                            )
                else:
                    file_stat = self._visit_entry(entry, relpath, names_ruled_out, prefilter)
                if file_stat is None:
                    continue
                # A regular file to keep, with its cached digest or one read now.
                inode, size = file_stat.st_ino, file_stat.st_size
                mtime_ns, ctime_ns = file_stat.st_mtime_ns, file_stat.st_ctime_ns
                if read is not None:
                    digest, cache_it = read[1], True
                    self._hashed += 1
                    self._tick()
                else:
                    cached = digests.digest(name, inode, size, mtime_ns, ctime_ns)
                    if cached is not None:
                        digest, cache_it = cached, False
                    else:
                        hashed = self._hash(relpath, entry.path, file_stat)
                        if hashed is None:
                            continue
                        digest, cache_it = hashed
                # The racily-clean rule (RACY_WINDOW_NS): a young file's digest is not cached.
                if cache_it and self._now_ns() - mtime_ns >= RACY_WINDOW_NS:
                    digests.add(name, inode, size, mtime_ns, ctime_ns, digest)
                files[relpath] = LocalFile(relpath, size, mtime_ns, inode, digest, ctime_ns)
        digests.close()

    def _visit_entry(
        self,
        entry: os.DirEntry[str],
        relpath: str,
        parent_names_ruled_out: bool,
        prefilter: Prefilter | None,
    ) -> os.stat_result | None:
        """One entry of any kind, decided from the start: the stat of a regular file for
        the caller to keep (its lstat, or a followed link's stat), else None."""
        name = entry.name
        if name.startswith(PARTIAL_PREFIX):
            # A download in progress or interrupted: never a file of the tree.
            self._partials.append(relpath)
            return None
        # The listing's answers (scandir's d_type: no system call). Errors count as
        # "no": the handlers stat again and report.
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
        if prefilter is not None and prefilter.rules_out(relpath, name, is_dir):
            names_ruled_out = True  # no pattern can match: the common case, no pathspec
        else:
            ignored, names_ruled_out = self._rules.entry_ignored(
                relpath, name, is_dir, parent_names_ruled_out
            )
            if ignored:
                self._ignored += 1
                return None
        problem = _name_problem(name, relpath)
        if problem is not None:
            self._warn(relpath, problem)
            return None
        if is_link:
            return self._visit_link(relpath, entry.path)
        if is_dir:
            self._visit_dir(relpath, entry, names_ruled_out)
            return None
        try:
            file_stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._unreadable_file(relpath, exc)
            return None
        return self._regular(relpath, file_stat)

    def _visit_link(self, relpath: str, path: str) -> os.stat_result | None:
        """A symlink: followed if the pair says so, to a directory or a file (whose stat
        it returns) inside the root that no rule ignores."""
        if not self._follow:
            self._warn(relpath, "symlink not followed")
            return None
        try:
            target_stat = os.stat(path)  # noqa: PTH116
        except FileNotFoundError:
            if os.path.lexists(path):
                self._warn(relpath, "symlink target does not exist")
            return None
        except OSError as exc:
            reason = "symlink loop" if exc.errno == errno.ELOOP else exc.strerror
            self._warn(relpath, f"symlink not followed: {reason}")
            return None
        target = os.path.realpath(path)
        if target != self._root_real and not target.startswith(self._root_real + os.sep):
            self._warn(relpath, "symlink points outside the sync root")
            return None
        is_dir = stat.S_ISDIR(target_stat.st_mode)
        if self._target_ignored(os.path.relpath(target, self._root_real), is_dir):
            self._warn(relpath, "symlink points to an ignored path")
            return None
        if is_dir:
            heapq.heappush(self._linked_dirs, (relpath, path))
            return None
        return self._regular(relpath, target_stat)

    def _target_ignored(self, target_relpath: str, is_dir: bool) -> bool:
        target = Path(target_relpath).as_posix()
        return target != "." and self._rules.ignored_path(target, is_dir=is_dir)

    # -- files

    def _regular(self, relpath: str, file_stat: os.stat_result) -> os.stat_result | None:
        """``file_stat`` if it is a regular file's; else a warning, and None."""
        if stat.S_ISREG(file_stat.st_mode):
            return file_stat
        self._warn(relpath, f"{_kind(file_stat.st_mode)} skipped")
        return None

    def _hash(self, relpath: str, path: str, before: os.stat_result) -> tuple[str, bool] | None:
        """The file's digest, if it held still while read (``before`` is its stat), and
        whether the cache may keep it; None: the file is gone, unreadable or unstable."""
        try:
            if self._hasher is None:
                # Reading the size the stat saw is enough: a file that grew, shrank
                # or changed fails the identity check below (and saves a read call).
                digest = hash_file(path, tick=self._tick, limit=before.st_size)
            else:
                digest = self._hasher(Path(path))
            after = os.stat(path)  # noqa: PTH116
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._unreadable_file(relpath, exc)
            return None
        self._hashed += 1
        if (
            after.st_ino != before.st_ino
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
        ):
            if self._accept_growth and _only_grew(before, after):
                as_it_was = self._hash_as_it_was(relpath, path, before)
                # Never cached: the file on disk is no longer this.
                return None if as_it_was is None else (as_it_was, False)
            self._unstable.append(relpath)
            return None
        return digest, True

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
        return digest

    # -- problems

    def _warn(self, relpath: str, reason: str) -> None:
        self._warnings.append(ScanWarning(printable(relpath), reason))

    def _unreadable_file(self, relpath: str, exc: OSError) -> None:
        self._unreadable.append(relpath)
        self._warn(relpath, f"cannot be read: {exc.strerror or exc}")

    def _unreadable_dir(self, relpath: str, exc: OSError) -> None:
        self._unreadable_dirs.append(relpath)
        self._warn(relpath, f"directory cannot be read: {exc.strerror or exc}")


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
