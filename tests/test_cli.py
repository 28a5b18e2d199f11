"""The ``cntr-sync`` console script end to end: exit codes, output, brakes and secrets.

Every test runs the installed console script as a subprocess against a real
emulator server on 127.0.0.1, with HOME and the state directory in tmp_path so
nothing touches the real home directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cntr_sync import cli_flags
from cntr_sync._version import __version__
from cntr_sync.config import PairSettings, Settings
from cntr_sync.emulator import EmulatorServer, FaultConfig
from cntr_sync.index import Index
from cntr_sync.names import remote_names

# Every test runs the command as a subprocess (but one, on flags and README, kept here beside them).
pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-key-for-the-cli-0001"
SECRET = "sk-test-SECRET-ABCDEF123456"
NAME = "cli-box"
ERROR_PREFIX = "cntr-sync: error:"

TREE: dict[str, bytes] = {
    "top.txt": b"top level\n",
    "nested/deep/inner.md": b"# inner\n",
    "nested/sibling.bin": bytes(range(256)),
    "with space/file name.txt": b"spaces everywhere\n",
    "ünïcødé/naïve café.txt": "crème brûlée\n".encode(),
    "日本語/ファイル.txt": "こんにちは\n".encode(),
}


def _console_script() -> str:
    beside = Path(sys.executable).with_name("cntr-sync")
    if beside.exists():
        return str(beside)
    found = shutil.which("cntr-sync")
    assert found is not None, "the cntr-sync console script is not installed"
    return found


CNTR_SYNC = _console_script()


def write_tree(root: Path, files: Mapping[str, bytes]) -> None:
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


class Cli:
    """Runs the console script against one emulator server with a private HOME."""

    def __init__(self, server: EmulatorServer, tmp_path: Path) -> None:
        self.server = server
        self.state_dir = tmp_path / "state"
        home = tmp_path / "home"
        home.mkdir()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CNTR_SYNC_", "OPENAI_", "XDG_", "CREDENTIALS_DIRECTORY"))
        }
        self.env = {
            **base,
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": KEY,
            "COLUMNS": "200",
        }

    def run(
        self, *args: str | Path, env: Mapping[str, str] | None = None, key: str | None = KEY
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**self.env, **(env or {})}
        if key is None:
            full_env.pop("OPENAI_API_KEY", None)
        else:
            full_env["OPENAI_API_KEY"] = key
        return subprocess.run(
            [CNTR_SYNC, *map(str, args)],
            env=full_env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
            check=False,
        )

    def sync(
        self, root: Path, *args: str | Path, container: str = NAME, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "sync", root, "--container", container, "--state-dir", self.state_dir, *args, **kwargs
        )

    def sync_json(self, root: Path, *args: str | Path, **kwargs: Any) -> dict[str, Any]:
        proc = self.sync(root, "--json", *args, **kwargs)
        data: dict[str, Any] = json.loads(proc.stdout)
        assert data["exit_code"] == proc.returncode, proc.stderr
        return data

    def listing(self, container: str = NAME) -> Listing:
        """``cntr-sync ls --json``, parsed."""
        proc = self.run("ls", "--container", container, "--json")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        return Listing(data["container_id"], data["files"])


@dataclass(frozen=True)
class Listing:
    container_id: str
    files: list[dict[str, Any]]

    @property
    def names(self) -> list[str]:
        """The names of the container's files, sorted, duplicates kept."""
        return sorted(remote_names(f["path"])[0] for f in self.files)

    def sizes(self, name: str) -> list[int]:
        return [f["bytes"] for f in self.files if remote_names(f["path"])[0] == name]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer("127.0.0.1", 0, control=True, data_dir=tmp_path / "emu") as running:
        yield running


@pytest.fixture
def cli(server: EmulatorServer, tmp_path: Path) -> Cli:
    return Cli(server, tmp_path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "my tree"
    directory.mkdir()
    write_tree(directory, TREE)
    return directory


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """stderr is exactly one line, the product's error line, with no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERROR_PREFIX), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def hold_lock(cli: Cli, root: Path, container: str = NAME) -> Index:
    return Index.open(
        cli.state_dir,
        base_url=cli.server.base_url.rstrip("/"),
        root=root.absolute(),
        container_spec=container,
    )


def index_counts(state_dir: Path) -> dict[str, int]:
    """Rows of entries and intents over every index file in ``state_dir``."""
    totals = {"entries": 0, "intents": 0}
    for db_path in state_dir.glob("*.sqlite"):
        with sqlite3.connect(db_path) as conn:
            for table in totals:
                totals[table] += conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        conn.close()
    return totals


# -- exit 0 ------------------------------------------------------------------------------


def test_sync_small_tree_then_ls_lists_exactly_those_files(cli: Cli, root: Path) -> None:
    data = cli.sync_json(root)
    for key in (
        "container_id",
        "uploaded",
        "deleted",
        "bytes_uploaded",
        "requests",
        "seconds",
        "errors",
        "exit_code",
    ):
        assert key in data
    assert data["exit_code"] == 0
    assert data["uploaded"] == len(TREE)
    assert data["bytes_uploaded"] == sum(len(c) for c in TREE.values())
    assert data["errors"] == []
    assert data["deleted"] == 0
    assert data["requests"] == sum(cli.server.emulator.counts().values())
    assert isinstance(data["seconds"], float | int)

    listing = cli.listing()
    assert listing.container_id == data["container_id"]
    assert listing.names == sorted(TREE)
    for relpath, content in TREE.items():
        assert listing.sizes(relpath) == [len(content)]

    cli.server.emulator.reset_counts()
    again = cli.sync(root)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert cli.server.emulator.counts()["create_file"] == 0


def test_local_and_container_from_the_config_file(cli: Cli, root: Path, tmp_path: Path) -> None:
    config = tmp_path / "one-shot.toml"
    config.write_text(f'local = "{root}"\ncontainer = "{NAME}"\n', encoding="utf-8")
    proc = cli.run("sync", "--config", config, "--state-dir", cli.state_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["uploaded"] == len(TREE)
    assert cli.listing().names == sorted(TREE)
    status = cli.run("status", "--config", config, "--state-dir", cli.state_dir, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["index"]["tracked_files"] == len(TREE)


def test_no_directory_anywhere_is_a_usage_error(cli: Cli) -> None:
    proc = cli.run("sync", "--container", NAME, "--state-dir", cli.state_dir)
    assert proc.returncode == 2
    assert_one_error_line(proc, "no directory given")


def test_version(cli: Cli) -> None:
    proc = cli.run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"cntr-sync {__version__}"


def test_python_dash_m_is_the_same_command(cli: Cli) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cntr_sync", "--version"],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cntr-sync {__version__}"


def test_sync_help_mentions_exit_codes(cli: Cli) -> None:
    proc = cli.run("sync", "--help")
    assert proc.returncode == 0
    flat = " ".join(proc.stdout.split())
    assert "Exit codes:" in flat
    for fragment in ("0 in sync", "1 some actions failed", "2 usage", "3 a safety brake"):
        assert fragment in flat


# -- exit 1 ------------------------------------------------------------------------------


def test_persistent_upload_failure_exits_1_and_rerun_repairs(cli: Cli, root: Path) -> None:
    emulator = cli.server.emulator
    write_tree(root, {"bad/victim.txt": b"refused\n"})
    expected = sorted([*TREE, "bad/victim.txt"])
    # Every upload of the next two passes is refused with a 400, which is never
    # retried: a retry would eat the script and let a file through.
    emulator.fail_next("create_file", 400, count=2 * len(expected))

    proc = cli.sync(root)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "bad/victim.txt" in proc.stderr
    assert "HTTP 400" in proc.stderr

    as_json = cli.sync_json(root)
    assert as_json["exit_code"] == 1
    assert {e["target"] for e in as_json["errors"]} == set(expected)
    assert all(e["action"] == "upload" for e in as_json["errors"])

    emulator.reset_counts()
    fixed = cli.sync_json(root)
    assert fixed["exit_code"] == 0
    assert fixed["uploaded"] == len(expected)
    assert fixed["container_id"] == as_json["container_id"]
    assert emulator.counts()["create_file"] == len(expected)
    assert cli.listing().names == expected  # exact mirror, no duplicate names


def test_ambiguous_upload_failure_exits_1_and_rerun_leaves_no_duplicate(
    cli: Cli, root: Path
) -> None:
    # "ambiguous": the server stores the file, then answers 500. The upload must
    # not be blindly repeated; the next pass adopts what was stored.
    cli.server.emulator.fail_next("create_file", "ambiguous", count=1)
    data = cli.sync_json(root, "--concurrency", "1")
    assert data["exit_code"] == 1
    assert len(data["errors"]) == 1
    failed = data["errors"][0]["target"]
    assert failed in TREE

    cli.server.emulator.reset_counts()
    again = cli.sync_json(root)
    assert again["exit_code"] == 0
    assert cli.server.emulator.counts()["create_file"] == 0
    assert cli.listing().names == sorted(TREE)


def test_replace_refused_with_500_exits_1_then_rerun_replaces_once(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    (root / "top.txt").write_bytes(b"a longer, changed top\n")
    # A 5xx on an upload is "outcome unknown": not retried, reported, exit 1.
    cli.server.emulator.fail_next("create_file", 500, count=1)
    failed = cli.sync(root)
    assert failed.returncode == 1
    assert "upload top.txt" in failed.stderr
    assert "Traceback" not in failed.stderr

    again = cli.sync_json(root)
    assert again["exit_code"] == 0
    assert again["replaced"] == 1
    listing = cli.listing()
    assert listing.names == sorted(TREE)
    assert listing.sizes("top.txt") == [len(b"a longer, changed top\n")]


# -- exit 2 ------------------------------------------------------------------------------


def test_unknown_flag_is_a_usage_error(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, "--no-such-flag")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_error_line(proc, "--no-such-flag", "--help")
    assert cli.server.emulator.counts()["list_containers"] == 0


def test_bad_config_key_names_file_and_key_on_one_line(
    cli: Cli, root: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('containr = "x"\n', encoding="utf-8")
    proc = cli.sync(root, "--config", config)
    assert proc.returncode == 2
    assert_one_error_line(proc, str(config), "containr")

    checked = cli.run("config", "check", config)
    assert checked.returncode == 2
    assert_one_error_line(checked, str(config), "containr")


def test_missing_container_without_config(cli: Cli, root: Path) -> None:
    proc = cli.run("sync", root, "--state-dir", cli.state_dir)
    assert proc.returncode == 2
    assert_one_error_line(proc, "--container")
    assert cli.server.emulator.counts()["create_container"] == 0


def test_wrong_api_key_exits_2_with_one_line(tmp_path: Path, root: Path) -> None:
    with EmulatorServer(
        "127.0.0.1", 0, control=True, data_dir=tmp_path / "emu", api_keys={"sk-right"}
    ) as locked:
        cli = Cli(locked, tmp_path)
        proc = cli.sync(root, key="sk-wrong-key-000000")
        assert proc.returncode == 2
        assert_one_error_line(proc, "401")
        assert "sk-wrong-key-000000" not in proc.stderr + proc.stdout

        as_json = cli.sync(root, "--json", key="sk-wrong-key-000000")
        assert as_json.returncode == 2
        assert json.loads(as_json.stdout)["exit_code"] == 2
        assert_one_error_line(as_json)

        ok = cli.sync(root, key="sk-right")
        assert ok.returncode == 0, ok.stderr
        assert locked.emulator.counts()["create_file"] == len(TREE)


def test_missing_dir_with_nothing_tracked_exits_2(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "never-created"
    proc = cli.sync(missing)
    assert proc.returncode == 2
    assert_one_error_line(proc, str(missing))
    assert cli.server.emulator.counts()["create_file"] == 0


def test_error_json_has_the_error_under_errors_and_exit_code(cli: Cli, tmp_path: Path) -> None:
    proc = cli.sync(tmp_path / "never-created", "--json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 2
    (error,) = data["errors"]
    assert "never-created" in error["message"]
    assert error["target"] == str(tmp_path / "never-created")
    assert data["in_sync"] is False
    assert_one_error_line(proc)


def test_debug_shows_traceback(cli: Cli, tmp_path: Path) -> None:
    proc = cli.sync(tmp_path / "never-created", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(ERROR_PREFIX)


# -- exit 3 ------------------------------------------------------------------------------


def test_mass_deletion_brake_then_force(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "ten"
    ten = {f"f{i:02d}.txt": f"file {i}\n".encode() for i in range(10)}
    write_tree(root, ten)
    assert cli.sync(root).returncode == 0
    for relpath in sorted(ten)[:8]:
        (root / relpath).unlink()

    cli.server.emulator.reset_counts()
    braked = cli.sync(root)
    assert braked.returncode == 3
    assert_one_error_line(braked, "8 of 10", "--force")
    assert cli.server.emulator.counts()["delete_file"] == 0
    assert cli.listing().names == sorted(ten)

    as_json = cli.sync(root, "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["exit_code"] == 3

    forced = cli.sync_json(root, "--force")
    assert forced["exit_code"] == 0
    assert forced["deleted"] == 8
    assert cli.listing().names == sorted(ten)[8:]


def test_missing_root_after_sync_is_a_brake(cli: Cli, root: Path, tmp_path: Path) -> None:
    assert cli.sync(root).returncode == 0
    root.rename(tmp_path / "moved away")

    cli.server.emulator.reset_counts()
    proc = cli.sync(root)
    assert proc.returncode == 3
    assert_one_error_line(proc, "missing")
    counts = cli.server.emulator.counts()
    assert counts["delete_file"] == 0 and counts["create_file"] == 0
    assert cli.listing().names == sorted(TREE)


def test_emptied_root_after_sync_is_a_brake(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    for child in list(root.iterdir()):
        shutil.rmtree(child) if child.is_dir() else child.unlink()

    cli.server.emulator.reset_counts()
    proc = cli.sync(root)
    assert proc.returncode == 3
    assert_one_error_line(proc, "empty")
    assert cli.server.emulator.counts()["delete_file"] == 0
    assert cli.listing().names == sorted(TREE)


def test_lock_held_by_another_process(cli: Cli, root: Path) -> None:
    with hold_lock(cli, root):
        proc = cli.sync(root)
        assert proc.returncode == 3
        assert_one_error_line(proc, "another cntr-sync")
        assert cli.server.emulator.counts()["create_file"] == 0
    # Released: the next run goes through.
    assert cli.sync(root).returncode == 0


# -- dry run, json, status -------------------------------------------------------------


def test_dry_run_changes_nothing_and_prints_the_plan(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    for relpath in TREE:
        assert f"upload  {relpath} (" in proc.stdout
    counts = cli.server.emulator.counts()
    assert counts["create_file"] == 0
    assert counts["delete_file"] == 0
    assert counts["create_container"] == 0
    assert index_counts(cli.state_dir) == {"entries": 0, "intents": 0}

    as_json = cli.sync_json(root, "--dry-run")
    assert as_json["dry_run"] is True
    assert as_json["planned"]["upload"] == len(TREE)
    assert as_json["uploaded"] == 0
    assert cli.server.emulator.counts()["create_file"] == 0

    real = cli.sync_json(root)
    assert real["exit_code"] == 0
    assert real["uploaded"] == len(TREE)
    assert cli.listing().names == sorted(TREE)


def test_status_reports_index_and_would_upload(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    (root / "brand new.txt").write_bytes(b"new\n")

    cli.server.emulator.reset_counts()
    proc = cli.run("status", root, "--container", NAME, "--state-dir", cli.state_dir, "--json")
    assert proc.returncode == 1, proc.stderr  # a sync would change something
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 1 and data["errors"] == []
    assert data["index"]["tracked_files"] == len(TREE)
    assert data["would"]["upload"] == 1
    assert data["would"]["delete"] == 0
    assert data["would"]["bytes"] == len(b"new\n")
    counts = cli.server.emulator.counts()
    assert counts["create_file"] == 0 and counts["delete_file"] == 0

    text = cli.run("status", root, "--container", NAME, "--state-dir", cli.state_dir)
    assert text.returncode == 1, text.stderr
    assert f"files in sync: {len(TREE)}" in text.stdout
    assert "server keeps upload names: yes" in text.stdout
    assert "a sync would: 1 upload (4 B to upload" in text.stdout
    assert "names_kept" not in text.stdout
    assert cli.server.emulator.counts()["create_file"] == 0


def test_status_works_while_a_sync_or_daemon_holds_the_pair(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    with hold_lock(cli, root):
        proc = cli.run("status", root, "--container", NAME, "--state-dir", cli.state_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["index"]["tracked_files"] == len(TREE)


# -- container id file and expiry ------------------------------------------------------


def test_container_id_file_follows_an_expired_container(
    cli: Cli, root: Path, tmp_path: Path
) -> None:
    id_file = tmp_path / "out" / "container-id"
    id_file.parent.mkdir()
    first = cli.sync_json(root, "--container-id-file", id_file)
    assert first["exit_code"] == 0
    first_id = first["container_id"]
    assert id_file.read_text(encoding="utf-8").strip() == first_id

    cli.server.emulator.expire_container(first_id)
    second = cli.sync_json(root, "--container-id-file", id_file)
    assert second["exit_code"] == 0
    second_id = second["container_id"]
    assert second_id != first_id
    assert second["uploaded"] == len(TREE)
    assert id_file.read_text(encoding="utf-8").strip() == second_id
    listing = cli.listing()
    assert listing.container_id == second_id
    assert listing.names == sorted(TREE)
    assert list(id_file.parent.iterdir()) == [id_file]  # no temp file left behind


# -- config check ----------------------------------------------------------------------


def test_config_check_of_the_example_file(cli: Cli) -> None:
    proc = cli.run("config", "check", REPO / "config.example.toml")
    assert proc.returncode == 0, proc.stderr
    assert KEY not in proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["auth_style"] == "bearer"


# -- secrets ---------------------------------------------------------------------------


def _state_bytes(state_dir: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in state_dir.rglob("*") if p.is_file()]


def test_secret_never_printed_nor_stored(tmp_path: Path) -> None:
    with EmulatorServer(
        "127.0.0.1", 0, control=True, data_dir=tmp_path / "emu-secret", api_keys={SECRET}
    ) as guarded:
        cli = Cli(guarded, tmp_path)
        root = tmp_path / "secret tree"
        write_tree(root, TREE)
        outputs: list[subprocess.CompletedProcess[str]] = []

        def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
            proc = cli.run(*args, **kwargs)
            outputs.append(proc)
            return proc

        state = ("--state-dir", cli.state_dir)
        sync = ("sync", root, "--container", NAME, *state)
        # Success, with every verbosity.
        assert run(*sync, "--debug", key=SECRET).returncode == 0
        write_tree(root, {"more.txt": b"more"})
        assert run(*sync, "-v", key=SECRET).returncode == 0
        write_tree(root, {"more2.txt": b"more2"})
        assert run(*sync, "--json", key=SECRET).returncode == 0
        # Failure after the key was accepted, with --debug and --json.
        write_tree(root, {"fails.txt": b"fails"})
        guarded.emulator.fail_next("create_file", 400, count=2)
        assert run(*sync, "--debug", key=SECRET).returncode == 1
        assert run(*sync, "--json", "-v", key=SECRET).returncode == 1
        # Failure where the key is refused (the server has other keys now).
        other_state = ("--state-dir", tmp_path / "state-refused")
        with EmulatorServer(
            "127.0.0.1", 0, data_dir=tmp_path / "emu-refusing", api_keys={"sk-right"}
        ) as refusing:
            refused_env = {"OPENAI_BASE_URL": refusing.base_url}
            sync_refused = ("sync", root, "--container", NAME, *other_state)
            assert run(*sync_refused, "--debug", key=SECRET, env=refused_env).returncode == 2
            assert run(*sync_refused, "--json", key=SECRET, env=refused_env).returncode == 2
        # status (1: fails.txt is still to upload), ls.
        assert run("status", root, "--container", NAME, *state, key=SECRET).returncode == 1
        assert run("ls", "--container", NAME, key=SECRET).returncode == 0

        # The key in a config file, as api_key and in an Authorization extra header.
        config = tmp_path / "secret.toml"
        config.write_text(
            f'api_key = "{SECRET}"\n'
            f'extra_headers = {{Authorization = "Bearer {SECRET}", X-Api-Key = "{SECRET}"}}\n',
            encoding="utf-8",
        )
        checked = run("config", "check", config, key=None)
        assert checked.returncode == 0
        dump = json.loads(checked.stdout)
        assert dump["api_key"] == "[redacted]"
        assert dump["extra_headers"]["Authorization"] != f"Bearer {SECRET}"
        write_tree(root, {"via-config.txt": b"config"})
        with_config = (*sync, "--config", config)
        assert run(*with_config, "--json", "--debug", key=None).returncode == 0

        for proc in outputs:
            assert SECRET not in proc.stdout, proc.args
            assert SECRET not in proc.stderr, proc.args
            assert "SECRET-ABCDEF" not in proc.stdout + proc.stderr, proc.args
        files = _state_bytes(cli.state_dir) + _state_bytes(tmp_path / "state-refused")
        assert any(p.suffix == ".sqlite" for p, _ in files)
        for path, content in files:
            assert SECRET.encode() not in content, path
            assert b"SECRET-ABCDEF" not in content, path
        # SQLite removes the WAL and SHM when the last connection closes; open the
        # index again so they exist, and read them too.
        with hold_lock(cli, root):
            for path, content in _state_bytes(cli.state_dir):
                assert SECRET.encode() not in content, path


# -- pull and both ------------------------------------------------------------------------------


def test_pull_from_the_command_line_with_hostile_names(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "pulled"
    empty.mkdir()
    first = cli.sync_json(empty, "--direction", "pull")
    container_id = first["container_id"]
    emulator = cli.server.emulator
    emulator.add_assistant_file(container_id, "/mnt/data/results/summary.md", b"# done\n")
    hostile = ["/mnt/data/../../etc/cron.d/x", "/mnt/data/a\x00b", "/mnt/data/" + "n" * 300]
    for path in hostile:
        emulator.add_assistant_file(container_id, path, b"payload")

    planned = cli.sync(empty, "--direction", "pull", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "download results/summary.md (7 B, new)" in planned.stdout
    assert not (empty / "results").exists()

    status = cli.run(
        "status",
        empty,
        "--container",
        NAME,
        "--state-dir",
        cli.state_dir,
        "--direction",
        "pull",
        "--json",
    )
    assert json.loads(status.stdout)["would"]["download"] == 1

    proc = cli.sync(empty, "--direction", "pull", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["downloaded"], data["uploaded"], data["bytes_downloaded"]) == (1, 0, 7)
    assert len(data["warnings"]) == len(hostile)
    assert (empty / "results" / "summary.md").read_bytes() == b"# done\n"
    assert "Traceback" not in proc.stderr
    text = cli.sync(empty, "--direction", "pull")
    warnings = [line for line in text.stderr.splitlines() if "not pulled" in line]
    assert len(warnings) == len(hostile), text.stderr
    assert all(line.startswith("cntr-sync: warning: ") for line in warnings)
    assert not (tmp_path / "etc").exists()


def test_a_bad_direction_is_a_usage_error(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, "--direction", "sideways")
    assert proc.returncode == 2
    assert_one_error_line(proc, "flag --direction", "'push', 'pull' or 'both'")


# -- habits from rclone and aws s3 sync -------------------------------------------------------


def test_verbose_lists_each_transfer_and_quiet_prints_nothing(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, "-v")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "uploaded top.txt (10 B)" in lines
    assert "uploaded nested/sibling.bin (256 B)" in lines
    assert lines[-1].startswith("in sync: 6 files -> ")  # the summary, last, without a terminal
    (root / "top.txt").write_bytes(b"changed top\n")
    (root / "nested" / "deep" / "inner.md").unlink()
    quiet = cli.sync(root, "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    (root / "top.txt").write_bytes(b"changed again\n")
    again = cli.sync(root, "-v")
    assert "replaced top.txt (14 B)" in again.stderr.splitlines()


def test_the_summary_is_a_readable_line_on_stderr_without_a_terminal(cli: Cli, root: Path) -> None:
    proc = cli.sync(root)
    assert proc.returncode == 0
    # A new container is announced at the default level (issue 24), then the summary.
    notice, line = proc.stderr.splitlines()
    assert notice.startswith(f'cntr-sync: new container "{NAME}" created container_id=cntr_')
    assert line.startswith("in sync: 6 files -> cntr_") and "6 uploaded" in line
    (again,) = cli.sync(root).stderr.splitlines()
    assert again.startswith("in sync: 6 files -> cntr_") and "nothing to do" in again


def test_log_format_json_gives_json_lines(cli: Cli, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "a.txt").write_text("a")
    proc = cli.run(
        "sync",
        fresh,
        "--container",
        "json-box",
        "--state-dir",
        cli.state_dir,
        "-v",
        "--log-format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    created = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert {"event": "creating container", "name": "json-box"}.items() <= created[0].items()
    assert created[0]["level"] == "info"


def test_sync_logs_console_lines_by_default_even_without_a_terminal(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, "-v")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\[info *\] creating container +name=cli-box", proc.stderr)
    assert not [line for line in proc.stderr.splitlines() if line.startswith("{")]


def test_exclude_and_include(cli: Cli, root: Path) -> None:
    (root / "build").mkdir()
    (root / "build" / "out.o").write_bytes(b"obj")
    (root / "build" / "keep.o").write_bytes(b"keep")
    (root / "nested" / ".cntrignore").write_text("*.bin\n")
    data = cli.sync_json(root, "--exclude", "build/", "--exclude", "*.md", "--include", "*.md")
    listing = cli.listing()
    assert "build/out.o" not in listing.names
    assert "nested/deep/inner.md" in listing.names  # --include wins over --exclude
    assert "nested/sibling.bin" not in listing.names  # a nested .cntrignore
    assert data["uploaded"] == len(listing.names)


def test_dry_run_json_lists_every_action(cli: Cli, root: Path) -> None:
    data = cli.sync_json(root, "--dry-run")
    actions = {(a["action"], a["path"]): a for a in data["actions"]}
    assert set(actions) == {("upload", relpath) for relpath in TREE}
    assert actions[("upload", "nested/sibling.bin")]["bytes"] == 256
    assert actions[("upload", "top.txt")]["reason"] == "new"
    cli.sync(root)
    (root / "top.txt").unlink()
    later = cli.sync_json(root, "--dry-run")
    assert later["actions"] == [
        {"action": "delete", "path": "top.txt", "bytes": None, "reason": "removed"}
    ]


def test_max_delete_reads_percent_and_count(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    for relpath in list(TREE)[:3]:
        (root / relpath).unlink()
    by_count = cli.sync(root, "--max-delete", "2")
    assert by_count.returncode == 3
    assert_one_error_line(by_count, "would delete 3 files (> max_delete 2)")
    by_percent = cli.sync(root, "--max-delete", "40%")
    assert by_percent.returncode == 3
    assert_one_error_line(by_percent, "3 of 6 files (50% > max_delete 40%)")
    assert cli.sync(root, "--max-delete", "3").returncode == 0
    bad = cli.sync(root, "--max-delete", "lots")
    assert bad.returncode == 2
    assert_one_error_line(bad, "flag --max-delete: write a percentage such as '50%'")


def test_an_unreachable_api_has_its_own_line_and_exit_code(cli: Cli, root: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    started = time.monotonic()
    proc = cli.sync(
        root,
        env={"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "CNTR_SYNC_MAX_RETRIES": "1"},
    )
    assert time.monotonic() - started < 30
    assert proc.returncode == 4, proc.stderr
    assert_one_error_line(proc, f"cannot reach the API at http://127.0.0.1:{port}/v1")
    assert KEY not in proc.stderr


def test_interrupt_exits_130(cli: Cli, root: Path) -> None:
    cli.server.emulator.set_faults(FaultConfig(latency_ms=3000))
    proc = subprocess.Popen(
        [CNTR_SYNC, "sync", str(root), "--container", NAME, "--state-dir", str(cli.state_dir)],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background by a non-interactive shell inherits an
        # ignored SIGINT, and Python then installs no KeyboardInterrupt handler:
        # give the child the default disposition, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    deadline = time.monotonic() + 20
    while not sum(cli.server.emulator.counts().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    cli.server.emulator.set_faults(FaultConfig())
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "cntr-sync: error: interrupted"


def test_emulator_help_documents_its_knobs(cli: Cli) -> None:
    proc = cli.run("emulator", "--help")
    assert proc.returncode == 0
    flat = " ".join(proc.stdout.split())
    for knob in (
        "--latency-ms",
        "--error-rate",
        "--path-style",
        "--cursor-style",
        "--drop-filenames",
        "--control",
        "the model wrote",
    ):
        assert knob in flat, knob


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.e2e
@pytest.mark.parametrize("flag", ["-q", "-v"])
def test_emulator_quiet_prints_nothing_and_verbose_a_line_per_request(
    flag: str, tmp_path: Path
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [CNTR_SYNC, "emulator", flag, "--port", str(port), "--data-dir", str(tmp_path / "emu")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/containers", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the emulator did not start within 30 s"
                time.sleep(0.05)
        assert answer.status_code == 200  # any key, or none, is taken
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    if flag == "-q":
        assert (out, err) == ("", "")
    else:
        assert "listening on" in out
        assert re.search(r'"GET /v1/containers HTTP/1.1" 200', err), err


def test_emulator_choices_are_listed_and_checked(cli: Cli) -> None:
    assert "[hashed|plain]" in cli.run("emulator", "--help").stdout
    bad = cli.run("emulator", "--path-style", "weird")
    assert bad.returncode == 2
    assert "weird" in bad.stderr and "hashed" in bad.stderr


def test_ls_escapes_names_from_the_model_and_an_unknown_container_is_exit_2(
    cli: Cli, root: Path
) -> None:
    data = cli.sync_json(root)
    cli.server.emulator.add_assistant_file(
        data["container_id"], "/mnt/data/evil\x1b[2J\nforged\trow.txt", b"x"
    )
    proc = cli.run("ls", "--container", NAME)
    assert proc.returncode == 0
    evil = [line for line in proc.stdout.splitlines() if "evil" in line]
    assert evil == [
        f"assistant\t1\t/mnt/data/evil\\x1b[2J\\x0aforged\\x09row.txt\t{evil[0].split()[-1]}"
    ]
    assert "\x1b" not in proc.stdout
    missing = cli.run("ls", "--container", "no-such-box")
    assert missing.returncode == 2
    assert_one_error_line(missing, "no running container with id or name 'no-such-box'")


def test_a_key_that_cannot_be_sent_is_exit_2_without_the_key(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, key="sk-bad-ké-key\n")
    assert proc.returncode == 2
    assert_one_error_line(proc, "the API key contains characters that cannot be sent")
    assert "ké" not in proc.stderr


# -- every setting that makes sense on the command line has a flag ---------------------------

#: Settings with no flag, and why (cli_flags' docstring says the same).
NOT_FLAGS = {
    "api_key": "a secret in argv is visible in ps",
    "ignore": "--exclude and --include add to it",
    "pairs": "a config file's job",
    "log_format": "its own --log-format flag",
    "container": "its own --container flag",
    "local": "the DIRECTORY argument",
}


def test_every_setting_has_a_flag_named_after_it_and_the_docs_list_it() -> None:
    settings_fields = set(Settings.model_fields)
    pair_fields = set(PairSettings.model_fields)
    assert settings_fields - set(cli_flags.FLAGS) == set(NOT_FLAGS)
    groups = [
        *cli_flags.CONNECTION,
        *cli_flags.SYNC,
        *cli_flags.DAEMON,
        *cli_flags.DAEMON_PAIR,
    ]
    assert sorted(groups) == sorted(cli_flags.FLAGS)  # each flag in exactly one group
    assert set(cli_flags.DAEMON_PAIR) <= pair_fields
    # README names the daemon's flags; every flag with its values is in docs/commands.md.
    documented = "".join(
        (REPO / page).read_text(encoding="utf-8") for page in ("README.md", "docs/commands.md")
    )
    for name in cli_flags.FLAGS:
        flag = "--" + name.replace("_", "-")
        assert name in settings_fields | pair_fields
        assert f"`{flag}" in documented, f"neither README nor docs/commands.md mentions {flag}"


@pytest.mark.parametrize(
    ("command", "groups"),
    [
        ("sync", (cli_flags.CONNECTION, cli_flags.SYNC)),
        ("status", (cli_flags.CONNECTION, cli_flags.SYNC)),
        ("ls", (cli_flags.CONNECTION,)),
        (
            "run",
            (cli_flags.CONNECTION, cli_flags.SYNC, cli_flags.DAEMON, cli_flags.DAEMON_PAIR),
        ),
    ],
)
def test_help_shows_the_flags_of_each_command(
    cli: Cli, command: str, groups: tuple[tuple[str, ...], ...]
) -> None:
    proc = cli.run(command, "--help")
    assert proc.returncode == 0, proc.stderr
    for name in (name for group in groups for name in group):
        assert "--" + name.replace("_", "-") in proc.stdout, (command, name)
    assert "list[str]" not in proc.stdout  # metavars say what to type


def test_connection_flags_reach_every_request(cli: Cli, root: Path) -> None:
    proc = cli.sync(
        root,
        "--organization",
        "org-flag",
        "--project",
        "proj-flag",
        "--extra-headers",
        "X-Trace=abc=1",
        "--extra-query",
        "provider=openai",
        "--max-retries",
        "0",
        "--connect-timeout",
        "5",
        "--request-deadline",
        "120",
    )
    assert proc.returncode == 0, proc.stderr
    seen = cli.server.emulator.requests_log()
    assert seen
    for request in seen:
        assert request.headers.get("openai-organization") == "org-flag"
        assert request.headers.get("openai-project") == "proj-flag"
        assert request.headers.get("x-trace") == "abc=1"  # split at the first '='
        assert ("provider", "openai") in request.query


def test_new_container_flags_shape_the_container(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, "--expires-after-minutes", "7", "--memory-limit", "4g", "--json")
    assert proc.returncode == 0, proc.stderr
    container_id = json.loads(proc.stdout)["container_id"]
    answer = httpx.get(
        f"{cli.server.base_url}/containers/{container_id}",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    made = answer.json()
    assert (made["expires_after"]["minutes"], made["memory_limit"]) == (7, "4g")


def test_layout_and_delete_unknown_flags(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    box = cli.listing().container_id
    emulator = cli.server.emulator
    emulator.add_assistant_file(box, "/mnt/data/model.txt", b"from the model")
    emulator.add_assistant_file(box, "/mnt/user/outside.txt", b"outside")
    kept = cli.sync(root, "--direction", "pull", "--outside-prefix", "skip")
    assert kept.returncode == 0, kept.stderr
    assert (root / "model.txt").read_bytes() == b"from the model"
    assert not (root / "_container").exists()
    moved = cli.sync(root, "--direction", "pull", "--outside-subdir", "from-box")
    assert moved.returncode == 0, moved.stderr
    assert (root / "from-box" / "mnt" / "user" / "outside.txt").read_bytes() == b"outside"
    (root / "model.txt").unlink()
    (root / "from-box" / "mnt" / "user" / "outside.txt").unlink()
    emulator.add_assistant_file(box, "/mnt/data/stray.txt", b"never pulled")
    before = cli.listing().names
    assert "stray.txt" in before
    pushed = cli.sync(root, "--delete-unknown", "--max-delete", "100%")
    assert pushed.returncode == 0, pushed.stderr
    assert "stray.txt" not in cli.listing().names


def test_bad_flag_values_are_one_line_naming_the_flag(cli: Cli, root: Path, tmp_path: Path) -> None:
    cases = [
        (("--extra-headers", "no-equals-sign"), "flag --extra-headers: 'no-equals-sign' is not"),
        (("--memory-limit", "3g"), "flag --memory-limit"),
        (("--ca-bundle", tmp_path / "missing.pem"), "flag --ca-bundle: no such file"),
        (("--expires-after-minutes", "0"), "flag --expires-after-minutes"),
        (("--outside-prefix", "elsewhere"), "flag --outside-prefix"),
    ]
    for args, fragment in cases:
        proc = cli.sync(root, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert_one_error_line(proc, fragment)
    config = tmp_path / "pairs.toml"
    config.write_text('[[pairs]]\nname = "a"\nlocal = "."\ncontainer = "c"\n')
    per_pair = cli.run("run", "--config", config, "--quiet-period", "2")
    assert per_pair.returncode == 2
    assert_one_error_line(per_pair, "flag --quiet-period: set per pair")
