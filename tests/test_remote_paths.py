"""remote_paths: where a remote file lands, and which remote paths are refused (plain values)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cntr_sync.remote_paths import (
    FileSystemTraits,
    PathRules,
    Refused,
    conflict_copy_name,
    is_conflict_copy,
    local_relpath,
    suffixed,
)
from cntr_sync.tree_names import NAME_MAX_BYTES

RULES = PathRules()
NOW = 1_798_000_000.0  # 2026-12-23 (UTC)


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("/mnt/data/report.md", "assistant", "report.md"),
        ("/mnt/data/plots/2026/fig.png", "assistant", "plots/2026/fig.png"),
        ("/mnt/data/0123456789abcdef0123456789abcdef-notes.txt", "user", "notes.txt"),
        # The model may name a file that way; only uploads carry the prefix.
        (
            "/mnt/data/0123456789abcdef0123456789abcdef-notes.txt",
            "assistant",
            "0123456789abcdef0123456789abcdef-notes.txt",
        ),
        ("/tmp/out.txt", "assistant", "_container/tmp/out.txt"),
        ("relative.txt", "assistant", "_container/relative.txt"),
    ],
)
def test_paths_that_map(path: str, source: str, expected: str) -> None:
    assert local_relpath(path, source, RULES) == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/mnt/data/../x", "'..' segment"),
        ("/mnt/data/a/./b", "'.' segment"),
        ("/mnt/data//etc/passwd", "absolute"),
        ("/mnt/data/a//b", "'empty' segment"),
        ("/mnt/data/dir/", "'empty' segment"),
        ("/mnt/data/", "names no file"),
        ("/mnt/data/a\x00b", "NUL, control or bidi"),
        ("/mnt/data/tab\there", "NUL, control or bidi"),
        ("/mnt/data/next\x85line", "NUL, control or bidi"),
        # Shows as "invoiceexe.pdf" in a terminal or a file manager.
        ("/mnt/data/invoice\u202efdp.exe", "NUL, control or bidi"),
        ("/mnt/data/a\u2066b", "NUL, control or bidi"),
        ("/mnt/data/" + "é" * 200, "longer than 255 bytes"),
        ("/mnt/data/" + "/".join(["d" * 200] * 6), "longer than 1024 bytes"),
        ("/mnt/data/a.png/mnt/data/b.png", "several paths"),
        ("/mnt/data/a.png /mnt/data/b.png", "several paths"),
        ("/mnt/data/.cntrsync/index.sqlite", "cntr-sync's own files"),
        ("/mnt/data/x/.cntrsync-partial-abc", "cntr-sync's own files"),
        # Case-insensitive file systems: .GIT/config is .git/config there.
        ("/mnt/data/.GIT/config", "version-control directory (.GIT)"),
        ("/mnt/data/sub/.git/hooks/pre-commit", "version-control directory (.git)"),
        ("/mnt/data/.Hg/hgrc", "version-control directory"),
        ("/mnt/data/\udcff.txt", "not valid UTF-8"),
    ],
)
def test_hostile_paths_are_refused_with_a_reason(path: str, reason: str) -> None:
    refused = local_relpath(path, "assistant", RULES)
    assert isinstance(refused, Refused) and not refused.quiet
    assert reason in refused.reason


def test_outside_the_prefix_can_be_skipped_quietly() -> None:
    refused = local_relpath("/tmp/x", "assistant", PathRules(outside="skip"))
    assert isinstance(refused, Refused) and refused.quiet


def test_the_longest_prefix_wins() -> None:
    rules = PathRules(prefixes=("/mnt/", "/mnt/data/"))
    assert local_relpath("/mnt/data/a.txt", "assistant", rules) == "a.txt"
    assert local_relpath("/mnt/other/a.txt", "assistant", rules) == "other/a.txt"


@given(st.text(max_size=60))
def test_whatever_the_path_the_result_stays_inside_the_root(path: str) -> None:
    mapped = local_relpath("/mnt/data/" + path, "assistant", RULES)
    if isinstance(mapped, Refused):
        return
    parts = mapped.split("/")
    assert not mapped.startswith("/")
    assert all(part not in ("", ".", "..") for part in parts)
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in mapped)


def test_conflict_copy_names() -> None:
    traits = FileSystemTraits()
    name = conflict_copy_name("dir/report.final.md", "container", NOW, set(), traits)
    assert name == "dir/report.final (container conflict 2026-12-23 042640).md"
    assert is_conflict_copy(name)
    taken = {traits.key(name)}
    second = conflict_copy_name("dir/report.final.md", "container", NOW, taken, traits)
    assert second == "dir/report.final (container conflict 2026-12-23 042640 2).md"
    assert is_conflict_copy(second)
    assert conflict_copy_name(".bashrc", "local", NOW, set(), traits).startswith(
        ".bashrc (local conflict "
    )
    assert not is_conflict_copy("notes (conflict).md")
    assert not is_conflict_copy("dir (container conflict 2026-12-23 042640)/x.md")


def test_suffixes_respect_the_file_system() -> None:
    insensitive = FileSystemTraits(case_insensitive=True, normalization_insensitive=True)
    taken = {insensitive.key(n) for n in ("readme.md", "README (2).md")}
    assert suffixed("README.md", taken, insensitive) == "README (3).md"
    assert insensitive.key("Caf\u00e9") == insensitive.key("CAFE\u0301")
    assert FileSystemTraits().key("Caf\u00e9") != FileSystemTraits().key("cafe\u0301")


@given(
    stem=st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), max_size=300
    ),
    extension=st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="/.\x00"), max_size=300
    ),
)
def test_a_conflict_copy_of_any_name_fits_the_file_system(stem: str, extension: str) -> None:
    """Reliability round two, finding 10: a copy's name past 255 bytes failed every pass."""
    traits = FileSystemTraits()
    relpath = f"dir/{stem or 'x'}.{extension}" if extension else f"dir/{stem or 'x'}"
    for side in ("container", "local"):
        copy = conflict_copy_name(relpath, side, NOW, set(), traits)  # type: ignore[arg-type]
        name = copy.rpartition("/")[2]
        assert copy.startswith("dir/") and len(name.encode("utf-8")) <= NAME_MAX_BYTES
        assert is_conflict_copy(copy)
        assert f"({side} conflict 2026-12-23 042640)" in name
    numbered = suffixed(relpath, {traits.key(relpath)}, traits).rpartition("/")[2]
    assert len(numbered.encode("utf-8")) <= NAME_MAX_BYTES and " (2)" in numbered


def test_a_long_name_keeps_its_extension_and_loses_the_end_of_its_stem() -> None:
    long_stem = "é" * 200  # 400 bytes
    copy = conflict_copy_name(f"{long_stem}.csv", "container", NOW, set(), FileSystemTraits())
    assert copy.endswith(" (container conflict 2026-12-23 042640).csv")
    assert copy.startswith("é" * 50) and len(copy.encode()) <= NAME_MAX_BYTES
