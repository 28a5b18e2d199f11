"""``log``, ``backups`` and ``restore`` end to end (issue 22, items 1 and 2).

A model's mistake undone: a two-way pair, the model rewrites a file that was
unchanged here, the pass brings the rewrite home and keeps the old bytes;
``backups`` lists them, ``restore`` puts them back, the next sync pushes them, and
``log`` tells the whole story. The console script runs as a subprocess against
a real emulator on 127.0.0.1 (``test_cli``'s ``Cli``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import test_cli
from test_cli import NAME, Cli, assert_one_error_line

pytestmark = pytest.mark.e2e

# test_cli's fixtures: an emulator with its control surface, and a Cli on it.
server, cli = test_cli.server, test_cli.cli


def run(cli: Cli, name: str, tree: Path, *args: str | Path) -> Any:
    return cli.run(name, tree, *args, "--container", NAME, "--state-dir", cli.state_dir)


def test_a_model_mistake_is_undone_with_restore(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "work"
    (tree / "notes").mkdir(parents=True)
    (tree / "notes" / "plan.md").write_bytes(b"my careful plan\n")
    first = cli.sync_json(tree, "--direction", "both")
    (plan_file,) = [f for f in cli.listing().files if f["path"].endswith("plan.md")]
    cli.server.emulator.rewrite_file(
        first["container_id"], plan_file["id"], b"the model's mistake\n"
    )
    pulled = cli.sync_json(tree, "--direction", "both")
    assert pulled["downloaded"] == 1
    assert (tree / "notes" / "plan.md").read_bytes() == b"the model's mistake\n"

    listed = run(cli, "backups", tree, "--json")
    assert listed.returncode == 0, listed.stderr
    (version,) = json.loads(listed.stdout)["versions"]
    assert version["path"] == "notes/plan.md" and version["bytes"] == len(b"my careful plan\n")
    assert Path(version["file"]).read_bytes() == b"my careful plan\n"  # cp would do too

    restored = run(cli, "restore", tree, "notes/plan.md")
    assert restored.returncode == 0, restored.stderr
    assert "restored notes/plan.md as kept at " in restored.stderr
    assert (tree / "notes" / "plan.md").read_bytes() == b"my careful plan\n"
    pushed = cli.sync_json(tree, "--direction", "both")
    assert pushed["replaced"] == 1
    assert (
        cli.server.emulator.blob_path(
            first["container_id"], cli.listing().files[0]["id"]
        ).read_bytes()
        == b"my careful plan\n"
    )

    log = run(cli, "log", tree, "--json")
    assert log.returncode == 0, log.stderr
    rows = [json.loads(line) for line in log.stdout.splitlines()]
    assert all({"time", "action", "path"} <= set(row) for row in rows)
    assert [(row["action"], row["path"]) for row in rows] == [
        ("upload", "notes/plan.md"),
        ("download", "notes/plan.md"),
        ("backup", "notes/plan.md"),
        ("replace", "notes/plan.md"),
    ]
    text = run(cli, "log", tree, "--since", "1h").stdout.splitlines()
    assert len(text) == 4 and "download notes/plan.md" in text[1]
    assert run(cli, "log", tree, "--since", "2999-01-01").stdout == ""


def test_restore_at_a_time_picks_the_version_kept_then(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "work"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"v1")
    first = cli.sync_json(tree, "--direction", "both")
    emulator = cli.server.emulator
    for content in (b"v2 from the model", b"v3 from the model, longer"):
        (remote,) = cli.listing().files
        emulator.rewrite_file(first["container_id"], remote["id"], content)
        cli.sync_json(tree, "--direction", "both")
    versions = json.loads(run(cli, "backups", tree, "--json").stdout)["versions"]
    assert [v["bytes"] for v in versions] == [2, len(b"v2 from the model")]
    older = run(cli, "restore", tree, "a.txt", "--at", versions[0]["kept"])
    assert older.returncode == 0, older.stderr
    assert (tree / "a.txt").read_bytes() == b"v1"


def test_restore_refuses_with_one_line(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "work"
    tree.mkdir()
    missing = run(cli, "restore", tree, "never.txt")
    assert missing.returncode == 2
    assert_one_error_line(missing, "no version of never.txt in ")
    outside = run(cli, "restore", tree, "../etc/passwd", "--json")
    assert outside.returncode == 2
    document = json.loads(outside.stdout)
    assert document["restored"] is None and document["exit_code"] == 2
    assert "not a file inside DIRECTORY" in document["errors"][0]["message"]
    bad_time = run(cli, "log", tree, "--since", "last tuesday")
    assert bad_time.returncode == 2
    assert_one_error_line(bad_time, "flag --since: 'last tuesday' is not a time")


def test_restore_over_something_that_is_not_a_file_is_one_line_and_nothing_moves(
    cli: Cli, tmp_path: Path
) -> None:
    """A directory (or a symlink) now where the file was: one line naming it, exit 2,
    and both the tree and the kept version as they were."""
    tree = tmp_path / "work"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"v1")
    first = cli.sync_json(tree, "--direction", "both")
    (remote,) = cli.listing().files
    cli.server.emulator.rewrite_file(first["container_id"], remote["id"], b"v2 from the model")
    cli.sync_json(tree, "--direction", "both")
    (tree / "a.txt").unlink()
    (tree / "a.txt").mkdir()
    (tree / "a.txt" / "inside").write_bytes(b"mine")
    refused = run(cli, "restore", tree, "a.txt", "--at", "2d")
    assert refused.returncode == 2
    assert_one_error_line(refused, "no version of a.txt kept at or before 2d")
    refused = run(cli, "restore", tree, "a.txt")
    assert refused.returncode == 2
    assert_one_error_line(refused, "cannot restore a.txt: 'a.txt' is a symlink, directory")
    assert (tree / "a.txt" / "inside").read_bytes() == b"mine"
    versions = json.loads(run(cli, "backups", tree, "--json").stdout)["versions"]
    assert [v["bytes"] for v in versions] == [2]
