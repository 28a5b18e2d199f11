"""The pair's local side: its root, the scan, and what is kept beside the tree.

Owns what a pass asks of the local tree besides its files' contents: that the root
is there (a missing root with tracked files is a brake), the scan (whole, or the
paths events named, under the ignore rules and never into our own state, backup
or container-id paths), the files settled enough to send, whether the tree
differs from the index (the daemon's rescan), names in use (for conflict copies),
the conflict copies this tool made, how the root's file system compares names,
and upkeep: the hash cache's gone rows, kept versions' and journal rows' retention.

Must not: talk to the API, or decide what to do (``plan`` and ``pull`` decide).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from cntr_sync import conflict_copies as copies_record
from cntr_sync import journal
from cntr_sync.actions import Plan
from cntr_sync.backups import prune
from cntr_sync.errors import LocalError, SafetyBrakeError
from cntr_sync.hashcache import HashCache, ReadThroughCache
from cntr_sync.ignore import IgnoreRules
from cntr_sync.index import Index
from cntr_sync.logs import get_logger
from cntr_sync.models import LocalFile, Pair
from cntr_sync.plan_inputs import Policy
from cntr_sync.remote_paths import FileSystemTraits, TakenNames, is_conflict_copy, original_of
from cntr_sync.scan import Snapshot
from cntr_sync.scan import scan as scan_tree
from cntr_sync.transfer import Tick, probe_traits

log = get_logger("cntr_sync.local_side")

# Hash-cache rows of gone files tolerated before a pass prunes them.
PRUNE_SLACK = 16


def default_backup_dir(index_path: Path) -> Path:
    """The pair's backups beside its index: ``STATE_DIR/<pair>.backups``."""
    return index_path.with_name(f"{index_path.stem}.backups")


class LocalSide:
    """One pair's root and what is kept beside it; the engine's, one pass at a time."""

    def __init__(
        self,
        pair: Pair,
        index: Index,
        *,
        clock: Callable[[], float],
        tick: Tick,
        fs_traits: FileSystemTraits | None = None,
    ) -> None:
        self.pair = pair
        self.index = index
        self._clock = clock
        self._tick = tick
        # How the root's file system compares names; probed on the first pull.
        self._fs_traits = fs_traits
        self.rules: IgnoreRules | None = None  # the last whole scan's

    def traits(self, *, dry_run: bool) -> FileSystemTraits | None:
        """How the root compares names (pull and both; None in push): probed once, and
        by a dry run without writing in the root."""
        traits = self._fs_traits
        if self.pair.direction != "push" and traits is None:
            traits = probe_traits(self.pair.local, write=not dry_run)
            if not dry_run:
                self._fs_traits = traits
        return traits

    def upkeep(self) -> None:
        """Retention, on full passes: kept versions and journal rows past their time."""
        self.prune_backups()
        journal.prune(self.index, before=self._clock() - self.pair.journal_keep_days * 86_400)

    def conflict_copies(self, snapshot: Snapshot, *, dry_run: bool) -> dict[str, str]:
        """The conflict copies this tool made (copy -> original), as a full scan found the
        tree: records of copies gone from it are dropped; an index from before copies
        were recorded has the files named like copies recorded, once."""
        if not copies_record.exists(self.index):
            named = [relpath for relpath in snapshot.files if is_conflict_copy(relpath)]
            tracked = self.index.entries_under(named) if named else {}
            existing = {
                relpath: original_of(relpath)
                for relpath in named
                if relpath not in tracked and self.index.entry_count()
            }
            if not dry_run:
                copies_record.start(self.index, existing.items())
            return existing
        made = copies_record.made(self.index)
        gone = [c for c in made if c not in snapshot.files and not snapshot.is_uncertain(c)]
        if gone and not dry_run:
            copies_record.forget(self.index, gone)
        return {copy: original for copy, original in made.items() if copy not in gone}

    def ignored_path(self, relpath: str) -> bool:
        """Whether a download may not land at ``relpath`` (the ignore rules leave it alone)."""
        return self.rules is not None and self.rules.ignored_path(relpath)

    def prune_hash_cache(self, snapshot: Snapshot) -> None:
        """Forget digests of files that are gone, once they are a tenth of the cache."""
        self.index.hashes.flush()
        present = [*snapshot.files, *snapshot.unstable, *snapshot.unreadable]
        if self.index.hashes.count() > len(present) * 1.1 + PRUNE_SLACK:
            self.index.hashes.prune(present)

    def prune_backups(self) -> None:
        """Retention, on full passes: kept versions past their age or the byte budget go."""
        if not self.backup_dir.is_dir():
            return
        try:
            gone = prune(
                self.backup_dir,
                keep_days=self.pair.backup_keep_days,
                max_bytes=self.pair.backup_max_bytes,
                now=self._clock(),
            )
        except OSError as exc:  # housekeeping: the pass itself went well
            log.warning("old backups could not be removed", error=str(exc))
            return
        if gone:
            log.info("old backups removed", versions=len(gone))

    @property
    def backup_dir(self) -> Path:
        """Where this pair keeps the local files passes replaced or deleted."""
        return self.pair.backup_dir or default_backup_dir(self.index.path)

    def own_paths(self) -> list[str]:
        """Our state and backup directories and container-id file, where they sit
        inside the root: never mirrored."""
        root = Path(os.path.realpath(self.pair.local))
        own = [self.index.path.parent, self.backup_dir]
        if self.pair.container_id_file is not None:
            own.append(self.pair.container_id_file)
        inside = []
        for path in own:
            resolved = Path(os.path.realpath(path))
            if resolved != root and resolved.is_relative_to(root):
                inside.append(resolved.relative_to(root).as_posix())
        return inside

    @property
    def partial_tag(self) -> str:
        # Partial files carry the pair's index stem: a pass removes only its own leftovers.
        return self.index.path.stem[:12]

    def taken_names(
        self, policy: Policy, local: Mapping[str, LocalFile], pass_plan: Plan
    ) -> TakenNames:
        """Names a conflict copy decided while the plan runs must not take. Only a pass
        that compares needs them (every relpath and directory: 10 MB at 100k files)."""
        if not pass_plan.compares:
            return TakenNames(policy.traits)
        return TakenNames(policy.traits, (*local, *self.index.entries()))

    def check_root(self, *, force: bool) -> None:
        root = self.pair.local
        if root.is_dir():
            return
        tracked = self.index.entry_count()
        if tracked and not force:
            raise SafetyBrakeError(
                f"sync root {root} is missing but {tracked} files are tracked; "
                "refusing to touch the container (is a disk unmounted?)"
            )
        raise LocalError(f"sync root {root} does not exist or is not a directory", path=str(root))

    def settled(
        self, snapshot: Snapshot, *, defer_unsettled: bool
    ) -> tuple[dict[str, LocalFile], set[str]]:
        """The files to sync now, and the unsettled ones (modified within the quiet period)."""
        if not defer_unsettled or self.pair.quiet_period <= 0:
            return snapshot.files, set()
        cutoff = int((self._clock() - self.pair.quiet_period) * 1e9)
        unsettled = {r for r, f in snapshot.files.items() if f.mtime_ns > cutoff}
        if not unsettled:
            return snapshot.files, unsettled
        return {r: f for r, f in snapshot.files.items() if r not in unsettled}, unsettled

    def has_local_changes(self) -> bool:
        """Whether the tree differs from what the index recorded; no API calls.

        The daemon's periodic rescan uses this to catch missed events without
        touching (and so keeping alive) an idle container.
        """
        if self.pair.direction == "pull":
            return False  # local changes change nothing remotely; remote polls pull
        if not self.pair.local.is_dir():
            return bool(self.index.entry_count())
        snapshot = self.scan(dry_run=False)
        entries = self.index.entries()
        copies = copies_record.made(self.index)
        if snapshot.unstable or self.index.intents() or self.index.pending_deletes():
            return True
        for relpath, local_file in snapshot.files.items():
            entry = entries.get(relpath)
            if entry is None and relpath in copies:
                continue  # never uploaded
            if entry is None or entry.hash != local_file.hash:
                return True
        return any(
            relpath not in snapshot.files
            and not snapshot.is_uncertain(relpath)
            # A pulled file deleted here stays as it is in push.
            and not (entry.origin == "pull" and self.pair.direction == "push")
            for relpath, entry in entries.items()
        )

    def scan(
        self, *, dry_run: bool, accept_growth: bool = False, only: Collection[str] | None = None
    ) -> Snapshot:
        """The tree, or with ``only`` the paths named (under the last full scan's rules)."""
        if only is not None and self.rules is not None:
            rules = self.rules
        else:
            rules = IgnoreRules.load(self.pair.local, self.pair.ignore)
            rules.always_ignore(self.own_paths())
            self.rules = rules
        # A dry run reads the hash cache but writes nothing, and keeps nothing of what
        # it hashed: this scan is the cache's only reader.
        cache: HashCache = (
            ReadThroughCache(self.index.hashes, keep_writes=False) if dry_run else self.index.hashes
        )
        return scan_tree(
            self.pair.local,
            rules=rules,
            hash_cache=cache,
            follow_symlinks=self.pair.follow_symlinks,
            now_ns=lambda: int(self._clock() * 1e9),
            tick=self._tick,
            accept_growth=accept_growth,
            only=only,
        )
