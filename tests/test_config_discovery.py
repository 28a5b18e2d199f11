"""Which config file a command reads (issue 24, item 3): ``--config``, then
``CNTR_SYNC_CONFIG``, then ``$XDG_CONFIG_HOME/cntr-sync/config.toml`` (else
``~/.config/cntr-sync/config.toml``) when it exists, else none. The library's
``Settings.load`` reads only a file it is given. Also: the choices ``--help``
shows are the settings' own."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from cntr_sync import cli_flags
from cntr_sync.config import PairSettings, Settings
from cntr_sync.config_sources import default_config_file, find_config_file
from cntr_sync.errors import ConfigError


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_order_is_flag_then_environment_then_the_default_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default = touch(home / ".config" / "cntr-sync" / "config.toml")
    named = touch(tmp_path / "named.toml")
    given = touch(tmp_path / "given.toml")
    env = {"HOME": str(home), "CNTR_SYNC_CONFIG": str(named)}
    assert find_config_file(given, env).path == given
    assert find_config_file(given, env).origin == "--config"
    found = find_config_file(None, env)
    assert (found.path, found.origin) == (named, "CNTR_SYNC_CONFIG")
    assert found.describe() == f"{named} (from CNTR_SYNC_CONFIG)"
    found = find_config_file(None, {"HOME": str(home), "CNTR_SYNC_CONFIG": ""})
    assert (found.path, found.origin) == (default, "default")
    assert found.describe() == f"{default} (from the default location)"
    default.unlink()
    nothing = find_config_file(None, {"HOME": str(home)})
    assert (nothing.path, nothing.origin) == (None, "none")
    assert nothing.describe().startswith("none (")


def test_xdg_config_home_comes_before_the_home_directory(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(xdg)}
    assert default_config_file(env) == xdg / "cntr-sync" / "config.toml"
    in_xdg = touch(xdg / "cntr-sync" / "config.toml")
    assert find_config_file(None, env).path == in_xdg
    # The XDG spec: a relative value is invalid and ignored.
    relative = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": "xdg"}
    assert default_config_file(relative) == tmp_path / "home/.config/cntr-sync/config.toml"


def test_a_missing_file_named_by_the_environment_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^environment CNTR_SYNC_CONFIG: config file not found: "
    ):
        find_config_file(None, {"HOME": str(tmp_path), "CNTR_SYNC_CONFIG": str(tmp_path / "x")})


def test_the_library_reads_no_file_it_is_not_given(tmp_path: Path) -> None:
    home = tmp_path / "home"
    touch(home / ".config" / "cntr-sync" / "config.toml", 'container = "from-file"\n')
    named = touch(tmp_path / "named.toml", 'container = "from-env"\n')
    env = {"HOME": str(home), "CNTR_SYNC_CONFIG": str(named)}
    assert Settings.load(env=env).container is None


def _choices(annotation: Any) -> tuple[str, ...]:
    """The words a ``Literal`` setting takes (``X | None`` included), else ()."""
    if get_origin(annotation) is Literal:
        return tuple(get_args(annotation))
    for member in get_args(annotation):
        if get_origin(member) is Literal:
            return tuple(get_args(member))
    return ()


def test_the_choices_help_shows_are_the_settings_own() -> None:
    settings = {**Settings.model_fields, **PairSettings.model_fields}
    for name in cli_flags.FLAGS:
        assert cli_flags.CHOICES.get(name, ()) == _choices(settings[name].annotation), name
    assert set(cli_flags.CHOICES) >= {"direction", "conflict", "auth_style", "watch"}
