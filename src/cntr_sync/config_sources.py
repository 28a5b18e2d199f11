"""How ``Settings.load`` reads its layers and explains what is wrong with them.

Owns the loading machinery behind ``cntr_sync.config``: which file a command
reads (``find_config_file``: ``--config``, else ``CNTR_SYNC_CONFIG``, else the
default file if there is one; the library's ``Settings.load`` takes a file only
when given one), reading that
TOML file (its relative paths anchored next to it), reading the ``CNTR_SYNC_*``
variables from an injected mapping, handing both to pydantic-settings as plain
sources through a context variable that ``Settings.settings_customise_sources``
reads, the check for unknown flags and ``CNTR_SYNC_*`` names, and turning every
validation failure into a one-line ``ConfigError`` that names the layer (file,
``environment CNTR_SYNC_X`` or ``flag --x``) and the key, with a difflib
suggestion for a misspelt key.

pydantic-settings merges the layers and validates (its public
``InitSettingsSource`` and ``settings_customise_sources``); reading them is done
here, because its file and environment sources offer no public way to report a
file's line or to take an environment other than ``os.environ``.

Must not: import ``cntr_sync.config`` (the models come in as parameters, so
there is no import cycle), print, log anything but the name of an ignored
Kubernetes service variable (at debug), put an input value (it may be a
secret) into an error or a log line, or touch the network. Its only I/O is
reading the config file.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from cntr_sync.errors import ConfigError
from cntr_sync.logs import get_logger

ENV_PREFIX = "CNTR_SYNC_"
#: The config file a command reads when not given --config.
CONFIG_ENV: Final = "CNTR_SYNC_CONFIG"
# CNTR_SYNC_* names that are not settings but belong to the CLI; every other
# unknown CNTR_SYNC_* variable is a typo and is refused rather than ignored.
RESERVED_ENV_NAMES = frozenset({CONFIG_ENV})
# What the kubelet injects for every Service in the namespace (Docker links had
# the same shapes): a Service named "cntr-sync" gives CNTR_SYNC_SERVICE_HOST,
# CNTR_SYNC_SERVICE_PORT[_<PORT NAME>], CNTR_SYNC_PORT and
# CNTR_SYNC_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]; "cntr-sync-x" gives the same
# after CNTR_SYNC_X_. Each shape of the part after the prefix, with the kind of
# value it carries; a name may fit several shapes, and one that fits is enough.
_SERVICE = r"(?:[A-Z0-9_]+_)?"
_LINK = _SERVICE + r"PORT_[0-9]+_(?:TCP|UDP|SCTP)"
_SERVICE_VARIABLES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_SERVICE + "SERVICE_HOST"), "ip"),
    (re.compile(_SERVICE + "SERVICE_PORT(?:_[A-Z0-9_]+)?"), "port"),
    (re.compile(_SERVICE + "PORT"), "url"),
    (re.compile(_LINK), "url"),
    (re.compile(_LINK + "_PROTO"), "protocol"),
    (re.compile(_LINK + "_PORT"), "port"),
    (re.compile(_LINK + "_ADDR"), "ip"),
)
_SERVICE_URL = re.compile(
    r"(?:tcp|udp|sctp)://(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<ipv4>[0-9.]+)):(?P<port>[0-9]+)"
)

log = get_logger("cntr_sync.config")
# Path fields that a TOML file may give relative to its own directory.
# api_key_file is not here: it looks in $CREDENTIALS_DIRECTORY first.
_FILE_RELATIVE_PATHS = (
    *("state_dir", "local", "ca_bundle", "container_id_file", "backup_dir"),
    *("control_socket", "control_token_file", "pairs_dir"),
)
_PAIR_FILE_RELATIVE_PATHS = ("local", "container_id_file", "backup_dir")

_S = TypeVar("_S", bound=BaseSettings)

Origin = Literal["flag", "env", "file", "default"]

# -- the hand-off to settings_customise_sources -----------------------------------------

_LOAD_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar(
    "_LOAD_SOURCES", default=()
)


def load_sources() -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of the ``build`` in progress; empty outside it."""
    return _LOAD_SOURCES.get()


def check_names(
    settings_cls: type[BaseModel], flags: Mapping[str, Any], environ: Mapping[str, str]
) -> None:
    """Refuse an unknown flag, then an unknown ``CNTR_SYNC_*`` variable."""
    for key in flags:
        if key not in settings_cls.model_fields:
            raise ConfigError(
                f"flag {_flag_name(key)}: unknown setting{suggest(key, settings_cls)}"
            )
    _check_env_names(environ, settings_cls)


class Layers:
    """The per-call inputs of one load: flags, the environment, the config file.

    Constructing it reads the file and the environment, raising ConfigError
    when the file is missing or unreadable, or a variable is not valid JSON.
    """

    def __init__(
        self,
        settings_cls: type[BaseModel],
        flags: Mapping[str, Any],
        environ: Mapping[str, str],
        config_file: Path | None,
    ) -> None:
        self.flags = flags
        self.file = ConfigFile(config_file) if config_file is not None else None
        self.env = read_environment(settings_cls, environ)

    def origin_of(self, field: str) -> Origin:
        """The highest layer that gave ``field`` a value."""
        if field in self.flags:
            return "flag"
        if field in self.env:
            return "env"
        if self.file is not None and field in self.file.data:
            return "file"
        return "default"


def build(
    settings_cls: type[_S],
    pair_cls: type[BaseModel],
    layers: Layers,
    defaults: Mapping[str, Any],
) -> _S:
    """``settings_cls`` from the layers over ``defaults``; ConfigError when invalid.

    ``pair_cls`` is the model of one ``[[pairs]]`` entry, for suggestions.
    """
    # Highest first; pydantic-settings merges them (tables key by key) below the flags.
    layer_values = [layers.env, layers.file.data if layers.file else {}, dict(defaults)]
    sources = tuple(InitSettingsSource(settings_cls, values) for values in layer_values)
    token = _LOAD_SOURCES.set(sources)
    try:
        return settings_cls(**layers.flags)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers, settings_cls, pair_cls)) from None
    finally:
        _LOAD_SOURCES.reset(token)


# -- the file ----------------------------------------------------------------------------

ConfigOrigin = Literal["--config", "CNTR_SYNC_CONFIG", "default", "none"]


@dataclass(frozen=True)
class FoundConfig:
    """The config file a command reads, and what named it (``none``: no file)."""

    path: Path | None
    origin: ConfigOrigin

    def describe(self) -> str:
        """``/etc/cntr-sync.toml (from CNTR_SYNC_CONFIG)``, for ``cntr-sync config``."""
        if self.path is None:
            return "none (no --config, no CNTR_SYNC_CONFIG, no default file)"
        origin = "the default location" if self.origin == "default" else self.origin
        return f"{self.path} (from {origin})"


def default_config_file(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/cntr-sync/config.toml``, else ``~/.config/cntr-sync/config.toml``."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "cntr-sync" / "config.toml"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".config" / "cntr-sync" / "config.toml"


def find_config_file(explicit: Path | None, environ: Mapping[str, str]) -> FoundConfig:
    """``explicit`` (``--config``), else the file ``CNTR_SYNC_CONFIG`` names (it must
    exist), else the default file when it exists, else no file (as rclone and aws)."""
    if explicit is not None:
        return FoundConfig(explicit, "--config")
    named = environ.get(CONFIG_ENV, "").strip()
    if named:
        try:
            path = Path(named).expanduser()
            present = path.is_file()
        except (RuntimeError, OSError):  # "~nobody/...", a name too long
            path, present = Path(named), False
        if not present:
            raise ConfigError(f"environment {CONFIG_ENV}: config file not found: {path}")
        return FoundConfig(path, "CNTR_SYNC_CONFIG")
    default = default_config_file(environ)
    try:
        present = default.is_file()
    except OSError:  # unreadable home: as if there were none
        present = False
    return FoundConfig(default, "default") if present else FoundConfig(None, "none")


class ConfigFile:
    """The ``--config`` file, read and parsed: it must exist, and relative paths in
    it mean "next to it"."""

    def __init__(self, path: Path) -> None:
        try:
            self.path = Path(path).expanduser()
        except RuntimeError:  # "~someone/..." with no such user
            raise ConfigError(f"config file not found: {path}") from None
        # Anchored once, so a later chdir of the daemon cannot move the paths.
        self.directory = self.path.absolute().parent
        try:
            exists, is_file = self.path.exists(), self.path.is_file()
        except OSError as exc:  # a name too long for the file system, say
            raise ConfigError(f"cannot read config file {self.path}: {exc.strerror}") from None
        if not exists:
            raise ConfigError(f"config file not found: {self.path}")
        if not is_file:
            raise ConfigError(f"config file is not a regular file: {self.path}")
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {self.path}: {exc.strerror}") from None
        #: The file's settings, relative paths made absolute.
        self.data = _anchor_paths(self._parse(raw), self.directory)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        import tomllib  # noqa: PLC0415 - only a config file needs it (7 ms at start-up)

        try:
            return tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise ConfigError(f"{self.path}: not UTF-8 text at line {line}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{self.path}: {_toml_problem(exc)}") from None
        except (ValueError, RecursionError):
            # tomllib's limits: an integer of over 4300 digits, arrays nested too deeply.
            raise ConfigError(
                f"{self.path}: invalid TOML: a value is too long or nested too deeply"
            ) from None


def _anchor_paths(data: dict[str, Any], directory: Path) -> dict[str, Any]:
    for key in _FILE_RELATIVE_PATHS:
        if key in data:
            data[key] = _anchor(data[key], directory)
    pairs = data.get("pairs")
    if isinstance(pairs, list):
        for pair in pairs:
            if isinstance(pair, dict):
                for key in _PAIR_FILE_RELATIVE_PATHS:
                    if key in pair:
                        pair[key] = _anchor(pair[key], directory)
    return data


def _anchor(value: object, directory: Path) -> object:
    # Non-strings and empty strings are left for validation to report.
    if not isinstance(value, str) or not value.strip() or value.startswith("~"):
        return value
    path = Path(value)
    return value if path.is_absolute() else str(directory / path)


# -- the environment -----------------------------------------------------------------------


def read_environment(settings_cls: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``CNTR_SYNC_*`` variables of ``environ`` as setting values, by setting name.

    Read here rather than by pydantic-settings' ``EnvSettingsSource``, whose
    public constructor reads ``os.environ`` only, while ``Settings.load`` takes
    the environment as an argument (tests, a library caller). The rules are that
    source's, as these settings use them:

    - names are case-insensitive; an empty value means "not set" (systemd's
      ``Environment=CNTR_SYNC_X=``);
    - a list or table setting is written as JSON (``CNTR_SYNC_IGNORE='["*.tmp"]'``),
      any other as plain text, which validation converts;
    - ``NAME__KEY`` sets one key of a table setting, over the keys of ``NAME``.

    Names that are not settings are skipped: ``check_names`` refused them first,
    or they are Kubernetes service variables.
    """
    values: dict[str, Any] = {}
    keyed: dict[str, dict[str, str]] = {}
    for variable, value in environ.items():
        setting = _setting_of(variable)
        if setting is None or not value:
            continue
        name, key = setting
        field = settings_cls.model_fields.get(name)
        if field is None:
            continue
        if key is None:
            values[name] = _decode_json(name, value) if _takes_json(field) else value
        elif not _is_table(field):
            raise ConfigError(f"environment {variable}: {name} is not a table; drop the __KEY")
        elif "__" in key:
            raise ConfigError(f"environment {variable}: a key of {name} holds text, not a table")
        else:
            keyed.setdefault(name, {})[_table_key(name, key)] = value
    for name, keys in keyed.items():
        whole = values.get(name, {})
        # A whole value that is no table is left for validation to refuse.
        values[name] = {**whole, **keys} if isinstance(whole, dict) else whole
    return values


def _setting_of(variable: str) -> tuple[str, str | None] | None:
    """``CNTR_SYNC_EXTRA_HEADERS__X_BF_VK`` -> ("extra_headers", "x_bf_vk"); None when
    the name does not start with the prefix (in any case) or is reserved."""
    upper = variable.upper()
    if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV_NAMES:
        return None
    name, delimiter, key = upper[len(ENV_PREFIX) :].partition("__")
    return name.lower(), key.lower() if delimiter else None


def _table_key(name: str, key: str) -> str:
    if name == "extra_headers":
        # Variable names cannot hold "-" and proxies drop headers with "_":
        # CNTR_SYNC_EXTRA_HEADERS__X_BF_VK means the header x-bf-vk. The JSON
        # form (CNTR_SYNC_EXTRA_HEADERS='{"X_Odd": "v"}') keeps names exactly.
        return key.replace("_", "-")
    return key


def _decode_json(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        # json's message quotes the text around the error; the value must not be echoed.
        raise ConfigError(
            f"environment {_env_name(name)}: not valid JSON for a list or table"
        ) from None


def _takes_json(field: FieldInfo) -> bool:
    """Whether a setting holds a list, a table or a model (``X | None`` included)."""
    for member in (field.annotation, *get_args(field.annotation)):
        kind = get_args(member)[0] if get_origin(member) is Annotated else member
        origin = get_origin(kind) or kind
        if origin in (list, tuple, dict) or (
            isinstance(origin, type) and issubclass(origin, BaseModel)
        ):
            return True
    return False


def _is_table(field: FieldInfo) -> bool:
    return get_origin(field.annotation) is dict


def _check_env_names(environ: Mapping[str, str], settings_cls: type[BaseModel]) -> None:
    for variable, value in environ.items():
        setting = _setting_of(variable)
        if setting is None or setting[0] in settings_cls.model_fields:
            continue
        if is_kubernetes_service_variable(variable, value):
            # Not ours: Kubernetes sets these for a Service named cntr-sync(-*).
            # The name only: a value is never logged.
            log.debug("ignoring a Kubernetes service variable", variable=variable)
            continue
        match = difflib.get_close_matches(setting[0], settings_cls.model_fields, n=1)
        hint = f"; did you mean {_env_name(match[0])}?" if match else ""
        raise ConfigError(f"environment {variable}: unknown setting{hint}")


def is_kubernetes_service_variable(name: str, value: str) -> bool:
    """Whether ``name=value`` has the exact shape of a variable Kubernetes injects
    for a Service (``CNTR_SYNC_PORT=tcp://10.0.0.7:9464``, ``..._SERVICE_HOST=10.0.0.7``).

    Both must fit: a name of that shape with another kind of value
    (``CNTR_SYNC_HTTP_PORT=9464``) is someone's guess at a setting, and is refused.
    """
    if not name.startswith(ENV_PREFIX):
        return False
    rest = name[len(ENV_PREFIX) :]
    return any(
        pattern.fullmatch(rest) and _is_value_of(kind, value)
        for pattern, kind in _SERVICE_VARIABLES
    )


def _is_value_of(kind: str, value: str) -> bool:
    if kind == "ip":
        return _is_ip(value)
    if kind == "port":
        return _is_port(value)
    if kind == "protocol":
        return value in ("tcp", "udp", "sctp")
    url = _SERVICE_URL.fullmatch(value)
    return url is not None and _is_ip(url["ipv6"] or url["ipv4"]) and _is_port(url["port"])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


# -- error messages ----------------------------------------------------------------------


def _env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _holds(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> bool:
    """Whether this layer supplied the value at ``loc`` (dicts merge across layers)."""
    if not loc or not isinstance(loc[0], str) or loc[0] not in data:
        return False
    value = data[loc[0]]
    return len(loc) < 2 or not isinstance(value, dict) or loc[1] in value


def _describe(
    exc: ValidationError,
    layers: Layers,
    settings_cls: type[BaseModel],
    pair_cls: type[BaseModel],
) -> str:
    """One line for the first error: where it came from, which key, what is wrong.

    Built from ``loc`` and ``msg`` only: pydantic's ``input_value`` may be a secret.
    """
    file_source = layers.file
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    loc = tuple(first["loc"])
    path = _format_loc(loc)
    field = str(loc[0]) if loc else ""
    if _holds(layers.flags, loc):
        where, path_is_named = f"flag {_flag_name(field)}", len(loc) == 1
    elif _holds(layers.env, loc):
        where, path_is_named = f"environment {_env_name(field)}", len(loc) == 1
    elif file_source is not None and _holds(file_source.data, loc):
        where, path_is_named = str(file_source.path), False
    else:
        where, path_is_named = "settings", False

    if first["type"] == "extra_forbidden":
        message = f"{where}: unknown key '{path}'{_suggest_for(loc, settings_cls, pair_cls)}"
    elif path_is_named or not path:
        message = f"{where}: {first['msg']}"
    else:
        message = f"{where}: {path}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def suggest(key: str, model: type[BaseModel]) -> str:
    """ "; did you mean 'x'?" for a misspelt key, or nothing."""
    match = difflib.get_close_matches(key.lower(), model.model_fields, n=1)
    return f"; did you mean '{match[0]}'?" if match else ""


def _suggest_for(
    loc: tuple[int | str, ...], settings_cls: type[BaseModel], pair_cls: type[BaseModel]
) -> str:
    key = str(loc[-1])
    if len(loc) == 3 and loc[0] == "pairs":
        if key in settings_cls.model_fields and key not in pair_cls.model_fields:
            # TOML puts every key after a [[pairs]] header into that pair.
            return "; top-level keys must come before the first [[pairs]] table"
        return suggest(key, pair_cls)
    return suggest(key, settings_cls) if len(loc) == 1 else ""


def _toml_problem(exc: ValueError) -> str:
    # Python 3.11's TOMLDecodeError has no lineno attribute; the position is in the text.
    text = str(exc)
    if text.endswith(" (at end of document)"):
        return f"invalid TOML at end of document: {text.removesuffix(' (at end of document)')}"
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if found is None:
        return f"invalid TOML: {text}"
    reason = text[: found.start()]
    return f"invalid TOML at line {found.group(1)}: {reason} (column {found.group(2)})"
