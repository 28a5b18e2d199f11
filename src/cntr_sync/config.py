"""Settings of cntr-sync, loaded from four layers and checked before anything runs.

Precedence, lowest to highest: defaults < TOML file (``--config FILE``) <
environment ``CNTR_SYNC_*`` < explicit overrides (CLI flags). ``OPENAI_API_KEY``
and ``OPENAI_BASE_URL`` are honoured like the official SDK, as the last fallback.

Owns: the ``Settings`` and ``PairSettings`` models, ``Settings.load`` (the one
entry point), resolving the API key (re-read on every call, so rotated secrets
work), the keyword arguments of ``ContainersClient``, building each
``models.Pair`` with inheritance resolved (the one pair value everything else
uses), and a dump with every secret redacted (a secret-looking header, every
query value and a URL's password). A pair's settings are declared
once, in ``models.PairSyncSettings`` and ``models.PairDaemonSettings``: both
models here inherit them. The loading machinery behind ``load`` (reading the
file and the environment, and the one-line ``ConfigError`` naming the layer and
key) lives in ``cntr_sync.config_sources``.

Must not: log or print, put a secret into an error, repr or dump, or touch the
network. Its only I/O is reading the config file and the API key file.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cntr_sync import config_sources
from cntr_sync.config_sources import ENV_PREFIX, RESERVED_ENV_NAMES
from cntr_sync.errors import REDACTED, ConfigError, redact_url
from cntr_sync.models import (
    DEFAULT_BASE_URL,
    AuthStyle,
    ConfigPath,
    NonEmpty,
    Pair,
    PairDaemonSettings,
    PairSyncSettings,
    Seconds,
)

__all__ = [
    "ENV_PREFIX",
    "REDACTED",
    "RESERVED_ENV_NAMES",
    "ApiKeySource",
    "PairSettings",
    "Settings",
    "default_state_dir",
    "is_secret_name",
    "parse_listen",
]

ApiKeySource = Literal[
    "api_key_file", "CNTR_SYNC_API_KEY", "OPENAI_API_KEY", "config", "flag", "none"
]

_SECRET_HEADER_NAMES = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-bf-vk", "cookie"}
)
_SECRET_NAME_PARTS = ("key", "token", "secret", "auth", "cookie", "password")
# Path settings that no two pairs may share.
_ONE_PAIR_EACH = ("container_id_file", "backup_dir")
_PAIR_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


def parse_listen(value: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port); ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ValueError(value)
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(value)
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host or any(ch.isspace() for ch in host):
        # A bare IPv6 address is ambiguous with the port separator.
        raise ValueError(value)
    port = int(port_text)
    if port > 65535:
        raise ValueError(value)
    return host, port


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/cntr-sync``, else ``~/.local/state/cntr-sync``."""
    xdg = environ.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "cntr-sync"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "cntr-sync"


def is_secret_name(name: str) -> bool:
    """Whether a header or query parameter of this name carries a credential."""
    lowered = name.lower()
    return lowered in _SECRET_HEADER_NAMES or any(part in lowered for part in _SECRET_NAME_PARTS)


def _redact_headers(values: Mapping[str, str]) -> dict[str, str]:
    return {name: REDACTED if is_secret_name(name) else value for name, value in values.items()}


def _redact_query(values: Mapping[str, str]) -> dict[str, str]:
    # Every value, as in a URL's query (``errors.redact_url``): a gateway's token can
    # have any name.
    return dict.fromkeys(values, REDACTED)


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed port or IPv6 literal
        return False


class PairSettings(PairDaemonSettings, PairSyncSettings):
    """One ``[[pairs]]`` table: a local directory mirrored into one container by the daemon.

    A ``PairSyncSettings`` field the table does not set (not in ``model_fields_set``)
    is inherited from the top level; ``Settings.pair`` resolves it. A copy must keep
    that set: ``model_copy`` does, validating a ``model_dump`` would not.
    """

    name: Annotated[str, Field(pattern=_PAIR_NAME_PATTERN)]
    local: ConfigPath
    container: NonEmpty
    # Added after the top-level patterns.
    ignore: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        # JSON (CNTR_SYNC_PAIRS) can write null: like a key left out, it inherits.
        if isinstance(data, dict):
            inherited = PairSyncSettings.model_fields
            return {k: v for k, v in data.items() if v is not None or k not in inherited}
        return data


class Settings(BaseSettings, PairSyncSettings):
    """Every setting of cntr-sync. Build it with ``Settings.load``.

    The settings of a pass (``PairSyncSettings``: direction, delete, max_delete, ...)
    are the one-shot commands' values and the defaults of every ``[[pairs]]`` table.
    Constructing ``Settings(...)`` directly uses only the arguments and the
    defaults (no file, no environment): handy for tests of other modules.
    """

    # Keys are matched exactly, as TOML is case-sensitive: "Timeout" is an unknown key
    # (with a suggestion), as it is in a [[pairs]] table. Variable names are not: see
    # config_sources.read_environment.
    model_config = SettingsConfigDict(
        case_sensitive=True, extra="forbid", frozen=True, hide_input_in_errors=True
    )

    # -- connection --------------------------------------------------------------
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_file: ConfigPath | None = None
    auth_style: AuthStyle = "bearer"
    basic_username: str = ""
    organization: str | None = None
    project: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    extra_query: dict[str, str] = Field(default_factory=dict)
    timeout: Seconds = 60.0
    connect_timeout: Seconds = 10.0
    verify_tls: bool = True
    ca_bundle: ConfigPath | None = None
    max_retries: Annotated[int, Field(ge=0, le=20)] = 4
    # A hard cap on top of the adaptive pacer; None: only the server's 429s pace requests.
    requests_per_second: Annotated[float, Field(gt=0)] | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # One request may take this long in all, however steadily bytes trickle in.
    request_deadline: Seconds = 1800.0

    # -- state -------------------------------------------------------------------
    state_dir: ConfigPath = Field(default_factory=lambda: default_state_dir(os.environ))

    # -- one-shot sync (with the inherited PairSyncSettings) ------------------------
    container: NonEmpty | None = None
    local: ConfigPath | None = None
    # Every pair's patterns come after these.
    ignore: list[str] = Field(default_factory=list)

    # -- daemon ------------------------------------------------------------------
    http_listen: str = "127.0.0.1:9464"
    flush_timeout: Annotated[float, Field(ge=0)] = 10.0
    # The daemon starts no new transfer in a pass older than this; the next pass goes on.
    pass_deadline: Seconds = 3600.0
    # The control surface (docs/control.md): the Unix socket (None: in
    # $RUNTIME_DIRECTORY, else the state directory), the bearer token that opens the
    # control routes on http_listen too, and the directory of one TOML file per pair
    # (None: pairs.d in the state directory).
    control_socket: ConfigPath | None = None
    control_token_file: ConfigPath | None = None
    pairs_dir: ConfigPath | None = None
    # Passes of different pairs the daemon runs at once; the rest wait their turn.
    max_parallel_passes: Annotated[int, Field(ge=1, le=64)] = 4

    # -- output --------------------------------------------------------------------
    log_format: Literal["auto", "console", "json"] = "auto"
    pairs: list[PairSettings] = Field(default_factory=list)

    # Where values came from, set by load(); never part of repr or dumps.
    _config_file: Path | None = PrivateAttr(default=None)
    _api_key_origin: ApiKeySource = PrivateAttr(default="config")
    _openai_api_key: SecretStr | None = PrivateAttr(default=None)
    _openai_base_url: str | None = PrivateAttr(default=None)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not _is_http_url(value):
            raise PydanticCustomError("url", "must be an http:// or https:// URL")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_is_a_file(cls, value: Path | None) -> Path | None:
        # Checked now, not when the first request fails with a bare FileNotFoundError.
        try:
            found = value is None or value.is_file()
        except OSError:  # a name too long for the file system, say
            found = False
        if not found:
            raise PydanticCustomError("ca_bundle", "no such file: {path}", {"path": str(value)})
        return value

    @field_validator("http_listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        try:
            parse_listen(value)
        except ValueError:
            raise PydanticCustomError(
                "listen", "must be HOST:PORT with PORT 0..65535 (IPv6 as [::1]:9464)"
            ) from None
        return value

    @field_validator("pairs")
    @classmethod
    def _pairs_distinct(cls, pairs: list[PairSettings], info: ValidationInfo) -> list[PairSettings]:
        seen_names: dict[str, int] = {}
        for index, pair in enumerate(pairs):
            if pair.name in seen_names:
                raise PydanticCustomError(
                    "duplicate_pair",
                    "pair name '{name}' is used by pairs[{first}] and pairs[{second}]",
                    {"name": pair.name, "first": seen_names[pair.name], "second": index},
                )
            seen_names[pair.name] = index
        # Two pairs writing one container-id file would overwrite each other's id; two
        # keeping backups in one directory would mix their files. Fields validate in
        # order, so the top-level values a pair inherits are known here.
        for setting in _ONE_PAIR_EACH:
            inherited = info.data.get(setting)
            seen: dict[Path, int] = {}
            for index, pair in enumerate(pairs):
                path = getattr(pair, setting) or inherited
                if path is None:
                    continue
                if path in seen:
                    raise PydanticCustomError(
                        "shared_path",
                        "pairs[{first}] and pairs[{second}] share {setting} {path}",
                        {
                            "first": seen[path],
                            "second": index,
                            "setting": setting,
                            "path": str(path),
                        },
                    )
                seen[path] = index
        return pairs

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file and the (injectable) environment are per-call inputs of load(),
        # which this classmethod cannot receive as arguments: load() hands its
        # sources over through a context variable. Outside load() only the
        # constructor's arguments count, never os.environ or a .env file.
        return (init_settings, *config_sources.load_sources())

    # -- loading -------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read the file, the environment and the overrides; raise ConfigError when wrong.

        ``overrides`` are CLI flags by field name; a None value means "flag not given".
        ``env`` defaults to ``os.environ``.
        """
        environ: Mapping[str, str] = os.environ if env is None else env
        flags = {key: value for key, value in (overrides or {}).items() if value is not None}
        config_sources.check_names(cls, flags, environ)
        layers = config_sources.Layers(cls, flags, environ, config_file)
        file_source = layers.file
        defaults = {"state_dir": default_state_dir(environ)}
        settings = config_sources.build(cls, PairSettings, layers, defaults)

        api_key_origin = layers.origin_of("api_key")
        if settings.api_key_file is not None:
            key_file_from_file = layers.origin_of("api_key_file") == "file"
            key_file = _locate_key_file(
                settings.api_key_file,
                environ.get("CREDENTIALS_DIRECTORY") or None,
                file_source.directory if (file_source and key_file_from_file) else None,
            )
            settings = settings.model_copy(update={"api_key_file": key_file})

        settings._config_file = file_source.path if file_source else None
        settings._api_key_origin = (
            "flag"
            if api_key_origin == "flag"
            else "CNTR_SYNC_API_KEY"
            if api_key_origin == "env"
            else "config"
        )
        openai_key = environ.get("OPENAI_API_KEY", "").strip()
        settings._openai_api_key = SecretStr(openai_key) if openai_key else None
        openai_base_url = environ.get("OPENAI_BASE_URL", "").strip() or None
        # Only a fallback that is actually used may fail the load.
        if settings.base_url is None and openai_base_url and not _is_http_url(openai_base_url):
            raise ConfigError("environment OPENAI_BASE_URL: must be an http:// or https:// URL")
        settings._openai_base_url = openai_base_url
        return settings

    # -- what the rest of the program asks -------------------------------------------

    @property
    def config_file(self) -> Path | None:
        """The file these settings were loaded from, if any."""
        return self._config_file

    @property
    def effective_base_url(self) -> str:
        """base_url, else OPENAI_BASE_URL, else the OpenAI API."""
        return self.base_url or self._openai_base_url or DEFAULT_BASE_URL

    @property
    def listen_address(self) -> tuple[str, int]:
        """http_listen as (host, port); an IPv6 host comes without brackets."""
        return parse_listen(self.http_listen)

    def resolve_api_key(self) -> str | None:
        """The API key now: api_key_file (re-read on every call) > api_key > OPENAI_API_KEY."""
        if self.api_key_file is not None:
            return _read_key_file(self.api_key_file)
        for candidate in (self.api_key, self._openai_api_key):
            if candidate is not None and (key := candidate.get_secret_value().strip()):
                return key
        return None

    def api_key_source(self) -> ApiKeySource:
        """Where resolve_api_key() takes the key from, without reading any file."""
        if self.api_key_file is not None:
            return "api_key_file"
        if self.api_key is not None and self.api_key.get_secret_value().strip():
            return self._api_key_origin
        if self._openai_api_key is not None:
            return "OPENAI_API_KEY"
        return "none"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``cntr_sync.api.ContainersClient``.

        Raises ConfigError when no key is configured: the client would otherwise
        fall back to the real os.environ, bypassing the environment given to load().
        """
        api_key = self.resolve_api_key()
        if api_key is None:
            raise ConfigError(
                "no API key: set api_key_file or api_key in the config file, "
                "CNTR_SYNC_API_KEY or OPENAI_API_KEY"
            )
        # verify_tls = false wins over ca_bundle, so one flag turns checking off.
        verify: bool | str = (
            str(self.ca_bundle) if self.verify_tls and self.ca_bundle else self.verify_tls
        )
        return {
            "api_key": api_key,
            "base_url": self.effective_base_url,
            "auth_style": self.auth_style,
            "basic_username": self.basic_username,
            "organization": self.organization,
            "project": self.project,
            "extra_headers": dict(self.extra_headers),
            "extra_query": dict(self.extra_query),
            "timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            "verify": verify,
            "max_retries": self.max_retries,
            "request_deadline": self.request_deadline,
        }

    def pair(self, table: PairSettings) -> Pair:
        """The ``Pair`` of one ``[[pairs]]`` table, with what it does not set taken from
        the top level.

        ``ignore`` is additive: the top-level patterns apply to every pair, and a
        pair's own patterns come after them.
        """
        given = table.model_fields_set
        return Pair(
            name=table.name,
            local=table.local.absolute(),
            container=table.container,
            ignore=(*self.ignore, *table.ignore),
            **{name: getattr(table, name) for name in PairDaemonSettings.model_fields},
            **{
                name: getattr(table if name in given else self, name)
                for name in PairSyncSettings.model_fields
            },
        )

    def resolved_pairs(self) -> list[Pair]:
        """Every configured ``[[pairs]]`` table as a ``Pair``, in file order."""
        return [self.pair(pair) for pair in self.pairs]

    def one_shot_pair(
        self, local: Path | None = None, container: str | None = None, *, name: str = "one-shot"
    ) -> Pair:
        """The pair of a one-shot command: ``local`` and ``container`` as given, else
        the top-level ``local`` and ``container`` settings; every other value top-level."""
        container = container or self.container
        if not container:
            raise ConfigError(
                "no container given: use --container NAME_OR_ID or 'container' in the settings"
            )
        directory = local if local is not None else self.local
        if directory is None:
            raise ConfigError(
                "no directory given: name it on the command line or set 'local' in the settings"
            )
        root = directory.expanduser().absolute()
        return self.pair(PairSettings(name=name, local=root, container=container))

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with ``overrides`` applied and validated (None: unchanged).

        What ``load`` learnt besides the fields (the config file, where the key
        came from, ``OPENAI_*``) carries over.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        if not given:
            return self
        for key in given:
            if key not in type(self).model_fields:
                raise ConfigError(f"unknown setting {key!r}{config_sources.suggest(key, Settings)}")
        data = {name: getattr(self, name) for name in type(self).model_fields}
        try:
            copy = type(self).model_validate({**data, **given})
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"setting {where}: {first['msg']}") from None
        for private in ("_config_file", "_api_key_origin", "_openai_api_key", "_openai_base_url"):
            setattr(copy, private, getattr(self, private))
        return copy

    def redacted_dump(self) -> dict[str, Any]:
        """The effective settings as JSON-able data, every secret replaced by "[redacted]"."""
        data = self.model_dump(mode="json")
        data["base_url"] = redact_url(self.effective_base_url)
        data["api_key"] = REDACTED if self.api_key is not None else None
        data["api_key_source"] = self.api_key_source()
        data["extra_headers"] = _redact_headers(self.extra_headers)
        data["extra_query"] = _redact_query(self.extra_query)
        data["pairs"] = [pair.as_json() for pair in self.resolved_pairs()]
        data["config_file"] = str(self._config_file) if self._config_file else None
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr hides api_key already; secret headers, query values and a
        # password in the URL need the same care.
        for name, value in super().__repr_args__():
            if name == "extra_headers":
                yield name, _redact_headers(value)
            elif name == "extra_query":
                yield name, _redact_query(value)
            elif name == "base_url" and value is not None:
                yield name, redact_url(value)
            else:
                yield name, value


# -- the API key file ------------------------------------------------------------------


def _locate_key_file(path: Path, credentials_dir: str | None, config_dir: Path | None) -> Path:
    """A relative api_key_file is a systemd credential name when $CREDENTIALS_DIRECTORY
    is set, else relative to the config file that named it, else to the working directory."""
    if path.is_absolute():
        return path
    if credentials_dir:
        return Path(credentials_dir) / path
    if config_dir is not None:
        return config_dir / path
    return path


def _read_key_file(path: Path) -> str:
    # Messages name the file only: never its content, not even a prefix.
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"api_key_file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read api_key_file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"api_key_file {path} is not UTF-8 text") from None
    key = text.strip()
    if not key:
        raise ConfigError(f"api_key_file {path} is empty")
    if any(ch.isspace() for ch in key):
        raise ConfigError(f"api_key_file {path} must hold the key alone on one line")
    return key
