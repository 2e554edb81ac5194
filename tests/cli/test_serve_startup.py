"""`llamafoundry serve` with a wrong setting: one sentence and exit status 2, before anything is printed that a
real start would print (the banner, a shown-once admin key); no traceback. They were 70-125-line tracebacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llamafoundry.platform.deployments import DeploymentSpec, create_deployment, regenerate_key
from llamafoundry.platform.keys import hash_key
from llamafoundry.platform.store import Store
from tests.api.test_entra import self_signed_cert
from tests.gguf_files import metadata_only_gguf
from tests.serve_process import free_port, launch_serve, stop_process


def fails_with(tmp_path: Path, *args: str) -> str:
    log_path = tmp_path / "serve.log"
    home = ["--data-dir", str(tmp_path)]
    process = launch_serve(["--no-default", "--port", str(free_port()), *home, *args], log_path)
    assert process.wait(timeout=60) == 2, log_path.read_text()
    printed = log_path.read_text()
    assert "Traceback" not in printed and not re.search(r"[0-9a-f]{32}", printed), printed
    return printed


def test_a_certificate_and_a_key_that_do_not_match(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, _ = self_signed_cert(tmp_path / "a")
    _, other_key = self_signed_cert(tmp_path / "b")
    printed = fails_with(tmp_path, "--tls-cert", str(cert), "--tls-key", str(other_key))
    assert "do not load" in printed and "its own private key" in printed


def test_a_jwks_that_is_not_a_key_set(tmp_path: Path) -> None:
    cert, _ = self_signed_cert(tmp_path)
    printed = fails_with(tmp_path, "--jwks", str(cert), "--token-issuer", "https://login.example/t")  # a PEM file:
    assert "--jwks" in printed and "JSON Web Key Set" in printed  # every token was refused without a word


def test_tokens_without_an_issuer(tmp_path: Path) -> None:
    """Any issuer's token (any tenant's, anyone's signing key in a shared JWKS) was accepted without one."""
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    printed = fails_with(tmp_path, "--jwks", str(tmp_path / "jwks.json"))
    assert "--jwks needs --token-issuer" in printed and "login.microsoftonline.com" in printed


@pytest.mark.parametrize(
    ("option", "url", "sentence"),
    [
        ("--redis-url", "redis://127.0.0.1:{port}/0", "Redis server for the rate limits cannot be reached"),
        ("--database-url", "postgresql://user:secret@127.0.0.1:{port}/db", "cannot be opened"),
    ],
)
def test_a_service_that_is_not_there(tmp_path: Path, option: str, url: str, sentence: str) -> None:
    printed = fails_with(tmp_path, option, url.format(port=free_port()))
    assert sentence in printed and "secret" not in printed, printed


@pytest.mark.parametrize("holder", ["deployment", "admin"])
def test_an_api_key_that_is_a_deployment_key_or_the_admin_key(
    tmp_path: Path, tiny_model_path: Path, holder: str
) -> None:
    """One key would open both the server's own model and the deployment (or the management API)."""
    home = tmp_path / "home"
    key = "K" * 32
    store = Store.open(home)
    if holder == "deployment":
        weights = metadata_only_gguf(tmp_path / "model.gguf")
        create_deployment(store, DeploymentSpec("chat", "Meta-Llama-3.1-8B-Instruct", weights=weights), home)
        regenerate_key(store, "chat", "secondary", key)
        expected = "already in use (deployment chat (secondary))"
    else:
        store.set_admin_key(hash_key(key))
        expected = "already in use (the admin key)"
    store.close()
    log_path = tmp_path / "serve.log"
    args = ["--data-dir", str(home), "--port", str(free_port()), "--api-key", key, "--model", str(tiny_model_path)]
    process = launch_serve(args, log_path)
    try:
        assert process.wait(timeout=60) == 2, log_path.read_text()
    finally:
        stop_process(process)  # one that started after all
    printed = " ".join(log_path.read_text().split())
    assert expected in printed and "--regenerate" in printed and "Traceback" not in printed, printed
    assert key not in printed


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("--kv-cache-type", "q8_0", "--flash-attn", "off"), "needs flash attention"),
        (("--prefix-cache-ram", "lots"), "is not a size"),
        (("--prefix-cache-disk", "3 bananas"), "is not a size"),
    ],
)
def test_kv_cache_options_that_cannot_work(tmp_path: Path, args: tuple[str, ...], sentence: str) -> None:
    printed = fails_with(tmp_path, *args)
    assert sentence in printed, printed
