"""Settings: layer precedence, key resolution, one-line errors, and no secret anywhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import certifi
import pytest

from cntr_sync import cli_flags
from cntr_sync.api import ContainersClient
from cntr_sync.config import PairSettings, Settings, parse_listen
from cntr_sync.errors import ConfigError
from cntr_sync.models import (
    PAIR_DEFAULTS,
    DeleteLimit,
    Pair,
    PairDaemonSettings,
    PairSyncSettings,
)

SECRET = "sk-test-SECRET-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.load(config_file, overrides, env if env is not None else {})
    message: str = caught.value.message
    assert "\n" not in message
    assert SECRET not in message and SECRET not in str(caught.value)
    return message


PAIR = '[[pairs]]\nname = "docs"\nlocal = "/srv/docs"\ncontainer = "c"\n'


# -- precedence ------------------------------------------------------------------------


def test_defaults_without_any_layer(tmp_path: Path) -> None:
    settings = Settings.load(env={"HOME": str(tmp_path)})
    assert settings.timeout == 60
    assert settings.concurrency == 8
    assert settings.auth_style == "bearer"
    assert settings.effective_base_url == "https://api.openai.com/v1"
    assert settings.state_dir == tmp_path / ".local/state/cntr-sync"
    assert settings.resolve_api_key() is None
    assert settings.api_key_source() == "none"


def test_state_dir_follows_xdg_state_home(tmp_path: Path) -> None:
    settings = Settings.load(env={"XDG_STATE_HOME": str(tmp_path), "HOME": "/nowhere"})
    assert settings.state_dir == tmp_path / "cntr-sync"


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = write(tmp_path, "timeout = 5\nconcurrency = 2\nmax_retries = 1\n")
    env = {"CNTR_SYNC_CONCURRENCY": "3", "CNTR_SYNC_MAX_RETRIES": "7"}

    settings = Settings.load(config, {"max_retries": 9, "timeout": None}, env)

    assert settings.timeout == 5  # file only; a None override is "flag not given"
    assert settings.concurrency == 3  # env beats file
    assert settings.max_retries == 9  # override beats env
    assert settings.config_file == config


def test_dict_values_merge_across_layers(tmp_path: Path) -> None:
    config = write(tmp_path, 'extra_headers = { "X-From-File" = "a" }\n')
    env = {
        "CNTR_SYNC_EXTRA_HEADERS__X_BF_VK": "vk",
        "CNTR_SYNC_EXTRA_QUERY": '{"provider": "openai"}',
        "CNTR_SYNC_IGNORE": '["*.tmp", ".git/"]',
    }
    settings = Settings.load(config, env=env)
    assert settings.extra_headers == {"X-From-File": "a", "x-bf-vk": "vk"}
    assert settings.extra_query == {"provider": "openai"}
    assert settings.ignore == ["*.tmp", ".git/"]


def test_openai_fallbacks_apply_only_when_nothing_else_is_set(tmp_path: Path) -> None:
    openai_env = {"OPENAI_API_KEY": "sk-openai", "OPENAI_BASE_URL": "http://gw:4000/v1"}
    fallback = Settings.load(env=openai_env)
    assert fallback.resolve_api_key() == "sk-openai"
    assert fallback.api_key_source() == "OPENAI_API_KEY"
    assert fallback.effective_base_url == "http://gw:4000/v1"

    from_env = Settings.load(
        env={
            **openai_env,
            "CNTR_SYNC_API_KEY": "sk-ours",
            "CNTR_SYNC_BASE_URL": "https://ours.example/v1",
        }
    )
    assert from_env.resolve_api_key() == "sk-ours"
    assert from_env.api_key_source() == "CNTR_SYNC_API_KEY"
    assert from_env.effective_base_url == "https://ours.example/v1"

    config = write(tmp_path, 'api_key = "sk-file"\nbase_url = "https://file.example/v1"\n')
    from_file = Settings.load(config, env=openai_env)
    assert from_file.resolve_api_key() == "sk-file"
    assert from_file.api_key_source() == "config"
    assert from_file.effective_base_url == "https://file.example/v1"


def test_unused_bad_openai_base_url_is_ignored_but_used_one_is_refused() -> None:
    env = {"OPENAI_BASE_URL": "ftp://nope"}
    assert Settings.load(overrides={"base_url": "https://x.example"}, env=env).base_url
    assert load_error(env=env) == "environment OPENAI_BASE_URL: must be an http:// or https:// URL"


# -- API key ---------------------------------------------------------------------------


def test_api_key_file_is_reread_after_rotation(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-first\n")
    settings = Settings.load(
        overrides={"api_key_file": key_file},
        env={"CNTR_SYNC_API_KEY": "sk-env", "OPENAI_API_KEY": "sk-openai"},
    )
    assert settings.api_key_source() == "api_key_file"
    assert settings.resolve_api_key() == "sk-first"

    key_file.write_text("  sk-second  \n")
    assert settings.resolve_api_key() == "sk-second"
    assert settings.client_kwargs()["api_key"] == "sk-second"


def test_relative_key_file_is_looked_up_in_credentials_directory(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "openai").write_text(SECRET + "\n")
    config = write(tmp_path, 'api_key_file = "openai"\n')

    settings = Settings.load(config, env={"CREDENTIALS_DIRECTORY": str(credentials)})

    assert settings.api_key_file == credentials / "openai"
    assert settings.resolve_api_key() == SECRET


def test_relative_key_file_is_next_to_the_config_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "key.txt").write_text(SECRET)
    config = write(conf_dir, 'api_key_file = "key.txt"\n')

    settings = Settings.load(config, env={})

    assert settings.api_key_file == conf_dir / "key.txt"
    assert settings.resolve_api_key() == SECRET


def test_other_relative_paths_in_the_file_are_next_to_it(tmp_path: Path) -> None:
    config = write(tmp_path, 'state_dir = "state"\nlocal = "data"\n' + PAIR.replace("/srv/", ""))
    settings = Settings.load(config, env={})
    assert settings.state_dir == tmp_path / "state"
    assert settings.local == tmp_path / "data"
    assert settings.pairs[0].local == tmp_path / "docs"


def test_missing_key_file_names_the_file_only(tmp_path: Path) -> None:
    settings = Settings.load(overrides={"api_key_file": tmp_path / "absent"}, env={})
    with pytest.raises(ConfigError, match=r"api_key_file not found: .*absent"):
        settings.resolve_api_key()


def test_bad_key_file_content_is_never_echoed(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"{SECRET}\n{SECRET}\n")
    settings = Settings.load(overrides={"api_key_file": key_file}, env={})
    with pytest.raises(ConfigError) as caught:
        settings.resolve_api_key()
    assert str(key_file) in caught.value.message
    assert SECRET not in caught.value.message


# -- client keyword arguments ------------------------------------------------------------


def test_client_kwargs_match_the_client_constructor(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    shutil.copyfile(certifi.where(), bundle)
    config = write(
        tmp_path,
        'auth_style = "basic"\nbasic_username = "u"\norganization = "org-1"\n'
        f'ca_bundle = "{bundle.name}"\nextra_query = {{ provider = "openai" }}\n',
    )
    settings = Settings.load(config, env={"OPENAI_API_KEY": SECRET})
    kwargs = settings.client_kwargs()

    assert kwargs == {
        "api_key": SECRET,
        "base_url": "https://api.openai.com/v1",
        "auth_style": "basic",
        "basic_username": "u",
        "organization": "org-1",
        "project": None,
        "extra_headers": {},
        "extra_query": {"provider": "openai"},
        "timeout": 60.0,
        "connect_timeout": 10.0,
        "verify": str(bundle),
        "max_retries": 4,
        "request_deadline": 1800.0,
    }
    ContainersClient(**kwargs).close()


def test_verify_tls_false_wins_over_ca_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.load(
        overrides={"verify_tls": False, "ca_bundle": str(bundle), "api_key": "k"}, env={}
    )
    assert settings.client_kwargs()["verify"] is False


def test_a_missing_ca_bundle_names_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('ca_bundle = "certs/gateway.pem"\n')
    with pytest.raises(ConfigError) as caught:
        Settings.load(config, env={})
    message = str(caught.value)
    assert str(config) in message and "ca_bundle" in message
    assert f"no such file: {tmp_path / 'certs' / 'gateway.pem'}" in message


def test_client_kwargs_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no API key"):
        Settings.load(env={}).client_kwargs()


# -- redaction ---------------------------------------------------------------------------


def test_secrets_absent_from_dump_repr_and_str(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET)
    config = write(
        tmp_path,
        f'api_key = "{SECRET}"\n'
        f'extra_headers = {{ Authorization = "Bearer {SECRET}", "X-Session-Token" = "{SECRET}",'
        f' "X-Trace" = "visible" }}\n'
        f'extra_query = {{ "api-key" = "{SECRET}" }}\n'
        f'base_url = "https://user:{SECRET}@gw.example/v1"\n',
    )
    settings = Settings.load(config, env={"OPENAI_API_KEY": SECRET})

    dump = settings.redacted_dump()
    assert SECRET not in repr(dump)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert dump["api_key"] == "[redacted]"
    assert dump["api_key_source"] == "config"
    assert dump["extra_headers"]["Authorization"] == "[redacted]"
    assert dump["extra_headers"]["X-Session-Token"] == "[redacted]"
    assert dump["extra_headers"]["X-Trace"] == "visible"
    assert dump["extra_query"] == {"api-key": "[redacted]"}

    with_file = Settings.load(overrides={"api_key_file": key_file}, env={})
    key_file.unlink()  # the dump must not read it
    file_dump = with_file.redacted_dump()
    assert file_dump["api_key_file"] == str(key_file)
    assert file_dump["api_key_source"] == "api_key_file"


@pytest.mark.parametrize(
    "key",
    ["api_key", "organization", "base_url", "http_listen", "timeout", "pairs", "ignore"],
)
def test_a_secret_in_a_bad_file_value_never_reaches_the_message(tmp_path: Path, key: str) -> None:
    config = write(tmp_path, f"{key} = {{ nested = '{SECRET}' }}\n")
    assert load_error(config).startswith(f"{config}: {key}")


@pytest.mark.parametrize(
    "key", ["base_url", "http_listen", "timeout", "max_retries", "pairs", "ignore", "extra_headers"]
)
def test_a_secret_in_a_bad_env_value_never_reaches_the_message(key: str) -> None:
    name = f"CNTR_SYNC_{key.upper()}"
    assert load_error(env={name: "{" + SECRET}).startswith(f"environment {name}: ")
    assert load_error(overrides={key: {"k": [SECRET]}}).startswith(
        f"flag --{key.replace('_', '-')}"
    )


# -- errors --------------------------------------------------------------------------------


def test_unknown_key_suggests_the_close_match(tmp_path: Path) -> None:
    config = write(tmp_path, "concurency = 4\n")
    assert load_error(config) == f"{config}: unknown key 'concurency'; did you mean 'concurrency'?"


def test_keys_in_the_file_are_case_sensitive(tmp_path: Path) -> None:
    # As TOML is, and as [[pairs]] tables always were.
    config = write(tmp_path, "TIMEOUT = 5\n")
    assert load_error(config) == f"{config}: unknown key 'TIMEOUT'; did you mean 'timeout'?"


def test_unknown_pair_key_suggests_the_pair_field(tmp_path: Path) -> None:
    config = write(tmp_path, PAIR + "quiet_perod = 2\n")
    assert load_error(config) == (
        f"{config}: unknown key 'pairs[0].quiet_perod'; did you mean 'quiet_period'?"
    )


def test_top_level_key_after_pairs_table_is_explained(tmp_path: Path) -> None:
    config = write(tmp_path, PAIR + "timeout = 5\n")
    assert "must come before the first [[pairs]]" in load_error(config)


def test_unknown_environment_variable_and_flag() -> None:
    assert load_error(env={"CNTR_SYNC_CONCURENCY": "4"}) == (
        "environment CNTR_SYNC_CONCURENCY: unknown setting; did you mean CNTR_SYNC_CONCURRENCY?"
    )
    assert load_error(overrides={"max_delet": 3}) == (
        "flag --max-delet: unknown setting; did you mean 'max_delete'?"
    )
    # Reserved for the CLI, not a setting.
    Settings.load(env={"CNTR_SYNC_CONFIG": "/etc/cntr-sync.toml"})


# What the kubelet injects for a Service named cntr-sync (ports 9464 "http" and 8080,
# dual-stack cluster IPs) and for one named cntr-sync-metrics.
KUBERNETES_SERVICE_ENV = {
    "CNTR_SYNC_SERVICE_HOST": "10.96.12.34",
    "CNTR_SYNC_SERVICE_PORT": "9464",
    "CNTR_SYNC_SERVICE_PORT_HTTP": "9464",
    "CNTR_SYNC_PORT": "tcp://10.96.12.34:9464",
    "CNTR_SYNC_PORT_9464_TCP": "tcp://10.96.12.34:9464",
    "CNTR_SYNC_PORT_9464_TCP_PROTO": "tcp",
    "CNTR_SYNC_PORT_9464_TCP_PORT": "9464",
    "CNTR_SYNC_PORT_9464_TCP_ADDR": "10.96.12.34",
    "CNTR_SYNC_PORT_8080_UDP": "udp://[fd00::12:34]:8080",
    "CNTR_SYNC_PORT_8080_UDP_ADDR": "fd00::12:34",
    "CNTR_SYNC_METRICS_SERVICE_HOST": "10.96.0.9",
    "CNTR_SYNC_METRICS_PORT_9464_SCTP_PROTO": "sctp",
}


def test_kubernetes_service_variables_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="cntr_sync")
    settings = Settings.load(env={**KUBERNETES_SERVICE_ENV, "CNTR_SYNC_CONCURRENCY": "3"})
    assert settings.concurrency == 3
    ignored = [r for r in caplog.records if r.getMessage().startswith("ignoring a Kubernetes")]
    assert sorted(r.getMessage().split("variable=")[1] for r in ignored) == sorted(
        KUBERNETES_SERVICE_ENV
    )
    assert all(r.levelname == "DEBUG" for r in ignored)
    # Names only: no address or port reaches the log.
    assert not any("10.96" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # The shape of a service variable with a value Kubernetes never writes: a guess.
        ("CNTR_SYNC_HTTP_PORT", "9464"),
        ("CNTR_SYNC_PORT", "9464"),
        ("CNTR_SYNC_SERVICE_HOST", "cntr-sync.default.svc"),
        ("CNTR_SYNC_SERVICE_PORT", "http"),
        ("CNTR_SYNC_PORT_9464_TCP_PROTO", "http"),
        ("CNTR_SYNC_PORT_9464_TCP", "http://10.96.12.34:9464"),
        ("CNTR_SYNC_PORT_9464_TCP_PORT", "99999"),
        # Not the shape at all.
        ("CNTR_SYNC_HOST", "10.96.12.34"),
        ("CNTR_SYNC_PORT_9464", "tcp://10.96.12.34:9464"),
        ("CNTR_SYNC_PORT_9464_HTTP", "tcp://10.96.12.34:9464"),
    ],
)
def test_lookalikes_of_service_variables_are_refused(name: str, value: str) -> None:
    assert load_error(env={name: value}).startswith(f"environment {name}: unknown setting")


def test_a_typo_next_to_service_variables_still_suggests_the_setting(tmp_path: Path) -> None:
    env = {**KUBERNETES_SERVICE_ENV, "CNTR_SYNC_CONCURENCY": "4"}
    assert load_error(env=env) == (
        "environment CNTR_SYNC_CONCURENCY: unknown setting; did you mean CNTR_SYNC_CONCURRENCY?"
    )


@pytest.mark.e2e
def test_the_cli_starts_beside_a_service_named_cntr_sync(tmp_path: Path) -> None:
    """The sidecar's case end to end: `config check` exits 0, and a typo still exits 2."""
    config = write(tmp_path, PAIR)
    cli = shutil.which("cntr-sync", path=str(Path(sys.executable).parent))
    assert cli is not None
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    ok = subprocess.run(
        [cli, "config", "check", str(config)],
        env={**base, **KUBERNETES_SERVICE_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    typo = subprocess.run(
        [cli, "config", "check", str(config)],
        env={**base, **KUBERNETES_SERVICE_ENV, "CNTR_SYNC_CONCURENCY": "4"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert typo.returncode == 2
    assert "CNTR_SYNC_CONCURENCY: unknown setting; did you mean CNTR_SYNC_CONCURRENCY?" in (
        typo.stderr
    )


def test_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    config = write(tmp_path, 'timeout = "soon"\n')
    assert load_error(config) == (
        f"{config}: timeout: Input should be a valid number, unable to parse string as a number"
    )


def test_empty_environment_variable_means_unset() -> None:
    assert (
        Settings.load(env={"CNTR_SYNC_MEMORY_LIMIT": "", "CNTR_SYNC_API_KEY": ""}).api_key is None
    )


def test_environment_names_are_case_insensitive_and_keys_merge_over_json() -> None:
    env = {
        "cntr_sync_timeout": "5",
        "CNTR_SYNC_EXTRA_QUERY": '{"a": "1", "b": "1"}',
        "CNTR_SYNC_EXTRA_QUERY__B": "2",
    }
    settings = Settings.load(env=env)
    assert settings.timeout == 5
    assert settings.extra_query == {"a": "1", "b": "2"}


def test_a_delete_limit_from_the_environment_is_written_as_on_the_command_line() -> None:
    assert Settings.load(env={"CNTR_SYNC_MAX_DELETE": "10%"}).max_delete == DeleteLimit(percent=10)
    assert Settings.load(env={"CNTR_SYNC_MAX_DELETE": "10"}).max_delete == DeleteLimit(count=10)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("CNTR_SYNC_TIMEOUT__X", "timeout is not a table; drop the __KEY"),
        ("CNTR_SYNC_IGNORE__0", "ignore is not a table; drop the __KEY"),
        ("CNTR_SYNC_EXTRA_HEADERS__A__B", "a key of extra_headers holds text, not a table"),
    ],
)
def test_a_key_of_something_that_is_not_a_table_is_refused(name: str, problem: str) -> None:
    assert load_error(env={name: SECRET}) == f"environment {name}: {problem}"


def test_bad_values_in_env_and_flags_name_the_variable_and_flag() -> None:
    assert load_error(env={"CNTR_SYNC_TIMEOUT": "-1"}) == (
        "environment CNTR_SYNC_TIMEOUT: Input should be greater than 0"
    )
    assert load_error(overrides={"max_delete": "101%"}) == (
        "flag --max-delete: a percentage must be between 0% and 100%"
    )
    assert load_error(overrides={"max_delete": 12.5}) == (
        "flag --max-delete: write a percentage such as '50%' or a count of files such as 10"
    )
    assert load_error(env={"CNTR_SYNC_IGNORE": "*.tmp"}) == (
        "environment CNTR_SYNC_IGNORE: not valid JSON for a list or table"
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (PAIR + "quiet_period = -1\n", "pairs[0].quiet_period: Input should be greater than 0"),
        (
            PAIR + "quiet_period = 5\nmax_delay = 2\n",
            "pairs[0].max_delay: must be at least quiet_period (5.0)",
        ),
        (
            'http_listen = "localhost"\n',
            "http_listen: must be HOST:PORT with PORT 0..65535 (IPv6 as [::1]:9464)",
        ),
        ('http_listen = "0.0.0.0:70000"\n', "http_listen: must be HOST:PORT"),
        ('base_url = "api.openai.com/v1"\n', "base_url: must be an http:// or https:// URL"),
        (
            PAIR + 'direction = "sideways"\n',
            "pairs[0].direction: Input should be 'push', 'pull' or 'both'",
        ),
        ('remote_prefixes = ["mnt/data/"]\n', "remote_prefixes[0]: a remote prefix must start"),
        ('outside_subdir = "../out"\n', "outside_subdir: must be a relative directory inside"),
        (
            'conflict = "mine"\n',
            "conflict: Input should be 'keep-both', 'local-wins', 'remote-wins' or 'newer'",
        ),
        (
            PAIR + PAIR.replace('"c"', '"d"'),
            "pairs: pair name 'docs' is used by pairs[0] and pairs[1]",
        ),
        (PAIR.replace('name = "docs"', 'name = "my docs"'), "pairs[0].name: String should match"),
        ("[[pairs]]\nname = 'x'\nlocal = '/x'\n", "pairs[0].container: Field required"),
        ('memory_limit = "2g"\n', "memory_limit: Input should be '1g', '4g', '16g' or '64g'"),
        ("expires_after_minutes = 0\n", "expires_after_minutes: Input should be greater than"),
        ('local = ""\n', "local: must not be empty"),
        ("ab = \n", "invalid TOML at line 1: Invalid value (column 6)"),
        ("a = [1,\n", "invalid TOML at end of document: Invalid value"),
    ],
)
def test_bad_values_give_one_line_naming_file_and_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    config = write(tmp_path, toml)
    assert load_error(config).startswith(f"{config}: {expected}")


def test_pairs_sharing_an_inherited_container_id_file_are_refused(tmp_path: Path) -> None:
    config = write(tmp_path, 'container_id_file = "/run/id"\n' + PAIR + PAIR.replace("docs", "b"))
    assert "share container_id_file /run/id" in load_error(config)


def test_pairs_sharing_a_backup_dir_are_refused(tmp_path: Path) -> None:
    config = write(tmp_path, 'backup_dir = "/srv/kept"\n' + PAIR + PAIR.replace("docs", "b"))
    assert "pairs[0] and pairs[1] share backup_dir /srv/kept" in load_error(config)
    own = PAIR + 'backup_dir = "/srv/a"\n' + PAIR.replace("docs", "b") + 'backup_dir = "/srv/b"\n'
    assert Settings.load(write(tmp_path, own), env={}).pairs[1].backup_dir == Path("/srv/b")


def test_missing_config_file(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope.toml") == f"config file not found: {tmp_path / 'nope.toml'}"


def test_listen_addresses() -> None:
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("::1:9464", "[::1:9464", "host:", ":80", "[nothost]:1", "h:65536"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    assert Settings.load(overrides={"http_listen": "[::1]:9464"}, env={}).listen_address == (
        "::1",
        9464,
    )


# -- pairs ---------------------------------------------------------------------------------


def test_pair_inherits_unset_values_from_the_top_level(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'delete = false\nmax_delete = "10%"\nignore = ["*.tmp"]\nmemory_limit = "4g"\n'
        "expires_after_minutes = 60\n"
        + PAIR
        + 'max_delete = 90\nignore = ["build/"]\nquiet_period = 2\n'
        + PAIR.replace("docs", "other"),
    )
    settings = Settings.load(config, env={})
    first, second = settings.resolved_pairs()

    assert isinstance(first, Pair)
    assert first.delete is False
    assert first.max_delete == DeleteLimit(count=90)
    assert first.ignore == ("*.tmp", "build/")
    assert first.memory_limit == "4g"
    assert first.expires_after_minutes == 60
    assert first.quiet_period == 2
    assert second.max_delete == DeleteLimit(percent=10)
    assert second.ignore == ("*.tmp",)
    assert settings.redacted_dump()["pairs"][0]["max_delete"] == "90"
    assert settings.redacted_dump()["max_delete"] == "10%"


def test_one_shot_pair_needs_container_and_local() -> None:
    with pytest.raises(ConfigError, match="no container given"):
        Settings.load(env={}).one_shot_pair()
    with pytest.raises(ConfigError, match="no directory given"):
        Settings.load(overrides={"container": "c"}, env={}).one_shot_pair()
    pair = Settings.load(overrides={"container": "c", "local": "/d"}, env={}).one_shot_pair()
    assert (pair.container, pair.local, pair.delete) == ("c", Path("/d"), True)


def test_one_shot_arguments_win_over_the_settings() -> None:
    settings = Settings.load(overrides={"container": "c", "local": "/d"}, env={})
    pair = settings.one_shot_pair(Path("/other"), "box")
    assert (pair.container, pair.local) == ("box", Path("/other"))


def test_pull_settings_are_inherited_by_pairs(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'direction = "both"\nconflict = "remote-wins"\nremote_prefixes = ["/mnt/data/", "/tmp/"]\n'
        + PAIR
        + 'direction = "pull"\noutside_prefix = "skip"\n',
    )
    (pair,) = Settings.load(config, env={}).resolved_pairs()
    assert pair.direction == "pull"
    assert pair.conflict == "remote-wins"
    assert pair.remote_prefixes == ("/mnt/data/", "/tmp/")
    assert (pair.outside_prefix, pair.outside_subdir) == ("skip", "_container")


def test_pair_defaults_are_written_once() -> None:
    # Settings and [[pairs]] tables take their defaults from the one Pair value.
    top = Settings.load(env={})
    table = PairSettings(name="a", local=Path("/a"), container="c")
    pair = top.pair(table)
    for name, default in PAIR_DEFAULTS.items():
        if name == "ignore":
            assert pair.ignore == ()
            continue
        assert getattr(pair, name) == default, name
        if name in Settings.model_fields:
            value = getattr(top, name)
            assert (tuple(value) if isinstance(value, list) else value) == default, name
        if name in PairSettings.model_fields and getattr(table, name) is not None:
            assert getattr(table, name) == default, name


def test_settings_and_pairs_are_frozen() -> None:
    settings = Settings.load(env={})
    with pytest.raises(ValueError, match="frozen"):
        settings.timeout = 1  # type: ignore[misc]
    pair = PairSettings(name="a", local=Path("/a"), container="c")
    with pytest.raises(ValueError, match="frozen"):
        pair.keepalive = True  # type: ignore[misc]


def test_a_pair_value_equal_to_the_default_still_overrides_the_top_level(tmp_path: Path) -> None:
    # A table overrides what it sets, whatever the value: "unset" is not "the default".
    config = write(
        tmp_path,
        'delete = false\ndirection = "both"\n' + PAIR + 'delete = true\ndirection = "push"\n',
    )
    (pair,) = Settings.load(config, env={}).resolved_pairs()
    assert (pair.delete, pair.direction) == (True, "push")


def test_a_table_keeps_what_it_did_not_set_through_with_overrides() -> None:
    # `run DIRECTORY` builds its one table in code and hands it over like this.
    settings = Settings.load(overrides={"delete": False, "max_delete": 3}, env={})
    table = PairSettings(name="a", local=Path("/a"), container="c", quiet_period=2)
    (pair,) = settings.with_overrides(pairs=[table]).resolved_pairs()
    assert (pair.delete, pair.max_delete, pair.quiet_period) == (False, DeleteLimit(count=3), 2)


def test_a_null_in_a_json_pair_inherits_like_a_missing_key() -> None:
    env = {
        "CNTR_SYNC_MEMORY_LIMIT": "4g",
        "CNTR_SYNC_PAIRS": '[{"name": "a", "local": "/a", "container": "c",'
        ' "memory_limit": null, "direction": null}]',
    }
    (pair,) = Settings.load(env=env).resolved_pairs()
    assert (pair.memory_limit, pair.direction) == ("4g", "push")


def test_each_pair_setting_is_declared_once_and_shared() -> None:
    # Settings, a [[pairs]] table and Pair take their fields from the same two models.
    assert issubclass(Settings, PairSyncSettings)
    assert not issubclass(Settings, PairDaemonSettings)
    for model in (PairSettings, Pair):
        assert issubclass(model, PairSyncSettings) and issubclass(model, PairDaemonSettings)
    identity = {"name", "local", "container", "ignore"}
    assert set(Pair.model_fields) == set(PairSettings.model_fields)
    assert set(Pair.model_fields) - identity == set(PAIR_DEFAULTS) - {"ignore"}


def test_a_pair_is_a_frozen_hashable_value() -> None:
    pair = Pair(name="a", local=Path("/a"), container="c", ignore=("*.tmp",))
    assert {pair, pair.model_copy(), Pair(**dict(pair))} == {pair}
    assert pair.model_copy(update={"delete": False}) != pair
    with pytest.raises(ValueError, match="frozen"):
        pair.delete = False  # type: ignore[misc]


def flag_kind(annotation: Any) -> Any:
    """What typer should parse for a setting of this type."""
    if get_origin(annotation) is Annotated:
        return flag_kind(get_args(annotation)[0])
    members = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (UnionType, Union) and len(members) == 1:
        return flag_kind(members[0])
    origin = get_origin(annotation) or annotation
    if origin in (list, tuple, dict):
        return list[str]
    if origin in (bool, int, float, Path):
        return origin
    return str  # text, a Literal of choices, a secret, a delete limit


def test_each_flag_parses_what_its_setting_takes() -> None:
    # That every setting has a flag or a reason not to: tests/test_cli.py (NOT_FLAGS).
    settings = {**Settings.model_fields, **PairSettings.model_fields}
    assert set(cli_flags.FLAGS) <= set(settings)
    assert tuple(PairDaemonSettings.model_fields) == cli_flags.DAEMON_PAIR
    assert set(PairSyncSettings.model_fields) <= set(cli_flags.SYNC)
    for name, option in cli_flags.FLAGS.items():
        kind, _ = get_args(option)
        expected = flag_kind(settings[name].annotation)
        assert kind == expected | None, name


# -- the example file ------------------------------------------------------------------------


def test_example_file_loads_with_defaults() -> None:
    example = ROOT / "config.example.toml"
    settings = Settings.load(example, env={})
    defaults = Settings.load(env={})
    for name in Settings.model_fields:
        if name != "pairs":
            assert getattr(settings, name) == getattr(defaults, name), name
    assert [pair.name for pair in settings.pairs] == ["docs"]


def test_example_file_documents_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    top, _, pair = text.partition("\n[[pairs]]\n")
    key = re.compile(r"^#? ?([a-z_]+) = ", re.MULTILINE)
    assert set(key.findall(top)) | {"pairs"} == set(Settings.model_fields)
    assert set(key.findall(pair)) == set(PairSettings.model_fields)
    # Commented-out values must be valid TOML too, so uncommenting one works.
    for line in re.findall(r"^# ([a-z_]+ = .*)$", text, re.MULTILINE):
        tomllib.loads(line)


def test_with_overrides_validates_and_keeps_what_load_learnt(tmp_path: Path) -> None:
    config = write(tmp_path, 'container = "box"\nignore = ["*.log"]\n')
    settings = Settings.load(config, env={"OPENAI_API_KEY": "sk-from-env-0001"})
    changed = settings.with_overrides(ignore=[*settings.ignore, "build/"], concurrency=2)
    assert changed.ignore == ["*.log", "build/"] and changed.concurrency == 2
    assert changed.container == "box"
    assert changed.config_file == config
    assert changed.resolve_api_key() == "sk-from-env-0001"
    assert settings.with_overrides() is settings
    with pytest.raises(ConfigError, match="setting concurrency: Input should be less than"):
        settings.with_overrides(concurrency=1000)
    with pytest.raises(ConfigError, match="did you mean 'concurrency'"):
        settings.with_overrides(concurency=2)
