"""`serve --tls auto`: HTTPS with a local CA, so the SDKs' own samples run unchanged but for the endpoint (the JS
SDK refuses to send a key over plain http; the SDKs send bearer tokens only over https)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from llamafoundry.platform.tls import ensure_local_tls, served_names
from tests.api.conftest import API_KEY
from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy

pytestmark = pytest.mark.slow
JS_DIR = Path(__file__).resolve().parents[1] / "js"


@dataclass
class TlsServer:
    url: str
    ca: Path
    home: Path
    process: subprocess.Popen[bytes]
    log: Path


def start(home: Path, model: Path) -> TlsServer:
    port, log = free_port(), home / f"serve-{free_port()}.log"
    home.mkdir(parents=True, exist_ok=True)
    process = launch_serve(["--model", str(model), "--tls", "auto", "--port", str(port), "--api-key", API_KEY,
                            "--data-dir", str(home), "--threads", "1", "--ctx-size", "512", "--parallel", "2",
                            # the random model's text is now and then classified as harmful: the filter's tests
                            # test that; the samples here must end with "stop" or "length"
                            "--content-safety", "off"],
                           log)  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    wait_healthy(url, process, log, 120)
    return TlsServer(url, home / "tls" / "ca.pem", home, process, log)


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    running = start(tmp_path_factory.mktemp("tls-home"), tiny_model_path)
    yield running
    stop_process(running.process)


def test_the_server_answers_https_with_a_certificate_its_ca_vouches_for(server: TlsServer) -> None:
    answer = httpx.post(f"{server.url}/chat/completions", verify=ssl.create_default_context(cafile=server.ca),
                        headers={"api-key": API_KEY}, json={"messages": [{"role": "user", "content": "Hi"}],
                                                            "max_tokens": 3}, timeout=60)  # fmt: skip
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["role"] == "assistant"
    with pytest.raises(httpx.ConnectError):  # without the CA, TLS verification fails: it is a real check
        httpx.get(f"{server.url}/health", timeout=10)
    banner = server.log.read_text()
    assert f"NODE_EXTRA_CA_CERTS={server.ca}" in banner and f"SSL_CERT_FILE={server.ca}" in banner
    assert f"at {server.url}" in banner  # the banner names the https URL


def test_the_python_sdk_sample_runs_unchanged_with_the_ca_in_the_environment(server: TlsServer) -> None:
    sample = (
        "import os\n"
        "from azure.ai.inference import ChatCompletionsClient\n"
        "from azure.ai.inference.models import UserMessage\n"
        "from azure.core.credentials import AzureKeyCredential\n"
        "client = ChatCompletionsClient(endpoint=os.environ['AZURE_AI_CHAT_ENDPOINT'],"
        " credential=AzureKeyCredential(os.environ['AZURE_AI_CHAT_KEY']))\n"
        "response = client.complete(messages=[UserMessage('How many feet are in a mile?')], max_tokens=8)\n"
        "print(response.choices[0].finish_reason.value)\n"
    )
    env = {**os.environ, "AZURE_AI_CHAT_ENDPOINT": server.url, "AZURE_AI_CHAT_KEY": API_KEY,
           "REQUESTS_CA_BUNDLE": str(server.ca), "SSL_CERT_FILE": str(server.ca)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", sample], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() in ("stop", "length"), done.stderr


def test_the_js_sdk_sample_runs_unchanged_with_node_extra_ca_certs(server: TlsServer) -> None:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@azure-rest" / "ai-inference").is_dir():
        pytest.skip("Node.js and the JS SDK packages (make test installs them) are needed")
    env = {**os.environ, "AZURE_AI_CHAT_ENDPOINT": server.url, "AZURE_AI_CHAT_KEY": API_KEY,
           "NODE_EXTRA_CA_CERTS": str(server.ca)}  # fmt: skip
    done = subprocess.run([node, "sample.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["finish_reason"] in ("stop", "length")
    untrusted = {k: v for k, v in env.items() if k != "NODE_EXTRA_CA_CERTS"}
    refused = subprocess.run([node, "sample.mjs"], cwd=JS_DIR, env=untrusted, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert refused.returncode != 0  # the sample trusts nothing it was not told to


def test_a_restart_reuses_the_ca_and_the_certificate(server: TlsServer, tiny_model_path: Path) -> None:
    before = (server.ca.read_bytes(), (server.home / "tls" / "server.pem").read_bytes())
    stop_process(server.process)
    again = start(server.home, tiny_model_path)
    server.process, server.url, server.log = again.process, again.url, again.log
    assert (server.ca.read_bytes(), (server.home / "tls" / "server.pem").read_bytes()) == before
    assert (server.home / "tls" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert httpx.get(f"{server.url}/health", verify=ssl.create_default_context(cafile=server.ca)).status_code == 200


def test_the_server_certificate_is_issued_again_for_new_names_or_near_its_end(tmp_path: Path) -> None:
    first = ensure_local_tls(tmp_path, "127.0.0.1")
    serial = x509.load_pem_x509_certificate(first.server_cert.read_bytes()).serial_number
    same = ensure_local_tls(tmp_path, "127.0.0.1")
    assert x509.load_pem_x509_certificate(same.server_cert.read_bytes()).serial_number == serial
    renamed = ensure_local_tls(tmp_path, "llm.internal.example")
    cert = x509.load_pem_x509_certificate(renamed.server_cert.read_bytes())
    assert cert.serial_number != serial
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "llm.internal.example" in sans.get_values_for_type(x509.DNSName)
    late = dt.datetime.now(dt.UTC) + dt.timedelta(days=390)
    renewed = ensure_local_tls(tmp_path, "llm.internal.example", now=late)
    assert x509.load_pem_x509_certificate(renewed.server_cert.read_bytes()).serial_number != cert.serial_number
    assert renewed.ca_cert.read_bytes() == first.ca_cert.read_bytes()  # the CA lasts ten years: clients keep it


def test_served_names_cover_loopback_and_the_host_but_not_a_wildcard_address() -> None:
    assert {"localhost", "127.0.0.1", "::1", "llm.example"} <= set(served_names("llm.example"))
    assert "0.0.0.0" not in served_names("0.0.0.0")
