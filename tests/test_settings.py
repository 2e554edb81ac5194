"""Settings: flags over LLAMAFOUNDRY_* variables over the config file over defaults, and where each value came
from (`llamafoundry.settings`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamafoundry.settings import (
    Origin,
    ServeOptions,
    StoreOptions,
    config_file,
    default_config_file,
    masked,
    resolve,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LLAMAFOUNDRY_* variable of the machine running the tests, and a home of our own."""
    for name in list(os.environ):
        if name.startswith("LLAMAFOUNDRY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set() -> None:
    resolved = resolve(ServeOptions, {})
    assert resolved.values.port == 8000 and resolved.values.parallel == 4 and resolved.values.data_dir is None
    assert resolved.values.content_safety_blocklist == [] and resolved.values.api_key is None
    assert set(resolved.origins.values()) == {Origin("default")}


def test_flags_beat_variables_beat_the_file_beat_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = write(tmp_path / "llamafoundry.toml", 'port = 9001\nparallel = 2\nctx_size = 2048\nname = "file"\n')
    monkeypatch.setenv("LLAMAFOUNDRY_PORT", "9002")
    monkeypatch.setenv("LLAMAFOUNDRY_PARALLEL", "3")
    resolved = resolve(ServeOptions, {"port": 9003}, toml)
    values = resolved.values
    assert (values.port, values.parallel, values.ctx_size, values.name, values.threads) == (9003, 3, 2048, "file", None)
    assert resolved.origin("port") == Origin("flag", "--port")
    assert resolved.origin("parallel") == Origin("env", "LLAMAFOUNDRY_PARALLEL")
    assert resolved.origin("ctx_size") == Origin("file", str(toml))
    assert resolved.origin("threads") == Origin("default")


def test_every_serve_option_has_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    given = {"LLAMAFOUNDRY_CTX_SIZE": "8192", "LLAMAFOUNDRY_FLASH_ATTN": "off", "LLAMAFOUNDRY_NO_DEFAULT": "true",
             "LLAMAFOUNDRY_STREAM_KEEPALIVE": "2.5", "LLAMAFOUNDRY_TLS": "auto", "LLAMAFOUNDRY_TPM": "0",
             "LLAMAFOUNDRY_CONTENT_SAFETY_BLOCKLIST": "a.txt, b.txt", "LLAMAFOUNDRY_API_KEY": "k" * 32}  # fmt: skip
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    values = resolve(ServeOptions, {}).values
    assert (values.ctx_size, values.flash_attn, values.no_default, values.stream_keepalive) == (8192, "off", True, 2.5)
    assert (values.tls, values.tpm, values.api_key) == ("auto", 0, "k" * 32)
    assert values.content_safety_blocklist == [Path("a.txt"), Path("b.txt")]
    monkeypatch.setenv("LLAMAFOUNDRY_CONTENT_SAFETY_BLOCKLIST", '["c, d.txt"]')  # a JSON list for names with commas
    assert resolve(ServeOptions, {}).values.content_safety_blocklist == [Path("c, d.txt")]


def test_the_data_directory_variable_and_its_older_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLAMAFOUNDRY_HOME", str(tmp_path / "old"))
    resolved = resolve(StoreOptions, {})
    assert resolved.values.data_dir == tmp_path / "old" and resolved.origin("data_dir").where == "LLAMAFOUNDRY_HOME"
    monkeypatch.setenv("LLAMAFOUNDRY_DATA_DIR", str(tmp_path / "new"))
    resolved = resolve(StoreOptions, {})
    assert resolved.values.data_dir == tmp_path / "new" and resolved.origin("data_dir").where == "LLAMAFOUNDRY_DATA_DIR"


def test_file_keys_take_dashes_and_a_key_no_command_knows_is_refused(tmp_path: Path) -> None:
    toml = write(tmp_path / "a.toml", "ctx-size = 1024\ndata-dir = '/srv/llamafoundry'\n")
    assert resolve(ServeOptions, {}, toml).values.ctx_size == 1024
    store = resolve(StoreOptions, {}, toml)  # serve's keys are left to serve
    assert store.values.data_dir == Path("/srv/llamafoundry")
    typo = write(tmp_path / "typo.toml", "ctx_sise = 1024\n")
    with pytest.raises(ValueError, match=r"sets 'ctx_sise', which no command knows"):
        resolve(StoreOptions, {}, typo)
    broken = write(tmp_path / "broken.toml", "port = \n")
    with pytest.raises(ValueError, match=r"broken.toml is not valid TOML"):
        resolve(ServeOptions, {}, broken)


def test_a_value_that_is_not_valid_names_where_it_came_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--port 70000: input should be less than or equal to 65535"):
        resolve(ServeOptions, {"port": 70000})
    monkeypatch.setenv("LLAMAFOUNDRY_PARALLEL", "many")
    with pytest.raises(ValueError, match=r"LLAMAFOUNDRY_PARALLEL=many: input should be a valid integer"):
        resolve(ServeOptions, {})
    monkeypatch.delenv("LLAMAFOUNDRY_PARALLEL")
    toml = write(tmp_path / "x.toml", 'log_level = "loud"\n')
    with pytest.raises(ValueError, match=r'log_level = "loud" in .*x.toml: input should be'):
        resolve(ServeOptions, {}, toml)


def test_a_replica_takes_only_its_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAFOUNDRY_TLS", "auto")
    monkeypatch.setenv("LLAMAFOUNDRY_NO_DEFAULT", "1")
    monkeypatch.setenv("LLAMAFOUNDRY_API_KEY", "r" * 32)
    values = resolve(ServeOptions, {"port": 5000}, env_only=frozenset({"api_key"})).values
    assert (values.tls, values.no_default, values.api_key, values.port) == (None, False, "r" * 32, 5000)


def test_the_config_file_is_named_by_flag_then_variable_else_the_default_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert config_file(None) == (None, None)  # no default file: none read
    default = default_config_file()
    assert default == tmp_path / "user" / ".config" / "llamafoundry" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text("port = 1\n")
    assert config_file(None) == (default, Origin("default"))
    named = write(tmp_path / "named.toml", "")
    monkeypatch.setenv("LLAMAFOUNDRY_CONFIG", str(named))
    assert config_file(None) == (named, Origin("env", "LLAMAFOUNDRY_CONFIG"))
    flagged = write(tmp_path / "flag.toml", "")
    assert config_file(flagged) == (flagged, Origin("flag", "--config"))
    with pytest.raises(FileNotFoundError, match=r"--config .*nope.toml: no such config file"):
        config_file(tmp_path / "nope.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_config_file() == tmp_path / "xdg" / "llamafoundry" / "config.toml"


def test_secrets_are_masked() -> None:
    assert masked("api_key", "0123456789abcdef0123456789abcdef") == "****cdef"
    assert masked("api_key", "short") == "****"
    assert masked("database_url", "postgresql://app:s3cret@db:5432/lf") == "postgresql://app:****@db:5432/lf"
    assert masked("database_url", "postgresql://db/lf?user=app&password=s3cret") == (
        "postgresql://db/lf?user=app&password=****"
    )
    assert masked("redis_url", "redis://:pw@cache:6379/0") == "redis://:****@cache:6379/0"
    assert masked("jwks", "https://issuer/keys.json") == "https://issuer/keys.json"
    assert masked("host", "0.0.0.0") == "0.0.0.0"
