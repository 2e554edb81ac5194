"""The catalog (the Llama family as Azure lists it), `models list/show`, and weight downloads with checksums
(against a hub on loopback: the real one is not reachable from tests)."""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamafoundry.cli import main
from llamafoundry.platform.catalog import CATALOG, MANAGED, SERVERLESS, UnknownModelError, WeightsSource, find_model
from llamafoundry.platform.hub import CHUNK_BYTES, DownloadCancelled
from llamafoundry.platform.weights import WeightsError, download, resolve_weights
from tests.gguf_files import metadata_only_gguf
from tests.platform.fake_hub import FakeHub, running_hub

AZURE_LLAMA_NAMES = {
    "Llama-3.2-1B", "Llama-3.2-1B-Instruct", "Llama-3.2-3B", "Llama-3.2-3B-Instruct", "Llama-Guard-3-1B",
    "Llama-Guard-3-11B-Vision", "Llama-3.2-11B-Vision-Instruct", "Llama-3.2-90B-Vision-Instruct",
    "Meta-Llama-3.1-8B", "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B", "Meta-Llama-3.1-70B-Instruct",
    "Meta-Llama-3.1-405B", "Meta-Llama-3.1-405B-Instruct", "Llama-3.3-70B-Instruct",
    "Llama-4-Scout-17B-16E-Instruct", "Llama-4-Maverick-17B-128E-Instruct-FP8",
}  # fmt: skip


def test_the_catalog_lists_the_azure_llama_family() -> None:
    assert {m.name for m in CATALOG} == AZURE_LLAMA_NAMES
    assert all(m.provider == "Meta" for m in CATALOG)
    assert {m.context_length for m in CATALOG if not m.name.startswith("Llama-4")} == {131072}
    assert find_model("Llama-4-Scout-17B-16E-Instruct").context_length == 10_485_760
    assert find_model("Llama-4-Maverick-17B-128E-Instruct-FP8").context_length == 1_048_576


def test_every_entry_has_its_card_text_and_licence() -> None:
    for model in CATALOG:
        assert model.description and model.intended_use and model.languages, model.name
        assert model.license_name.startswith("Llama ") and model.license_url.startswith("https://github.com/meta-llama/")
    assert "Thai" in find_model("Llama-3.3-70B-Instruct").languages
    assert "Vietnamese" in find_model("Llama-4-Scout-17B-16E-Instruct").languages
    assert find_model("Llama-3.3-70B-Instruct").license_name == "Llama 3.3 Community License"


def test_checksums_are_pinned_where_a_maintained_catalog_records_them() -> None:
    pinned = {m.name for m in CATALOG if m.weights is not None and m.weights.sha256}
    assert {"Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct", "Meta-Llama-3.1-8B-Instruct",
            "Meta-Llama-3.1-70B-Instruct", "Llama-3.3-70B-Instruct", "Llama-4-Scout-17B-16E-Instruct"} <= pinned
    for model in CATALOG:
        if model.weights is not None and model.weights.sha256:
            assert len(model.weights.sha256) == 64 and int(model.weights.sha256, 16) >= 0
    big = find_model("Meta-Llama-3.1-405B-Instruct").weights
    assert big is not None and big.hf_file.endswith("/")  # split in parts on the hub: a folder


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
    fields += ["description", "intended_use", "languages", "license_name", "license_url"]
    assert all(field in body for field in fields)
    assert body["weights"]["url"].endswith("/MaziyarPanahi/Meta-Llama-3.1-8B-Instruct-GGUF/resolve/main/"
                                           "Meta-Llama-3.1-8B-Instruct.Q4_K_M.gguf")  # fmt: skip
    assert body["weights"]["sha256"] == "c2f17f44af962660d1ad4cb1af91a731f219f3b326c2b14441f9df1f347f2815"
    assert main(["models", "show", "Meta-Llama-3.1-8B-Instruct"]) == 0
    assert "131072" in capsys.readouterr().out
    assert main(["models", "show", "nope"]) == 1
    assert "not in the catalog" in capsys.readouterr().err


# ---- downloads ---------------------------------------------------------------------------------------------

def _payload() -> bytes:
    """A GGUF whose metadata a deployment's memory check reads (Llama 3.1 8B's, no tensors), padded to ~1 MiB so
    that a download makes several progress callbacks."""
    with tempfile.TemporaryDirectory() as folder:
        return metadata_only_gguf(Path(folder) / "m.gguf").read_bytes() + bytes(range(256)) * 4096


PAYLOAD = _payload()
SOURCE = WeightsSource("meta-test/Tiny-GGUF", "tiny-Q4_K_M.gguf")
SOURCE_1B = "Llama-3.2-1B-Q4_K_M.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with running_hub() as state:
        state.add(SOURCE.hf_repo, SOURCE.hf_file, PAYLOAD)
        state.add("bartowski/Llama-3.2-1B-GGUF", "Llama-3.2-1B-Q4_K_M.gguf", PAYLOAD)
        monkeypatch.setenv("HF_ENDPOINT", state.url)
        yield state


def test_download_checks_the_hub_checksum_and_reports_progress(hub: FakeHub, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = download(SOURCE, tmp_path, lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "meta-test/Tiny-GGUF/tiny-Q4_K_M.gguf" and path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) >= 1
    assert download(SOURCE, tmp_path) == path and len(hub.requests) == 2  # cached: no second download
    assert not list(tmp_path.rglob("*.part*"))


def test_a_pinned_checksum_wins(hub: FakeHub, tmp_path: Path) -> None:
    pinned = WeightsSource(SOURCE.hf_repo, SOURCE.hf_file, sha256="0" * 64)
    with pytest.raises(WeightsError, match="corrupt"):
        download(pinned, tmp_path)
    assert not list(tmp_path.rglob("*.gguf*")), "a corrupt download must not be left behind"


def test_a_corrupt_download_is_deleted(hub: FakeHub, tmp_path: Path) -> None:
    hub.advertised[f"{SOURCE.hf_repo}/{SOURCE.hf_file}"] = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(WeightsError, match="SHA-256"):
        download(SOURCE, tmp_path)
    assert not list(tmp_path.rglob("*.gguf*"))


def test_a_missing_file_on_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="HTTP 404"):
        download(WeightsSource("meta-test/missing", "z.gguf"), tmp_path)


def test_an_interrupted_download_resumes_from_its_bytes_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    """The `.part` file was reopened with "wb": every interruption started the download from zero."""
    hub.drop_after = 300_000
    with pytest.raises(WeightsError, match="may be offline"):
        download(SOURCE, tmp_path)
    part = tmp_path / SOURCE.hf_repo / (SOURCE.hf_file + ".part")
    assert part.stat().st_size == 300_000
    path = download(SOURCE, tmp_path)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert hub.blob_requests() == [None, "bytes=300000-"]  # the second request asked only for the rest


def test_a_hub_that_ignores_the_range_or_a_changed_file_starts_over(hub: FakeHub, tmp_path: Path) -> None:
    hub.drop_after = 100_000
    with pytest.raises(WeightsError):
        download(SOURCE, tmp_path)
    hub.ignores_ranges = True
    assert download(SOURCE, tmp_path).read_bytes() == PAYLOAD  # the 200 replaced the part, no duplicate bytes
    other = WeightsSource(SOURCE.hf_repo, "other.gguf")
    hub.add(other.hf_repo, other.hf_file, PAYLOAD)
    hub.ignores_ranges, hub.drop_after = False, 50_000
    with pytest.raises(WeightsError):
        download(other, tmp_path)
    hub.add(other.hf_repo, other.hf_file, b"GGUF" + bytes(500_000))  # the file changed on the hub meanwhile
    assert download(other, tmp_path).read_bytes() == b"GGUF" + bytes(500_000)


def test_a_cancelled_download_keeps_its_bytes_and_resumes(hub: FakeHub, tmp_path: Path) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= 2 * CHUNK_BYTES // 4:
            cancel.set()

    big = WeightsSource(SOURCE.hf_repo, "big.gguf")
    hub.add(big.hf_repo, big.hf_file, b"GGUF" + bytes(5 * CHUNK_BYTES))
    with pytest.raises(DownloadCancelled):
        download(big, tmp_path, progress, cancel)
    kept = (tmp_path / big.hf_repo / "big.gguf.part").stat().st_size
    assert 0 < kept < 5 * CHUNK_BYTES
    assert download(big, tmp_path).stat().st_size == 5 * CHUNK_BYTES + 4
    assert hub.blob_requests()[-1] == f"bytes={kept}-"


def test_split_files_are_downloaded_whole_from_a_folder_and_the_first_part_is_loaded(
    hub: FakeHub, tmp_path: Path
) -> None:
    repo, folder = "meta-test/Big-GGUF", "Big-Q4_K_M"
    parts = [b"GGUF" + bytes([i]) * 200_000 for i in range(3)]
    for i, payload in enumerate(parts, start=1):
        hub.add(repo, f"{folder}/Big-Q4_K_M-{i:05d}-of-00003.gguf", payload)
    seen: list[tuple[int, int | None]] = []
    first = download(WeightsSource(repo, f"{folder}/"), tmp_path, lambda d, t: seen.append((d, t)))
    assert first.name == "Big-Q4_K_M-00001-of-00003.gguf"
    assert [p.read_bytes() for p in sorted(first.parent.glob("*.gguf"))] == parts
    assert seen[-1] == (sum(map(len, parts)), sum(map(len, parts)))  # progress over all the parts
    by_first_part = download(WeightsSource(repo, f"{folder}/Big-Q4_K_M-00001-of-00003.gguf"), tmp_path)
    assert by_first_part == first


def test_a_split_file_with_a_missing_part_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    repo = "meta-test/Broken-GGUF"
    hub.add(repo, "Q/Broken-00001-of-00002.gguf", b"GGUF")
    with pytest.raises(WeightsError, match="not one complete split GGUF"):
        download(WeightsSource(repo, "Q/"), tmp_path)


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
    argv = ["deploy", "create", "small", "--model", "Llama-3.2-1B", "--type", "managed", "--data-dir", str(home),
            "--create"]
    assert main([*argv, "--json", "--wait"]) == 0  # no server: --wait downloads here
    assert json.loads(capsys.readouterr().out)["status"]["state"] == "downloading"
    assert main(["deploy", "show", "small", "--json", "--data-dir", str(home)]) == 0
    weights = Path(json.loads(capsys.readouterr().out)["weights"])
    assert weights == home / "models/bartowski/Llama-3.2-1B-GGUF/Llama-3.2-1B-Q4_K_M.gguf"
    assert weights.read_bytes() == PAYLOAD


def test_deploy_create_offline_fails_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    argv = ["deploy", "create", "small", "--model", "Llama-3.2-1B", "--type", "managed", "--data-dir", str(tmp_path)]
    assert main([*argv, "--wait"]) == 1
    err = capsys.readouterr().err
    assert "may be offline" in err and "--weights PATH.gguf" in err
    url = f"http://127.0.0.1:9/bartowski/Llama-3.2-1B-GGUF/resolve/main/{SOURCE_1B}"
    assert f"huggingface-cli download bartowski/Llama-3.2-1B-GGUF {SOURCE_1B} --local-dir ." in err.replace("\n", "")
    assert f"curl -L -o {SOURCE_1B} {url}" in err.replace("\n", "")
    assert main(["deploy", "show", "small", "--json", "--data-dir", str(tmp_path)]) == 0
    status = json.loads(capsys.readouterr().out)["status"]  # the deployment stays, failed with the reason
    assert status["state"] == "failed" and "may be offline" in status["error"]
