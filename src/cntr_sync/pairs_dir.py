"""The pairs directory: one TOML file per pair, added, changed and removed at run time.

``pairs_dir`` (default ``pairs.d`` in the state directory) holds ``NAME.toml``
files with the keys of a ``[[pairs]]`` table; a file's pair is named after the
file unless it sets ``name``. The daemon reads the directory at start and asks
``changed`` every half second: a stat of the directory and of every file,
following symlinks. That sees a Kubernetes ConfigMap update, where the kubelet
swaps a symlinked ``..data`` directory under unchanged names (an inotify watch
on the directory misses it), and it costs a few system calls per file.

Owns reading the files (a bad one is refused with one line naming it, the
others stand), and writing and removing one atomically for ``cntr-sync pair
add`` and ``pair remove``.

Must not: start or stop pairs (the daemon does), or accept a file whose pair
would not validate.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from cntr_sync.config import PairSettings, Settings
from cntr_sync.config_sources import ConfigFile, suggest
from cntr_sync.errors import ConfigError

__all__ = ["SUFFIX", "DirPairs", "PairsDir", "pairs_dir_path", "validate_table"]

SUFFIX = ".toml"

# (name, inode, mtime in ns, size) of every pair file, as stat() saw them.
_Signature = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class DirPairs:
    """What the directory holds: the pairs of good files by name, and the refused
    files with the reason (one line each)."""

    tables: dict[str, PairSettings] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # pair name -> its file
    refused: dict[str, str] = field(default_factory=dict)  # file name -> reason


def pairs_dir_path(settings: Settings) -> Path:
    """``pairs_dir``, else ``pairs.d`` in the state directory."""
    return settings.pairs_dir if settings.pairs_dir is not None else settings.state_dir / "pairs.d"


def validate_table(data: dict[str, Any], where: str) -> PairSettings:
    """One ``[[pairs]]`` table from ``data``; ConfigError naming ``where`` and the key."""
    try:
        return PairSettings.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        # A misspelt key is the likelier cause of a "missing" one: name it first.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        key = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"{where}: unknown key '{key}'{suggest(key, PairSettings)}") from None
        raise ConfigError(
            f"{where}: {key}: {first['msg']}" if key else f"{where}: {first['msg']}"
        ) from None


class PairsDir:
    """One directory of pair files; ``changed`` says when to ``read`` it again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: _Signature | None = None

    def changed(self) -> bool:
        """Whether a file was added, changed or removed since the last call (at first: True)."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        return True

    def _stat(self) -> _Signature:
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return ()
        found = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
                continue  # hidden: a ConfigMap's ..data links, an editor's swap file
            try:
                stat = entry.stat()  # through symlinks: the ConfigMap's real file
            except OSError:
                continue
            found.append((entry.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(found))

    def read(self) -> DirPairs:
        pairs = DirPairs()
        try:
            names = sorted(entry.name for entry in self.path.iterdir())
        except FileNotFoundError:
            return pairs
        except OSError as exc:
            pairs.refused[str(self.path)] = f"{self.path}: {exc.strerror}"
            return pairs
        for name in names:
            if name.startswith(".") or not name.endswith(SUFFIX):
                continue
            path = self.path / name
            try:
                data = ConfigFile(path).data
                table = validate_table({"name": name.removesuffix(SUFFIX), **data}, str(path))
            except ConfigError as exc:
                pairs.refused[name] = exc.message
                continue
            if table.name in pairs.tables:
                pairs.refused[name] = (
                    f"{path}: pair {table.name!r} is already in {pairs.files[table.name].name}"
                )
                continue
            pairs.tables[table.name] = table
            pairs.files[table.name] = path
        return pairs

    def file_of(self, name: str) -> Path:
        return self.path / f"{name}{SUFFIX}"

    def write(self, table: PairSettings) -> Path:
        """``table`` as ``NAME.toml``, replaced atomically (a reader never sees half a file)."""
        data = table.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        data["local"] = str(table.local)
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.file_of(table.name)
        descriptor, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(descriptor, "wb") as file:
                tomli_w.dump(data, file)
                file.flush()
                os.fsync(file.fileno())
            Path(temporary).replace(target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def remove(self, file: Path) -> bool:
        """Remove a pair's file (``DirPairs.files``); False when it was gone already."""
        try:
            file.unlink()
        except FileNotFoundError:
            return False
        return True
