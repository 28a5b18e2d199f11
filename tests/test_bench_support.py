"""bench/_support.py's byte-compilation of the package: the benchmarks time ``cntr-sync``
as an installed copy runs, with current bytecode, whatever PYTHONDONTWRITEBYTECODE says."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import cntr_sync

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def support(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("_support")
    module.compiled_package.cache_clear()
    yield module
    module.compiled_package.cache_clear()
    sys.modules.pop("_support", None)


def test_the_package_is_compiled_once_and_again_only_where_a_source_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, support: ModuleType
) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    sources = [package / "__init__.py", package / "a.py", package / "sub" / "b.py"]
    for number, source in enumerate(sources):
        source.write_text(f"VALUE = {number}\n")
    monkeypatch.setattr(cntr_sync, "__file__", str(package / "__init__.py"))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")

    assert support.compiled_package() == 3
    for source in sources:
        assert Path(importlib.util.cache_from_source(str(source))).is_file()
    assert support.compiled_package() == 3  # cached: the work is done once a process

    support.compiled_package.cache_clear()
    assert support.compiled_package() == 0  # all current
    support.compiled_package.cache_clear()
    sources[1].write_text("VALUE = 'changed'\n")
    os.utime(sources[1], ns=(1, 1))  # a source mtime no bytecode was made from
    assert support.compiled_package() == 1
