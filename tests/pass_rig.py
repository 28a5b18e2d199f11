"""One pair against an in-process emulator, a fresh engine for every pass: the rig the
engine-level tests share (import as ``pass_rig``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import IndexEntry, Pair
from cntr_sync.result import PassResult
from helpers import NoSleep

BASE_URL = "http://emulator.test/v1"


@dataclass
class PassRig:
    """``root`` mirrored into the container "box"; ``sync()`` runs one pass."""

    emu: Emulator
    root: Path
    state: Path
    pair: Pair
    container_id: str = ""
    backup_dir: Path = field(default=Path())

    def transport(self) -> httpx.BaseTransport:
        return self.emu.transport()

    def sync(self, **pair: object) -> PassResult:
        """One pass with the pair's settings, ``pair`` overriding some."""
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=self.transport(), sleep=NoSleep()
            ) as client,
            Index.open(
                self.state, base_url=BASE_URL, root=self.root, container_spec="box"
            ) as index,
        ):
            engine = Engine(client, index, self.pair.model_copy(update=pair))
            result = engine.run_pass()
            self.backup_dir = engine.backup_dir
        assert result.container_id is not None
        self.container_id = result.container_id
        return result

    @contextlib.contextmanager
    def index(self) -> Iterator[Index]:
        """The pair's index as a reader sees it (no lock, nothing written)."""
        with Index.open(
            self.state, base_url=BASE_URL, root=self.root, container_spec="box", lock=False
        ) as index:
            yield index

    def entries(self) -> dict[str, IndexEntry]:
        with self.index() as index:
            return index.entries()

    def entry_id(self, relpath: str) -> str:
        return self.entries()[relpath].remote_id

    def model_writes(self, path: str, content: bytes) -> str:
        """The model writes a file into the container; returns its id."""
        return str(self.emu.add_assistant_file(self.container_id, path, content)["id"])


@contextlib.contextmanager
def pass_rig(tmp_path: Path, direction: str = "both") -> Iterator[PassRig]:
    """A rig whose container exists (a first pass has run)."""
    root = tmp_path / "tree"
    root.mkdir()
    with Emulator(data_dir=tmp_path / "emulator") as emu:
        pair = Pair(name="t", local=root, container="box", direction=direction)  # type: ignore[arg-type]
        rig = PassRig(emu, root, tmp_path / "state", pair)
        rig.sync()
        yield rig
