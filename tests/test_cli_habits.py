"""Habits of the tools users already know (issue 24, items 1-3), end to end.

``-h`` and ``-n``; shell completion for bash, zsh and fish (each script generated,
and the completions it asks for named); choices and groups in ``--help``; ``-q``
and ``-v`` on every command; ``containers``; ``ls DIRECTORY``; ``--no-create``;
``config`` and where settings are found; stats lines during a long pass off a
terminal; retries at ``-v``; warnings in the CLI's own style. The console script
runs as a subprocess against a real emulator on 127.0.0.1 (``test_cli``'s ``Cli``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import test_cli
from cntr_sync.emulator import FaultConfig
from test_cli import CNTR_SYNC, NAME, TREE, Cli, assert_one_error_line

pytestmark = pytest.mark.e2e

# test_cli's fixtures: an emulator with its control surface, a Cli on it, a tree.
server, cli, root = test_cli.server, test_cli.cli, test_cli.root

COMMANDS = ("sync", "ls", "containers", "status", "log", "backups", "restore", "run", "config")
# Every command that has something to say takes -q and -v (emulator, completion: not yet).
QUIET_AND_VERBOSE = (*COMMANDS, "config check")


# -- -h, -n, --help ----------------------------------------------------------------------------


def test_dash_h_is_help_everywhere(cli: Cli) -> None:
    for args in ((), *((name,) for name in COMMANDS), ("config", "check"), ("completion",)):
        proc = cli.run(*args, "-h")
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stdout.startswith("Usage: cntr-sync"), args


def test_dash_n_is_a_dry_run(cli: Cli, root: Path) -> None:
    proc = cli.sync(root, "-n")
    assert proc.returncode == 0, proc.stderr
    assert "dry run, nothing changed: a sync would create a container, upload 6" in proc.stderr
    assert cli.server.emulator.counts()["create_container"] == 0


def test_sync_help_groups_its_options_and_shows_choices(cli: Cli) -> None:
    text = cli.run("sync", "--help").stdout
    headings = [line for line in text.splitlines() if line.endswith(":") and line[0] != " "]
    assert headings == [
        "Arguments:",
        "Options:",
        "What to sync:",
        "Safety:",
        "Connection:",
        "Output:",
    ]
    section = {heading: text.split(heading, 1)[1].split("\n\n", 1)[0] for heading in headings[1:]}
    assert "--container" in section["What to sync:"]
    assert "--direction [push|pull|both]" in section["What to sync:"]
    assert "-n, --dry-run" in section["Safety:"] and "--max-delete" in section["Safety:"]
    assert "--create / --no-create" in section["Safety:"]
    assert "--auth-style [bearer|api-key|x-api-key|x-bf-vk|basic]" in section["Connection:"]
    assert "--stats INTERVAL" in section["Output:"] and "-v, --verbose" in section["Output:"]
    assert "--log-format [auto|console|json]" in section["Output:"]
    assert "[default: 0]" not in text
    daemon = cli.run("run", "--help").stdout
    assert "\nDaemon:\n" in daemon and "--watch [auto|native|poll|off]" in daemon


def test_every_command_takes_quiet_and_verbose(cli: Cli) -> None:
    for name in QUIET_AND_VERBOSE:
        text = cli.run(*name.split(), "--help").stdout
        assert "-q, --quiet" in text and "-v, --verbose" in text, name


def test_quiet_status_says_nothing_but_its_exit_code(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    (root / "new.txt").write_text("new")
    args = ("status", root, "--container", NAME, "--state-dir", cli.state_dir)
    quiet = cli.run(*args, "-q")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, "", "")
    assert "a sync would: 1 upload" in cli.run(*args).stdout


# -- completion ------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_completion_script_calls_us_and_its_requests_name_our_commands(
    cli: Cli, shell: str
) -> None:
    script = cli.run("completion", shell)
    assert script.returncode == 0, script.stderr
    assert "cntr-sync" in script.stdout
    assert f"_CNTR_SYNC_COMPLETE=complete_{shell}" in script.stdout
    # What the script asks when the user presses Tab after "cntr-sync ".
    request = {
        "bash": {"COMP_WORDS": "cntr-sync ", "COMP_CWORD": "1"},
        "zsh": {"_TYPER_COMPLETE_ARGS": "cntr-sync "},
        "fish": {"_TYPER_COMPLETE_ARGS": "cntr-sync ", "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
    }[shell]
    answer = cli.run(env={"_CNTR_SYNC_COMPLETE": f"complete_{shell}", **request})
    assert answer.returncode == 0, answer.stderr
    for name in ("sync", "ls", "containers", "status", "run", "config", "completion"):
        assert name in answer.stdout, (shell, name)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_options_and_choices(cli: Cli, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cntr-sync").symlink_to(CNTR_SYNC)
    program = """
    eval "$(cntr-sync completion bash)"
    ask() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _cntr_sync_completion cntr-sync;
            echo "${COMPREPLY[*]}"; }
    ask cntr-sync con
    ask cntr-sync sync --direction ""
    ask cntr-sync sync --dr
    """
    proc = subprocess.run(
        ["bash", "-c", program],
        env={**cli.env, "PATH": f"{bin_dir}{os.pathsep}{cli.env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["containers config", "push pull both", "--dry-run"]


# -- containers, ls DIRECTORY, --no-create ----------------------------------------------------


def test_containers_lists_what_the_key_sees_and_which_index_points_at_it(
    cli: Cli, root: Path
) -> None:
    ours = cli.sync_json(root)["container_id"]
    stranger = cli.server.emulator.create_container("someone-else")["id"]
    proc = cli.run("containers", "--json", "--state-dir", cli.state_dir)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert (document["exit_code"], document["errors"]) == (0, [])
    by_id = {c["id"]: c for c in document["containers"]}
    assert set(by_id) == {ours, stranger}
    assert by_id[ours]["name"] == NAME and by_id[ours]["status"] == "running"
    assert by_id[ours]["indexed_by"] == [str(root.resolve())]
    assert by_id[stranger]["indexed_by"] == []
    assert isinstance(by_id[ours]["created_at"], int)
    assert isinstance(by_id[ours]["last_active_at"], int)

    table = cli.run("containers", "--state-dir", cli.state_dir).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "ID",
        "STATUS",
        "CREATED",
        "LAST",
        "ACTIVE",
        "LOCAL",
        "INDEX",
    ]
    # Aligned: every row's id starts in the header's ID column.
    column = table[0].index("ID")
    assert sorted(line[column:].split()[0] for line in table[1:]) == sorted([ours, stranger])
    (our_row,) = [line for line in table if ours in line]
    assert our_row.endswith(str(root.resolve()))
    named = json.loads(cli.run("containers", "--name", NAME, "--json").stdout)
    assert [c["id"] for c in named["containers"]] == [ours]


def test_ls_with_the_directory_says_where_each_file_maps_and_if_it_is_tracked(
    cli: Cli, root: Path
) -> None:
    box = cli.sync_json(root)["container_id"]
    cli.server.emulator.add_assistant_file(box, "/mnt/data/out/model.txt", b"from the model")
    cli.server.emulator.add_assistant_file(box, "/mnt/data/../escape.txt", b"hostile")
    args = ("ls", root, "--container", NAME, "--state-dir", cli.state_dir)
    proc = cli.run(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    files = {f["path"]: f for f in json.loads(proc.stdout)["files"]}
    tracked = [f for f in files.values() if f["tracked"]]
    assert sorted(f["local_path"] for f in tracked) == sorted(str(root / p) for p in TREE)
    model = files["/mnt/data/out/model.txt"]
    assert (model["tracked"], model["local_path"]) == (False, str(root / "out" / "model.txt"))
    assert files["/mnt/data/../escape.txt"]["local_path"] is None
    lines = cli.run(*args).stdout.splitlines()
    (model_line,) = [line for line in lines if "model.txt" in line]
    assert model_line.split("\t")[-2:] == [str(root / "out" / "model.txt"), "untracked"]
    assert sum(line.endswith("\ttracked") for line in lines) == len(TREE)
    # Without a directory, ls prints what it always did.
    plain = cli.run("ls", "--container", NAME).stdout.splitlines()
    assert all(len(line.split("\t")) == 4 for line in plain)


def test_no_create_refuses_to_create_a_container(cli: Cli, root: Path, tmp_path: Path) -> None:
    for args in (("--no-create",), ("--no-create", "--dry-run"), ("--no-create", "--json")):
        proc = cli.sync(root, *args, container="typo-box")
        assert proc.returncode == 2, (args, proc.stderr)
        assert "no container named 'typo-box'" in proc.stderr
    assert cli.server.emulator.counts()["create_file"] == 0
    assert cli.server.emulator.counts()["create_container"] == 0
    assert_one_error_line(cli.sync(root, "--no-create", container="typo-box"), "--no-create")
    config = tmp_path / "settings.toml"
    config.write_text("create = false\n")
    refused = cli.sync(root, "--config", config, container="typo-box")
    assert refused.returncode == 2
    assert_one_error_line(refused, "no container named 'typo-box'", "create = false")
    # An existing container is used as ever.
    assert cli.sync(root).returncode == 0
    again = cli.sync(root, "--config", config, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["container_created"] is False


def test_a_new_container_is_announced_unless_quiet(cli: Cli, root: Path) -> None:
    made = cli.sync(root, "--json")
    box = json.loads(made.stdout)["container_id"]
    assert (
        made.stderr.splitlines()[0]
        == f'cntr-sync: new container "{NAME}" created container_id={box}'
    )
    quiet = cli.sync(root, "-q", container="other-box")
    assert (quiet.returncode, quiet.stderr) == (0, "")


def test_finding_a_container_by_name_costs_no_404(cli: Cli, root: Path) -> None:
    assert cli.sync(root).returncode == 0
    cli.server.emulator.reset_counts()
    assert cli.run("ls", "--container", NAME).returncode == 0
    counts = cli.server.emulator.counts()
    assert (counts["retrieve_container"], counts["list_containers"]) == (0, 1)


# -- where settings come from -------------------------------------------------------------------


def test_config_shows_the_file_found_and_the_settings_with_secrets_redacted(
    cli: Cli, root: Path, tmp_path: Path
) -> None:
    home_config = Path(cli.env["HOME"]) / ".config" / "cntr-sync" / "config.toml"
    home_config.parent.mkdir(parents=True)
    home_config.write_text(
        f'container = "{NAME}"\nextra_headers = {{ x-api-key = "sk-SECRET-1" }}\n'
    )
    shown = cli.run("config")
    assert shown.returncode == 0, shown.stderr
    assert (
        shown.stdout.splitlines()[0] == f"# config file: {home_config} (from the default location)"
    )
    assert f'container = "{NAME}"' in shown.stdout
    assert "sk-SECRET-1" not in shown.stdout + shown.stderr
    assert 'extra_headers = {"x-api-key": "[redacted]"}' in shown.stdout
    # The default file is what sync reads too: no --container needed.
    synced = cli.run("sync", root, "--state-dir", cli.state_dir, "--json")
    assert synced.returncode == 0, synced.stderr

    named = tmp_path / "named.toml"
    named.write_text('container = "from-env"\n')
    by_env = json.loads(cli.run("config", "--json", env={"CNTR_SYNC_CONFIG": str(named)}).stdout)
    assert (by_env["config_file"], by_env["config_origin"]) == (str(named), "CNTR_SYNC_CONFIG")
    assert by_env["settings"]["container"] == "from-env"
    flag = tmp_path / "flag.toml"
    flag.write_text('container = "from-flag"\n')
    by_flag = json.loads(
        cli.run("config", "--config", flag, "--json", env={"CNTR_SYNC_CONFIG": str(named)}).stdout
    )
    assert (by_flag["config_origin"], by_flag["settings"]["container"]) == ("--config", "from-flag")
    missing = cli.run("config", env={"CNTR_SYNC_CONFIG": str(tmp_path / "gone.toml")})
    assert missing.returncode == 2
    assert_one_error_line(missing, "environment CNTR_SYNC_CONFIG: config file not found")


# -- a long pass off a terminal, retries, warnings ----------------------------------------------


def test_a_long_pass_prints_stats_lines_off_a_terminal(cli: Cli, root: Path) -> None:
    # Every answer 0.3 s late, one transfer at a time: ~3 s, six stats lines' worth.
    cli.server.emulator.set_faults(FaultConfig(latency_ms=300))
    proc = cli.sync(root, "--stats", "0.5s", "--concurrency", "1", "--progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    stats = [line for line in lines if line.startswith("cntr-sync: stats: ")]
    assert stats, proc.stderr
    assert any(" transfers, " in line and "/s, " in line and " elapsed" in line for line in stats)
    assert "" not in lines  # --progress off a terminal draws no (blank) bar
    assert lines[-1].startswith("in sync: 6 files")
    never = cli.sync(root, "--stats", "0", "--json")
    assert "stats:" not in never.stderr


def test_retries_and_their_waits_show_at_verbose(cli: Cli, root: Path) -> None:
    cli.server.emulator.fail_next("list_containers", 503, count=2)
    proc = cli.sync(root, "-v")
    assert proc.returncode == 0, proc.stderr
    retried = [line for line in proc.stderr.splitlines() if "retrying list containers" in line]
    assert len(retried) == 2, proc.stderr
    assert "after HTTP 503 (attempt 2 of 5): waiting " in retried[0]
    assert "(attempt 3 of 5)" in retried[1] and retried[1].endswith(" s")
    cli.server.emulator.fail_next("list_files", 503)
    quiet = cli.sync(root)
    assert "retrying" not in quiet.stderr


def test_warnings_come_out_in_the_commands_own_style(cli: Cli, root: Path) -> None:
    box = cli.sync_json(root)["container_id"]
    cli.server.emulator.expire_container(box)
    proc = cli.sync(root)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "expired" in line]
    assert warning == [
        f"cntr-sync: warning: container expired or gone; replacing it container_id={box}"
    ]


def test_a_reader_that_goes_away_ends_the_command_quietly(cli: Cli) -> None:
    # `cntr-sync config | head -1`: the pipe closes before the output is written.
    reader = subprocess.Popen(
        [CNTR_SYNC, "config"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()
    stderr = reader.stderr.read()
    reader.stderr.close()
    assert reader.wait(timeout=60) == 141
    assert stderr == b""


def test_run_finds_its_config_file_as_every_command(cli: Cli, tmp_path: Path) -> None:
    nothing = cli.run("run")
    assert nothing.returncode == 2
    assert_one_error_line(nothing, "give --config FILE (or set CNTR_SYNC_CONFIG")
    # A file that CNTR_SYNC_CONFIG names is read (here, refused for its typo).
    named = tmp_path / "daemon.toml"
    named.write_text('[[pairs]]\nname = "a"\nlocal = "."\ncontainer = "c"\nquiet_perod = 2\n')
    refused = cli.run("run", env={"CNTR_SYNC_CONFIG": str(named)})
    assert refused.returncode == 2
    assert_one_error_line(refused, str(named), "quiet_perod", "did you mean 'quiet_period'")
