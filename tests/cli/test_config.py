"""Configuration through the CLI: `config show`, a real `serve` configured by a file and the environment, and the
one data-directory rule of every command."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from llamafoundry.cli import main
from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("LLAMAFOUNDRY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # no config file of the machine's user is read
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, dict[str, object]]:
    assert main(["config", "show", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_config_show_prints_every_setting_its_value_and_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "llamafoundry.toml"
    toml.write_text(f'ctx-size = 2048\nparallel = 2\napi_key = "{KEY}"\n')
    monkeypatch.setenv("LLAMAFOUNDRY_PARALLEL", "6")
    monkeypatch.setenv("LLAMAFOUNDRY_DATABASE_URL", "postgresql://app:s3cret@db:5432/lf")
    body = show(capsys, "--config", str(toml), "--port", "9100")
    settings = body["settings"]
    assert body["config_file"] == str(toml) and body["config_file_from"] == "--config"
    assert settings["port"] == {"value": 9100, "source": "flag", "from": "--port", "flag": "--port",
                                "env": "LLAMAFOUNDRY_PORT"}  # fmt: skip
    assert settings["parallel"]["value"] == 6 and settings["parallel"]["from"] == "LLAMAFOUNDRY_PARALLEL"
    assert settings["ctx_size"]["value"] == 2048 and settings["ctx_size"]["source"] == "file"
    assert settings["ctx_size"]["from"] == str(toml)
    assert settings["threads"] == {"value": None, "source": "default", "means": "all cores", "flag": "--threads",
                                   "env": "LLAMAFOUNDRY_THREADS"}  # fmt: skip
    assert settings["api_key"]["value"] == "****cdef"
    assert settings["database_url"]["value"] == "postgresql://app:****@db:5432/lf"
    assert "s3cret" not in json.dumps(body) and KEY not in json.dumps(body)

    assert main(["config", "show", "--config", str(toml)]) == 0  # the table
    out = capsys.readouterr().out
    assert re.search(r"ctx_size\s+2048\s+file " + re.escape(str(toml)), out)
    assert re.search(r"parallel\s+6\s+env LLAMAFOUNDRY_PARALLEL", out) and "s3cret" not in out and KEY not in out


def test_config_show_refuses_a_value_with_where_it_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMAFOUNDRY_FLASH_ATTN", "maybe")
    assert main(["config", "show"]) == 2
    assert "LLAMAFOUNDRY_FLASH_ATTN=maybe: input should be 'auto', 'on' or 'off'" in capsys.readouterr().err


STORE_COMMANDS = [["deploy", "list"], ["deploy", "admin-key"], ["deploy", "show", "chat"], ["usage"],
                  ["blocklist", "show", "chat"]]  # fmt: skip


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_data_dir_that_does_not_exist_is_refused_by_every_command(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    typo = tmp_path / "typo"
    assert main([*command, "--data-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert f"There is no data directory at {typo} (--data-dir {typo})" in err and "--create" in err
    monkeypatch.setenv("LLAMAFOUNDRY_DATA_DIR", str(typo))
    assert main(command) == 2
    assert f"(LLAMAFOUNDRY_DATA_DIR={typo})" in capsys.readouterr().err
    assert not typo.exists()


def test_create_makes_the_data_dir_and_the_default_one_is_made_on_first_use(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new = tmp_path / "new"
    assert main(["deploy", "list", "--json", "--data-dir", str(new), "--create"]) == 0
    assert json.loads(capsys.readouterr().out) == [] and (new / "llamafoundry.db").is_file()
    toml = tmp_path / "c.toml"
    toml.write_text(f'data_dir = "{tmp_path / "from-file"}"\n')
    assert main(["deploy", "list", "--config", str(toml)]) == 2
    assert f'data_dir = "{tmp_path / "from-file"}" in {toml}' in capsys.readouterr().err
    assert main(["deploy", "list", "--json"]) == 0  # the default location, on a machine that has none yet
    assert (tmp_path / "user" / ".llamafoundry" / "llamafoundry.db").is_file()


def test_serve_refuses_a_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    process = launch_serve(["--data-dir", str(tmp_path / "typo"), "--port", str(free_port())], log_path)
    assert process.wait(timeout=120) == 2
    assert "There is no data directory at" in log_path.read_text() and not (tmp_path / "typo").exists()


def test_serve_takes_its_settings_from_a_config_file_and_the_environment(tiny_model_path: Path, tmp_path: Path) -> None:
    """File < environment < flags, for a real server; the banner says where to call it and the context size."""
    home, port = tmp_path / "data", free_port()
    toml = tmp_path / "llamafoundry.toml"
    toml.write_text(f'model = "{tiny_model_path}"\nname = "from-file"\nctx_size = 256\nthreads = 1\n'
                    f'content_safety = "off"\ndata_dir = "{home}"\ncreate = true\nport = 1\n')  # fmt: skip
    env = {"LLAMAFOUNDRY_CONFIG": str(toml), "LLAMAFOUNDRY_CTX_SIZE": "384", "LLAMAFOUNDRY_PORT": str(port),
           "LLAMAFOUNDRY_API_KEY": KEY, "LLAMAFOUNDRY_NAME": "from-env", "HOME": str(tmp_path / "user")}  # fmt: skip
    log_path = tmp_path / "serve.log"
    process = launch_serve(["--name", "from-flag", "--parallel", "2"], log_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path, timeout_s=120)
        headers = {"api-key": KEY}
        assert httpx.get(f"{url}/info", headers=headers, timeout=10).json()["model_name"] == "from-flag"
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1000}
        too_long = httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=60).json()
        assert "holds 384 tokens" in too_long["error"]["message"]  # the variable's, not the file's 256
        assert (home / "llamafoundry.db").is_file()  # the file's data_dir, made as the file's `create` asks
        printed = log_path.read_text()
        assert "Context: 384 tokens per request (prompt + completion), 2 requests decoded together" in printed
        assert re.search(rf"Azure AI Inference endpoint: +{url}\n", printed)
        assert re.search(rf"OpenAI base_url: +{url}/v1\n", printed)
        assert re.search(rf"Prometheus metrics: +{url}/metrics\n", printed)
        assert re.search(rf"API reference \(OpenAPI\): +{url}/docs\n", printed)
        assert "API key: the value of $LLAMAFOUNDRY_API_KEY" in printed and KEY not in printed
    finally:
        stop_process(process)
