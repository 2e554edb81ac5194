"""`serve --model` by catalog name or Hugging Face repository: downloaded through the deployments' verified,
resumable path into the data directory, from a hub on loopback (the real one is not reachable from tests)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamafoundry.commands.serve_model import resolve_model
from llamafoundry.platform.catalog import find_model
from tests.platform.fake_hub import FakeHub, running_hub
from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy

KEY = "0123456789abcdef0123456789abcdef"
PAYLOAD = b"GGUF" + bytes(range(256)) * 1024
REPO = "someone/Tiny-GGUF"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with running_hub() as state:
        monkeypatch.setenv("HF_ENDPOINT", state.url)  # read by this process and the `serve` processes it starts
        yield state


def test_serve_downloads_a_catalog_model_by_name_and_serves_it(
    tiny_model_path: Path, tmp_path: Path, hub: FakeHub
) -> None:
    hub.add("bartowski/Llama-3.2-1B-GGUF", "Llama-3.2-1B-Q4_K_M.gguf", tiny_model_path.read_bytes())
    home, port, log_path = tmp_path / "data", free_port(), tmp_path / "serve.log"
    home.mkdir()
    process = launch_serve(["--model", "Llama-3.2-1B", "--data-dir", str(home), "--port", str(port), "--api-key", KEY,
                            "--threads", "1", "--content-safety", "off"], log_path)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path, timeout_s=180)
        info = httpx.get(f"{url}/info", headers={"api-key": KEY}, timeout=10).json()
        assert info["model_name"] == "Llama-3.2-1B" and info["model_provider_name"] == "Meta"
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        answer = httpx.post(f"{url}/chat/completions", json=body, headers={"api-key": KEY}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model"] == "Llama-3.2-1B"
        weights = home / "models" / "bartowski" / "Llama-3.2-1B-GGUF" / "Llama-3.2-1B-Q4_K_M.gguf"
        assert weights.read_bytes() == tiny_model_path.read_bytes() and hub.blob_requests() == [None]
        printed = log_path.read_text()
        assert "serving Llama-3.2-1B at" in printed and re.search(r"Context: [\d,]+ tokens per request", printed)
    finally:
        stop_process(process)


def test_a_catalog_model_is_downloaded_once_with_a_progress_bar(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add("bartowski/Llama-3.2-1B-GGUF", "Llama-3.2-1B-Q4_K_M.gguf", PAYLOAD)
    chosen = resolve_model("llama-3.2-1b", tmp_path)  # catalog names match case-insensitively, as Azure's do
    assert chosen.name == "Llama-3.2-1B" and chosen.provider == "Meta"
    assert chosen.path == tmp_path / "models/bartowski/Llama-3.2-1B-GGUF/Llama-3.2-1B-Q4_K_M.gguf"
    assert "downloading Llama-3.2-1B" in capsys.readouterr().err
    assert resolve_model("Llama-3.2-1B", tmp_path) == chosen and len(hub.blob_requests()) == 1  # kept
    assert "downloading" not in capsys.readouterr().err


def test_an_interrupted_download_resumes_where_it_stopped(hub: FakeHub, tmp_path: Path) -> None:
    hub.add("bartowski/Llama-3.2-1B-GGUF", "Llama-3.2-1B-Q4_K_M.gguf", PAYLOAD)
    hub.drop_after = 100_000
    with pytest.raises(ValueError, match="--model Llama-3.2-1B: Could not download"):
        resolve_model("Llama-3.2-1B", tmp_path)
    assert resolve_model("Llama-3.2-1B", tmp_path).path.read_bytes() == PAYLOAD
    assert hub.blob_requests() == [None, "bytes=100000-"]


def test_a_file_that_does_not_match_the_pinned_checksum_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    pinned = find_model("Llama-3.2-1B-Instruct").weights
    assert pinned is not None and pinned.sha256
    hub.add(pinned.hf_repo, pinned.hf_file, PAYLOAD)  # the hub's own checksum agrees: only the pin can tell
    with pytest.raises(ValueError, match=r"--model Llama-3.2-1B-Instruct: The download of .* is corrupt"):
        resolve_model("Llama-3.2-1B-Instruct", tmp_path)
    assert not list((tmp_path / "models").rglob("*.gguf"))


def test_hugging_face_repositories_by_file_or_quantization(hub: FakeHub, tmp_path: Path) -> None:
    for name in ("Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf", "Tiny-Q6_K/Tiny-Q6_K-00001-of-00002.gguf",
                 "Tiny-Q6_K/Tiny-Q6_K-00002-of-00002.gguf"):  # fmt: skip
        hub.add(REPO, name, PAYLOAD + name.encode())
    models = tmp_path / "models" / REPO
    default = resolve_model(REPO, tmp_path)  # Q4_K_M, what the catalog downloads
    assert (default.path, default.name) == (models / "Tiny-Q4_K_M.gguf", "Tiny-Q4_K_M")
    assert resolve_model(f"{REPO}:Q8_0", tmp_path).path == models / "Tiny-Q8_0.gguf"
    assert resolve_model(f"{REPO}:Tiny-Q8_0.gguf", tmp_path).path == models / "Tiny-Q8_0.gguf"
    split = resolve_model(f"{REPO}:q6_k", tmp_path)  # a split file in a folder: every part, the first one loaded
    assert (split.path, split.name) == (models / "Tiny-Q6_K/Tiny-Q6_K-00001-of-00002.gguf", "Tiny-Q6_K")
    assert (models / "Tiny-Q6_K/Tiny-Q6_K-00002-of-00002.gguf").is_file()
    with pytest.raises(ValueError, match=r"no GGUF files for 'IQ2_XS' .*someone/Tiny-GGUF:FILE.gguf"):
        resolve_model(f"{REPO}:IQ2_XS", tmp_path)


def test_a_model_that_is_no_file_name_or_repository_is_a_sentence(tmp_path: Path) -> None:
    for spec in ("missing.gguf", "gpt-4o", "./someone/repo", "models/x.gguf", str(tmp_path / "models" / "x.gguf")):
        with pytest.raises(FileNotFoundError, match=r"no such file, catalog model or Hugging Face repository"):
            resolve_model(spec, tmp_path)


def test_offline_the_sentence_says_how_to_get_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(ValueError, match=r"may be offline.*serve --model PATH.gguf"):
        resolve_model("Llama-3.2-1B", tmp_path)
