"""Outputs a script can trust, end to end (issue 22, item 4; conflicts by name).

``in_sync`` false while a dry run plans work; ``status`` exits 0 or 1 as
``git diff --exit-code``; one ``--json`` shape on success and on every error; a
dry run's summary line; a brake that names the files; every conflict named,
with its copy; the summary's file count taken after the pass. The console
script runs as a subprocess against a real emulator on 127.0.0.1 (the ``Cli``
of ``test_cli``); the pieces they print are tested in-process in ``test_cli_output``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

import test_cli
from cntr_sync.remote_paths import is_conflict_copy
from test_cli import NAME, TREE, Cli, assert_one_error_line, write_tree

pytestmark = pytest.mark.e2e

# test_cli's fixtures: an emulator with its control surface, a Cli on it, a written tree.
server, cli, root = test_cli.server, test_cli.cli, test_cli.root


def status(cli: Cli, root: Path, *args: str, **kwargs: Any) -> Any:
    return cli.run(
        "status", root, "--container", NAME, "--state-dir", cli.state_dir, *args, **kwargs
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]  # nothing listens here once closed
    return port


# -- in_sync ---------------------------------------------------------------------------


def test_a_dry_run_with_planned_actions_is_not_in_sync(cli: Cli, root: Path) -> None:
    planned = cli.sync_json(root, "--dry-run")
    assert planned["exit_code"] == 0  # a dry run that computed its plan succeeded
    assert planned["planned"]["upload"] == len(TREE)
    assert planned["in_sync"] is False
    assert cli.sync_json(root)["in_sync"] is True  # carried out: nothing left undone
    again = cli.sync_json(root, "--dry-run")
    assert (again["in_sync"], again["actions"]) == (True, [])


# -- status exit codes -------------------------------------------------------------------


def test_status_exits_0_when_a_sync_would_change_nothing_and_1_when_it_would(
    cli: Cli, root: Path
) -> None:
    assert cli.sync(root).returncode == 0
    same = status(cli, root)
    assert same.returncode == 0, same.stderr
    assert "a sync would: do nothing" in same.stdout

    (root / "top.txt").write_bytes(b"edited\n")
    changed = status(cli, root)
    assert changed.returncode == 1, changed.stderr
    assert "a sync would: 1 replace" in changed.stdout
    as_json = status(cli, root, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["exit_code"] == 1

    assert cli.sync(root).returncode == 0
    assert status(cli, root).returncode == 0


def test_status_keeps_the_usual_codes_for_other_failures(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    for child in list(root.rglob("*")):
        if child.is_file():
            child.unlink()
    braked = status(cli, root)
    assert braked.returncode == 3
    assert_one_error_line(braked, "empty")
    port = closed_port()
    unreachable = status(
        cli,
        root,
        env={"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "CNTR_SYNC_MAX_RETRIES": "1"},
    )
    assert unreachable.returncode == 4
    bad = status(cli, root, "--max-delete", "lots")
    assert bad.returncode == 2


def test_status_help_documents_its_exit_codes(cli: Cli) -> None:
    proc = cli.run("status", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "0 a sync would change nothing; 1 a sync would change something" in text


# -- one --json shape ------------------------------------------------------------------


def test_sync_json_has_one_shape_on_success_brake_unreachable_and_bad_settings(
    cli: Cli, tmp_path: Path
) -> None:
    tree = tmp_path / "ten"
    write_tree(tree, {f"f{i:02d}.txt": b"x" for i in range(10)})
    success = cli.sync_json(tree)
    for path in sorted(tree.iterdir())[:8]:
        path.unlink()
    brake = cli.sync_json(tree)
    port = closed_port()
    unreachable = cli.sync_json(
        tree,
        env={"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "CNTR_SYNC_MAX_RETRIES": "1"},
    )
    bad_settings = cli.sync_json(tree, "--max-delete", "lots")
    dry_brake = cli.sync_json(tree, "--dry-run")

    assert [d["exit_code"] for d in (success, brake, unreachable, bad_settings, dry_brake)] == [
        0,
        3,
        4,
        2,
        3,
    ]
    keys = set(success)
    for document in (brake, unreachable, bad_settings, dry_brake):
        assert set(document) == keys
        assert set(document["planned"]) == set(success["planned"])
        assert document["in_sync"] is False
        assert document["uploaded"] == 0 and document["actions"] == []
        (error,) = document["errors"]
        assert error["message"] and error["action"] == "sync"
    assert success["errors"] == []
    assert {"exit_code", "errors", "uploaded", "deleted", "downloaded", "conflicts"} <= keys
    assert "8 of 10" in brake["errors"][0]["message"]
    assert f"127.0.0.1:{port}" in unreachable["errors"][0]["message"]
    assert "--max-delete" in bad_settings["errors"][0]["message"]
    assert dry_brake["dry_run"] is True and brake["dry_run"] is False


def test_status_and_ls_json_have_one_shape_too(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    good = json.loads(status(cli, root, "--json").stdout)
    bad = status(cli, root, "--json", "--max-delete", "lots")
    assert bad.returncode == 2
    failed = json.loads(bad.stdout)
    assert list(failed) == list(good)
    assert good["errors"] == [] and failed["errors"][0]["message"]
    assert failed["index"] is None and failed["would"] is None

    listed = cli.run("ls", "--container", NAME, "--json")
    missing = cli.run("ls", "--container", "no-such-box", "--json")
    assert (listed.returncode, missing.returncode) == (0, 2)
    assert list(json.loads(listed.stdout)) == list(json.loads(missing.stdout))
    assert json.loads(missing.stdout)["errors"][0]["message"]


# -- the dry run's summary line ----------------------------------------------------------


def test_a_plain_dry_run_ends_with_a_summary_line_saying_what_a_sync_would_do(
    cli: Cli, root: Path
) -> None:
    first = cli.sync(root, "--dry-run")
    assert first.returncode == 0, first.stderr
    size = sum(len(content) for content in TREE.values())
    assert first.stderr.splitlines()[-1] == (
        f"dry run, nothing changed: a sync would create a container, upload 6 "
        f"({size} B to send, 0 B to receive)"
    )
    assert "upload  top.txt (10 B, new)" in first.stdout  # the plan as before

    assert cli.sync(root).returncode == 0
    (root / "top.txt").write_bytes(b"edited\n")
    (root / "nested" / "sibling.bin").unlink()
    later = cli.sync(root, "--dry-run")
    assert later.stderr.splitlines()[-1] == (
        "dry run, nothing changed: a sync would replace 1, delete 1 (7 B to send, 0 B to receive)"
    )
    assert cli.sync(root).returncode == 0
    nothing = cli.sync(root, "--dry-run")
    assert nothing.stderr.splitlines() == ["dry run, nothing changed: a sync would do nothing"]
    assert cli.sync(root, "--dry-run", "-q").stderr == ""


# -- a brake names the files -------------------------------------------------------------


def test_a_brake_names_twenty_files_in_its_line_and_all_of_them_in_json(
    cli: Cli, tmp_path: Path
) -> None:
    tree = tmp_path / "thirty"
    names = [f"f{i:02d}.txt" for i in range(30)]
    write_tree(tree, dict.fromkeys(names, b"x"))
    assert cli.sync(tree).returncode == 0
    for name in names[:25]:
        (tree / name).unlink()

    braked = cli.sync(tree)
    assert braked.returncode == 3
    line = assert_one_error_line(braked, "25 of 30", "--force")
    named = ", ".join(names[:20])
    assert line.endswith(f"; it would delete {named} and 5 more"), line
    assert names[20] not in line

    as_json = cli.sync_json(tree)
    (error,) = as_json["errors"]
    assert error["would_delete"] == names[:25]
    assert line == f"cntr-sync: error: {error['message']}"
    assert cli.listing().names == sorted(names)  # nothing was deleted


def test_a_brake_with_few_files_names_them_all(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    for relpath in ("top.txt", "nested/deep/inner.md", "with space/file name.txt"):
        (root / relpath).unlink()
    braked = cli.sync(root, "--max-delete", "2")
    line = assert_one_error_line(braked, "would delete 3 files (> max_delete 2)")
    assert line.endswith(
        "; it would delete nested/deep/inner.md, top.txt, with space/file name.txt"
    ), line


# -- conflicts by name -------------------------------------------------------------------


def conflict_both_sides(cli: Cli, tmp_path: Path, *flags: str) -> tuple[Path, Any]:
    """notes.txt synced both ways, then changed on both sides; the pass that follows."""
    tree = tmp_path / "both"
    tree.mkdir()
    first = cli.sync_json(tree, "--direction", "both", *flags)
    emulator = cli.server.emulator
    made = emulator.add_assistant_file(first["container_id"], "/mnt/data/notes.txt", b"base")
    assert cli.sync_json(tree, "--direction", "both", *flags)["downloaded"] == 1
    (tree / "notes.txt").write_bytes(b"local edit")
    emulator.rewrite_file(first["container_id"], made["id"], b"remote edit!")
    return tree, cli.sync(tree, "--direction", "both", *flags)


def test_keep_both_conflict_is_named_with_its_copy(cli: Cli, tmp_path: Path) -> None:
    tree, proc = conflict_both_sides(cli, tmp_path)
    assert proc.returncode == 0, proc.stderr
    (copy,) = [p.name for p in tree.iterdir() if is_conflict_copy(p.name)]
    lines = proc.stderr.splitlines()
    assert lines[-2].startswith("in sync: 2 files -> ")  # the copy counts: 2 files here now
    assert "1 conflict" in lines[-2]
    assert lines[-1] == f"conflict: notes.txt: the container's version is kept as {copy}"


def test_remote_wins_conflict_is_named_and_in_json(cli: Cli, tmp_path: Path) -> None:
    tree, proc = conflict_both_sides(cli, tmp_path, "--conflict", "remote-wins", "--json")
    data = json.loads(proc.stdout)
    (copy,) = [p.name for p in tree.iterdir() if is_conflict_copy(p.name)]
    assert copy.startswith("notes (local conflict ")
    assert data["conflicts"] == 1
    assert data["conflict_copies"] == [{"path": "notes.txt", "copy": copy, "holds": "local"}]
    assert data["local_files"] == 2
    assert (tree / copy).read_bytes() == b"local edit"


# -- the file count after the pass -------------------------------------------------------


def test_the_summary_counts_the_files_in_sync_after_a_pull(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "pulled"
    empty.mkdir()
    first = cli.sync_json(empty, "--direction", "pull")
    cli.server.emulator.add_assistant_file(first["container_id"], "/mnt/data/out.csv", b"1,2\n")
    proc = cli.sync(empty, "--direction", "pull")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("in sync: 1 file -> "), line
    assert "1 downloaded" in line
    assert cli.sync_json(empty, "--direction", "pull")["local_files"] == 1


def test_status_lists_the_conflict_copies_still_in_the_tree(cli: Cli, tmp_path: Path) -> None:
    """Issue 22, item 3: conflicts that pile up unseen. ``status`` (text and ``--json``)
    lists each copy this tool made while it is in the tree; a removed copy drops out."""
    tree, proc = conflict_both_sides(cli, tmp_path)
    assert proc.returncode == 0, proc.stderr
    (copy,) = [p.name for p in tree.iterdir() if is_conflict_copy(p.name)]
    args = ("--direction", "both")
    listed = json.loads(status(cli, tree, "--json", *args).stdout)
    assert listed["index"]["conflict_copies"] == [
        {"path": "notes.txt", "copy": copy, "holds": "container"}
    ]
    text = status(cli, tree, *args).stdout
    assert f"  {copy} (the container's version of notes.txt)" in text
    (tree / copy).unlink()
    cli.sync(tree, *args)
    assert json.loads(status(cli, tree, "--json", *args).stdout)["index"]["conflict_copies"] == []
