"""Operator settings: every `serve` option and the store options every command shares, resolved in one place from
command-line flags, `LLAMAFOUNDRY_*` environment variables, a TOML config file and defaults (that order of
precedence), remembering where each value came from (`llamafoundry config show`).

The sources are pydantic-settings' own (an init source for the flags argparse parsed, `EnvSettingsSource`,
`TomlConfigSettingsSource`); `resolve` asks them in order of precedence and notes which one supplied each setting,
and pydantic validates the result.
One environment variable per flag: `--ctx-size` is `LLAMAFOUNDRY_CTX_SIZE`, `--data-dir` is
`LLAMAFOUNDRY_DATA_DIR` (the older `LLAMAFOUNDRY_HOME` still works). The config file holds the same names
(`ctx_size = 8192`; `ctx-size` also works), flat, at its top level.

A leaf module: pydantic and pydantic-settings only, nothing from the rest of the package.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

ENV_PREFIX = "LLAMAFOUNDRY_"
CONFIG_ENV = "LLAMAFOUNDRY_CONFIG"
# Older names still read, below the one-per-flag name: LLAMAFOUNDRY_DATA_DIR wins when both are set.
LEGACY_ENV = {"data_dir": "LLAMAFOUNDRY_HOME"}
SECRETS = ("api_key", "metrics_key")  # shown as their last 4 characters
SECRET_URLS = ("database_url", "redis_url", "jwks")  # shown without their password (and secret query values)
MASK = "****"


def default_data_dir() -> Path:
    """Where state lives when no data directory is set: created on first use (a fresh machine's `make serve`)."""
    return Path.home() / ".llamafoundry"


def default_config_file() -> Path:
    """The config file read when neither --config nor $LLAMAFOUNDRY_CONFIG names one (when it exists)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "llamafoundry" / "config.toml"


class StoreOptions(BaseSettings):
    """Where a command keeps its state: every command that reads or writes the store takes these."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", env_ignore_empty=True)

    data_dir: Path | None = None  # None: default_data_dir()
    database_url: str | None = None  # None: SQLite in the data directory
    create: bool = False  # make a --data-dir that does not exist (the default location is always made)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The values given to the constructor only: `resolve` reads the flags, the environment and the config
        file through the same sources itself, to know where each value came from."""
        return (init_settings,)


def _paths(value: Any) -> Any:
    """A list of paths from an environment variable: a JSON list, or paths separated by commas."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
    return value


class ServeOptions(StoreOptions):
    """Every option of `llamafoundry serve` (argparse defines the flags and their help; these the types, bounds and
    defaults)."""

    model: str | None = None  # a .gguf path, a catalog name or owner/repo[:file]; None: the demo model
    name: str | None = None
    provider: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None  # None: generated at start
    ctx_size: int | None = Field(None, ge=16)  # None: the model's own, capped
    parallel: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)
    batch_size: int = Field(1024, ge=1)
    max_queue: int = Field(64, ge=0)
    shutdown_timeout: float = Field(10.0, ge=0)
    flash_attn: Literal["auto", "on", "off"] = "auto"
    batch_pad: int = Field(16, ge=0)
    speculative_tokens: int = Field(15, ge=0)
    seed: int | None = Field(None, ge=0)  # the sampling seed of requests that send none; None: random each
    stream_keepalive: float = Field(15.0, ge=0)
    gpu_layers: int = Field(0, ge=0)
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    prefix_cache_ram: str = "auto"  # a size ("2GiB", "0"); auto: a fifth of the machine's memory, at most 8 GiB
    prefix_cache_dir: Path | None = None
    prefix_cache_disk: str = "16GiB"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    tpm: int | None = Field(None, ge=0)
    rpm: int | None = Field(None, ge=0)
    redis_url: str | None = None
    metrics_key: str | None = None  # None: /metrics is open (it shows no keys or prompts)
    content_safety: Literal["on", "off"] = "on"
    content_safety_streaming: Literal["default", "asynchronous"] = "default"
    content_safety_blocklist: Annotated[list[Path], NoDecode] = []
    no_default: bool = False
    jwks: str | None = None
    token_issuer: str | None = None
    token_audience: str | None = None
    tls: Literal["auto"] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    _split_paths = field_validator("content_safety_blocklist", mode="before")(_paths)


S = TypeVar("S", bound=StoreOptions)


def choices(name: str) -> list[str]:
    """The values a Literal setting takes (argparse's `choices` for its flag)."""
    annotation = ServeOptions.model_fields[name].annotation
    return [value for arg in get_args(annotation) for value in (get_args(arg) or (arg,)) if isinstance(value, str)]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class Origin:
    """Where a setting's value came from: `kind` default, file, env or flag; `where` the file's path, the
    variable's name or the flag."""

    kind: Literal["default", "file", "env", "flag"]
    where: str | None = None

    def describe(self, name: str, value: Any = None) -> str:
        """How a message names the value: `--port 99999`, `LLAMAFOUNDRY_PORT=99999`, `port = 99999 in x.toml`."""
        shown = display(masked(name, value))
        if self.kind == "flag":
            return f"{self.where} {shown}".strip()
        if self.kind == "env":
            return f"{self.where}={shown}"
        if self.kind == "file":
            literal = json.dumps(shown) if isinstance(value, str | Path) else shown
            return f"{name} = {literal} in {self.where}" if shown else f"{name} in {self.where}"
        return f"the default {name}" + (f" ({shown})" if shown else "")


def display(value: Any) -> str:
    """A setting's value as text: lists comma-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


DEFAULT = Origin("default")


@dataclass(frozen=True)
class Resolved(Generic[S]):
    """The effective settings and where each came from."""

    values: S
    origins: dict[str, Origin]
    config_file: Path | None = None
    config_origin: Origin | None = None

    def origin(self, name: str) -> Origin:
        return self.origins.get(name, DEFAULT)

    def describe(self, name: str) -> str:
        return self.origin(name).describe(name, getattr(self.values, name))


class _Environment(EnvSettingsSource):
    """`LLAMAFOUNDRY_<SETTING>`, and the older names of LEGACY_ENV below them."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        for name, legacy in LEGACY_ENV.items():
            if name in self.settings_cls.model_fields and name not in values and self.env_vars.get(legacy.lower()):
                values[name] = self.env_vars[legacy.lower()]
        return values

    def origin(self, name: str) -> Origin:
        legacy = LEGACY_ENV.get(name)
        if legacy and not self.env_vars.get(env_name(name).lower()):
            return Origin("env", legacy)
        return Origin("env", env_name(name))


class _ConfigFile(TomlConfigSettingsSource):
    """The TOML file: keys are setting names (dashes or underscores), all at the top level. A key no command knows
    is refused (a typo must not be ignored); keys of other commands are left to them."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path, self.fields = path, settings_cls.model_fields
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            with file_path.open(mode="rb") as file:
                data = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"The config file {self.path} is not valid TOML ({exc}). Fix it, or pass another "
                             "with --config FILE.") from None  # fmt: skip
        data = {str(key).replace("-", "_"): value for key, value in data.items()}
        unknown = sorted(set(data) - set(ServeOptions.model_fields))
        if unknown:
            raise ValueError(
                f"The config file {self.path} sets {', '.join(map(repr, unknown))}, which no command knows. Its keys "
                f"are the settings `llamafoundry config show` lists (for example ctx_size = 8192)."
            )
        return {key: value for key, value in data.items() if key in self.fields}


def config_file(flag: Path | None) -> tuple[Path | None, Origin | None]:
    """The config file to read: --config, else $LLAMAFOUNDRY_CONFIG (either must exist), else the default one when
    it exists."""
    named = [(flag, Origin("flag", "--config")), (os.environ.get(CONFIG_ENV) or None, Origin("env", CONFIG_ENV))]
    for value, origin in named:
        if value is not None:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{origin.describe('config', path)}: no such config file. Give the path of "
                                        "a TOML file (its keys: `llamafoundry config show`).")  # fmt: skip
            return path, origin
    default = default_config_file()
    return (default, Origin("default")) if default.is_file() else (None, None)


def resolve(
    cls: type[S],
    flags: Mapping[str, Any],
    config: Path | None = None,
    config_origin: Origin | None = None,
    env_only: frozenset[str] | None = None,
) -> Resolved[S]:
    """`cls` from `flags` (the flags given: setting name -> value), then the environment (only the settings in
    `env_only`, when given), then the config file, then the defaults.

    Raises:
        ValueError: a value that is not valid, with a sentence naming the setting and where it came from.
    """
    env = _Environment(cls)
    sources: list[tuple[PydanticBaseSettingsSource, Callable[[str], Origin]]] = [
        (InitSettingsSource(cls, dict(flags)), lambda name: Origin("flag", flag_name(name))),
        (env, env.origin),
    ]
    if config is not None:
        sources.append((_ConfigFile(cls, config), lambda _: Origin("file", str(config))))
    merged: dict[str, Any] = {}
    found: dict[str, Origin] = {}
    try:
        for source, origin_of in sources:  # highest precedence first: a setting's first source is the one that counts
            for name, value in source().items():
                if name in merged or (source is env and env_only is not None and name not in env_only):
                    continue
                merged[name], found[name] = value, origin_of(name)
        values = cls(**merged)
    except ValidationError as exc:
        raise ValueError(_explain(exc, found)) from None
    except SettingsError as exc:  # a variable that should hold JSON does not
        raise ValueError(f"{exc}. `llamafoundry config show` lists every setting and where it comes from.") from None
    origins = {name: found.get(name, DEFAULT) for name in cls.model_fields}
    return Resolved(values, origins, config, config_origin)


def _explain(exc: ValidationError, found: Mapping[str, Origin]) -> str:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        origin = found.get(name, DEFAULT)
        value = error.get("input")
        shown = origin.describe(name, value if isinstance(value, str | int | float | Path) else None)
        problems.append(f"{shown}: {error['msg'][0].lower()}{error['msg'][1:]}")
    return "; ".join(problems) + ". Fix the value (`llamafoundry config show` lists every setting and its source)."


def masked(name: str, value: Any) -> Any:
    """`value` as it may be shown: secrets by their last 4 characters, URLs without their password."""
    if value is None or not isinstance(value, str):
        return value
    if name in SECRETS:
        return MASK + value[-4:] if len(value) >= 16 else MASK
    if name in SECRET_URLS:
        return _mask_url(value)
    return value


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if has_password else netloc
    secret_words = ("pass", "token", "key", "secret")
    query = [(k, MASK if any(w in k.lower() for w in secret_words) else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*") if query else parts.query))
