"""Weight downloads as background jobs, end to end: real `serve` processes on loopback download a catalog model
from the fake hub (paused part-way, so that a download in progress can be watched without sleeps), while the
management API and the CLI create, follow, cancel and resume it; then the deployment serves chat."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.deployment_fixtures import START_TIMEOUT_S, cli_json, start_gateway, wait_for, wait_ready
from tests.platform.fake_hub import FakeHub, running_hub

MODEL, REPO, FILE = "Llama-3.2-1B", "bartowski/Llama-3.2-1B-GGUF", "Llama-3.2-1B-Q4_K_M.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path) -> Iterator[FakeHub]:
    with running_hub() as state:
        state.add(REPO, FILE, tiny_model_path.read_bytes())  # a real GGUF: the deployment then serves chat
        monkeypatch.setenv("HF_ENDPOINT", state.url)  # read by the `serve` processes the tests start
        yield state


def _part(home: Path) -> Path:
    return home / "models" / REPO / (FILE + ".part")


def _status(url: str, admin: dict[str, str], name: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/management/deployments/{name}", headers=admin, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["status"])


def test_the_api_creates_at_once_follows_cancels_and_resumes_a_download(
    hub: FakeHub, tiny_model_path: Path, tmp_path: Path
) -> None:
    size = len(hub.files[f"{REPO}/{FILE}"])
    hub.hold(size // 4)
    home = tmp_path / "home"
    admin = {"api-key": cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]}
    gateway = start_gateway(home, tiny_model_path)
    try:
        url = gateway.url
        created = httpx.post(f"{url}/management/deployments", headers=admin, timeout=30,
                             json={"name": "dl-chat", "model": MODEL, "type": "managed"})  # fmt: skip
        assert created.status_code == 201, created.text  # answered while the hub holds the download part-way
        assert created.json()["status"]["state"] == "downloading" and created.json()["weights"] is None
        key = created.json()["primary_key"]

        def downloaded() -> int:
            return int(_status(url, admin, "dl-chat")["progress"]["downloaded_bytes"])

        wait_for(lambda: downloaded() == size // 4, 30, "the progress reaching the hub's first hold")
        hub.hold(size // 2)
        wait_for(lambda: downloaded() == size // 2, 30, "the progress increasing to the second hold")
        status = _status(url, admin, "dl-chat")
        assert status["progress"]["total_bytes"] == size and status["progress"]["percent"] == pytest.approx(50, 0.1)
        assert "pid" in status["downloading_on"]
        chat_url = f"{url}/deployments/dl-chat/chat/completions"
        assert httpx.post(chat_url, json={"messages": [{"role": "user", "content": "Hi"}]}, headers={"api-key": key},
                          timeout=10).status_code != 200  # fmt: skip

        cancelled = httpx.post(f"{url}/management/deployments/dl-chat/cancel-download", headers=admin, timeout=10)
        assert cancelled.status_code == 200 and cancelled.json()["status"]["state"] == "cancelled"
        again = httpx.post(f"{url}/management/deployments/dl-chat/cancel-download", headers=admin, timeout=10)
        assert again.status_code == 409 and "it is cancelled" in again.json()["error"]["message"]
        wait_for(lambda: "stopping_on" not in _status(url, admin, "dl-chat"), 30, "the server seeing the cancel")
        hub.release()  # the cancelled download writes no further byte
        kept = _part(home).stat().st_size
        assert kept == size // 2  # cancelled: the bytes stay in the .part file

        resumed = httpx.post(f"{url}/management/deployments/dl-chat/resume-download", headers=admin, timeout=10)
        assert resumed.status_code == 200 and resumed.json()["status"]["state"] == "downloading"
        wait_ready(chat_url, key)
        assert hub.blob_requests() == [None, f"bytes={kept}-"]  # resumed from the kept bytes, not from 0
        shown = httpx.get(f"{url}/management/deployments/dl-chat", headers=admin, timeout=10).json()
        assert shown["status"]["state"] == "ready"
        assert Path(shown["weights"]).read_bytes() == tiny_model_path.read_bytes()
        assert not _part(home).exists()
    finally:
        gateway.stop()


def test_a_cli_created_download_waits_for_a_server_and_resumes_after_a_restart(
    hub: FakeHub, tiny_model_path: Path, tmp_path: Path
) -> None:
    size = len(hub.files[f"{REPO}/{FILE}"])
    hub.hold(size // 3)
    home = tmp_path / "home"
    created = cli_json(home, "deploy", "create", "dl-cli", "--model", MODEL, "--type", "managed", "--create")
    assert created["status"]["state"] == "downloading" and "queued" in created["status"]
    assert hub.blob_requests() == []  # the command returned at once: no server yet, so nothing downloads
    shown = cli_json(home, "deploy", "show", "dl-cli")
    assert shown["status"]["state"] == "downloading" and shown["status"]["progress"]["downloaded_bytes"] == 0

    first = start_gateway(home, tiny_model_path)  # the next `serve` picks the job up
    try:
        wait_for(lambda: cli_json(home, "deploy", "show", "dl-cli")["status"]["progress"]["downloaded_bytes"]
                 == size // 3, 30, "the first server's progress")  # fmt: skip
    finally:
        first.stop()  # mid-download: the job is released, the bytes kept
    assert _part(home).stat().st_size == size // 3
    after = cli_json(home, "deploy", "show", "dl-cli")["status"]
    assert after["state"] == "downloading" and "downloading_on" not in after

    hub.release()
    second = start_gateway(home, tiny_model_path)
    try:
        key = cli_json(home, "deploy", "keys", "dl-cli", "--regenerate", "primary")["primary_key"]
        wait_ready(f"{second.url}/deployments/dl-cli/chat/completions", key, START_TIMEOUT_S)
        assert hub.blob_requests() == [None, f"bytes={size // 3}-"]  # resumed where the first server stopped
        shown = cli_json(home, "deploy", "show", "dl-cli")
        assert "status" not in shown and Path(shown["weights"]).read_bytes() == tiny_model_path.read_bytes()
    finally:
        second.stop()


def test_deploy_cancel_resume_and_delete_from_the_cli(hub: FakeHub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli_json(home, "deploy", "create", "dl-del", "--model", MODEL, "--type", "managed", "--create")
    assert cli_json(home, "deploy", "cancel", "dl-del")["status"]["state"] == "cancelled"
    text = _cli(home, "deploy", "show", "dl-del")
    assert "Download: cancelled" in text and "deploy resume dl-del" in text
    assert cli_json(home, "deploy", "resume", "dl-del")["status"]["state"] == "downloading"
    refused = _cli(home, "deploy", "resume", "dl-del", code=1)
    assert "cannot resume its download: it is downloading" in refused
    _cli(home, "deploy", "delete", "dl-del")  # a downloading deployment: its job goes with it
    assert cli_json(home, "deploy", "list") == []
    created = _cli(home, "deploy", "create", "dl-del", "--model", MODEL, "--type", "managed")
    assert "`llamafoundry deploy resume dl-del --wait` downloads it now" in created  # no server runs
    _cli(home, "deploy", "resume", "dl-del", "--wait")  # a queued download no server holds: made here
    shown = cli_json(home, "deploy", "show", "dl-del")
    assert "status" not in shown and Path(shown["weights"]).is_file() and hub.blob_requests() == [None]


def _cli(home: Path, *argv: str, code: int = 0) -> str:
    """`llamafoundry ARGV --data-dir home` in a process of its own (as a user runs it); stdout and stderr."""
    done = subprocess.run([sys.executable, "-m", "llamafoundry", *argv, "--data-dir", str(home)], capture_output=True,
                          text=True, timeout=120, env=_env())  # fmt: skip
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout + done.stderr


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}
