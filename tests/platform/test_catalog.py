"""The catalog (the Llama family as Azure lists it), `models list/show`, and weight downloads with checksums
(against a hub on loopback: the real one is not reachable from tests)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llamafoundry.cli import main
from llamafoundry.platform.catalog import CATALOG, MANAGED, SERVERLESS, UnknownModelError, WeightsSource, find_model
from llamafoundry.platform.weights import WeightsError, download, resolve_weights

AZURE_LLAMA_NAMES = {
    "Llama-3.2-1B", "Llama-3.2-1B-Instruct", "Llama-3.2-3B", "Llama-3.2-3B-Instruct", "Llama-Guard-3-1B",
    "Llama-Guard-3-11B-Vision", "Llama-3.2-11B-Vision-Instruct", "Llama-3.2-90B-Vision-Instruct",
    "Meta-Llama-3.1-8B", "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B", "Meta-Llama-3.1-70B-Instruct",
    "Meta-Llama-3.1-405B", "Meta-Llama-3.1-405B-Instruct",
}  # fmt: skip


def test_the_catalog_lists_the_azure_llama_family() -> None:
    assert {m.name for m in CATALOG} == AZURE_LLAMA_NAMES
    assert all(m.provider == "Meta" and m.context_length == 131072 for m in CATALOG)


def test_entries_say_what_azure_says() -> None:
    big = find_model("meta-llama-3.1-405b-instruct")  # names match case-insensitively
    assert big.name == "Meta-Llama-3.1-405B-Instruct" and big.supports_tools
    assert big.deployment_types == (SERVERLESS, MANAGED) and big.input_price_per_1k and big.output_price_per_1k
    vision = find_model("Llama-3.2-11B-Vision-Instruct")
    assert vision.accepts_images and vision.is_preview and vision.weights is None  # llama.cpp cannot run it
    guard = find_model("Llama-Guard-3-1B")
    assert guard.deployment_types == (MANAGED,) and guard.input_price_per_1k is None
    for model in CATALOG:  # a serverless model has a per-token price; managed-only ones are billed by core-hour
        assert (model.input_price_per_1k is not None) == model.allows(SERVERLESS)


def test_unknown_names_list_the_catalog() -> None:
    with pytest.raises(UnknownModelError, match="Meta-Llama-3.1-8B-Instruct"):
        find_model("gpt-4o")


def test_models_list_prints_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in AZURE_LLAMA_NAMES)
    assert main(["models", "list", "--json"]) == 0
    assert {m["name"] for m in json.loads(capsys.readouterr().out)} == AZURE_LLAMA_NAMES


def test_models_show_prints_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "show", "Meta-Llama-3.1-8B-Instruct", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    fields = ["name", "provider", "context_length", "input_modalities", "output_modalities", "supports_tools"]
    fields += ["deployment_types", "is_preview", "input_price_per_1k", "output_price_per_1k", "weights"]
    assert all(field in body for field in fields)
    assert body["weights"]["url"].endswith("/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/resolve/main/"
                                           "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf")  # fmt: skip
    assert main(["models", "show", "Meta-Llama-3.1-8B-Instruct"]) == 0
    assert "131072" in capsys.readouterr().out
    assert main(["models", "show", "nope"]) == 1
    assert "not in the catalog" in capsys.readouterr().err


# ---- downloads ---------------------------------------------------------------------------------------------

PAYLOAD = b"GGUF" + bytes(range(256)) * 4096  # ~1 MiB: several progress callbacks


class FakeHub:
    """Serves `/<repo>/resolve/main/<file>` as the hub does: a redirect carrying X-Linked-Etag, then the bytes."""

    def __init__(self, payload: bytes, advertised_sha256: str | None) -> None:
        self.payload = payload
        self.advertised = advertised_sha256
        self.requests: list[str] = []


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    state = FakeHub(PAYLOAD, hashlib.sha256(PAYLOAD).hexdigest())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(self.path)
            if "/resolve/main/" in self.path and "/missing/" not in self.path:
                self.send_response(302)
                self.send_header("Location", "/cdn/blob")
                if state.advertised:
                    self.send_header("X-Linked-Etag", f'"{state.advertised}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/cdn/blob":
                self.send_response(200)
                self.send_header("Content-Length", str(len(state.payload)))
                self.end_headers()
                self.wfile.write(state.payload)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield state
    server.shutdown()


SOURCE = WeightsSource("meta-test/Tiny-GGUF", "tiny-Q4_K_M.gguf")


def test_download_checks_the_hub_checksum_and_reports_progress(hub: FakeHub, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = download(SOURCE, tmp_path, lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "meta-test/Tiny-GGUF/tiny-Q4_K_M.gguf" and path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) >= 1
    assert download(SOURCE, tmp_path) == path and len(hub.requests) == 2  # cached: no second download


def test_a_pinned_checksum_wins(hub: FakeHub, tmp_path: Path) -> None:
    pinned = WeightsSource(SOURCE.hf_repo, SOURCE.hf_file, sha256="0" * 64)
    with pytest.raises(WeightsError, match="corrupt"):
        download(pinned, tmp_path)
    assert not list(tmp_path.rglob("*.gguf*")), "a corrupt download must not be left behind"


def test_a_corrupt_download_is_deleted(hub: FakeHub, tmp_path: Path) -> None:
    hub.advertised = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(WeightsError, match="SHA-256"):
        download(SOURCE, tmp_path)
    assert not list(tmp_path.rglob("*.gguf*"))


def test_a_missing_file_on_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="HTTP 404"):
        download(WeightsSource("meta-test/missing", "z.gguf"), tmp_path)


def test_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError, match="may be offline.*--weights PATH.gguf"):
        download(SOURCE, tmp_path)


def test_resolve_weights_prefers_the_given_file(tmp_path: Path) -> None:
    weights = tmp_path / "mine.gguf"
    weights.write_bytes(b"GGUF")
    assert resolve_weights(find_model("Llama-3.2-1B"), weights, tmp_path) == weights
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights(find_model("Llama-3.2-1B"), tmp_path / "missing.gguf", tmp_path)
    with pytest.raises(WeightsError, match="--upstream"):
        resolve_weights(find_model("Llama-3.2-90B-Vision-Instruct"), None, tmp_path)


def test_weights_that_are_not_a_gguf_file_are_refused_with_what_to_do(tmp_path: Path) -> None:
    model = find_model("Llama-3.2-1B")
    keys = tmp_path / "keys.env"
    keys.write_text("API_KEY=0123\n")
    with pytest.raises(WeightsError, match="is not a GGUF file.*convert"):
        resolve_weights(model, keys, tmp_path)
    with pytest.raises(WeightsError, match="is a directory"):
        resolve_weights(model, tmp_path, tmp_path)
    with pytest.raises(WeightsError, match="takes images.*--upstream"):
        resolve_weights(find_model("Llama-3.2-11B-Vision-Instruct"), keys, tmp_path)


def test_deploy_create_downloads_the_catalog_weights(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    argv = ["deploy", "create", "small", "--model", "Llama-3.2-1B", "--type", "managed", "--data-dir", str(home)]
    assert main([*argv, "--json"]) == 0
    weights = Path(json.loads(capsys.readouterr().out)["weights"])
    assert weights == home / "models/bartowski/Llama-3.2-1B-GGUF/Llama-3.2-1B-Q4_K_M.gguf"
    assert weights.read_bytes() == PAYLOAD


def test_deploy_create_offline_fails_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    argv = ["deploy", "create", "small", "--model", "Llama-3.2-1B", "--type", "managed", "--data-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "may be offline" in err and "--weights PATH.gguf" in err
    assert main(["deploy", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing half-created
