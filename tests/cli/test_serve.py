"""`llamafoundry serve` as a user runs it: the embedded default model, the generated key, Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import start_server, stop_server
from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy


def test_serve_without_arguments_serves_the_demo_model_and_prints_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh machine: no data directory yet (the default one is made), no config file."""
    monkeypatch.delenv("LLAMAFOUNDRY_DATA_DIR")  # the suite's own (tests/conftest.py): here the default is tested
    port = free_port()
    log_path = tmp_path / "serve.log"
    process = launch_serve(["--port", str(port)], log_path, env={"HOME": str(tmp_path / "user")})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log_path, timeout_s=120)
        assert (tmp_path / "user" / ".llamafoundry" / "llamafoundry.db").is_file()
        printed = log_path.read_text()
        key = re.search(r"API key[^:]*: ([0-9a-f]{32})\b", printed)
        assert key, printed
        assert url in printed and "ChatCompletionsClient" in printed and key.group(1) in printed
        info = httpx.get(f"{url}/info", headers={"api-key": key.group(1)}, timeout=10)
        assert info.json() == {
            "model_name": "llamafoundry-demo",
            "model_type": "chat-completions",
            "model_provider_name": "llamafoundry",
        }
        body = {"messages": [{"role": "user", "content": "Hi, who are you?"}], "temperature": 0, "max_tokens": 96}
        reply = httpx.post(f"{url}/chat/completions", json=body, headers={"api-key": key.group(1)}, timeout=60)
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and "llamafoundry" in choice["message"]["content"]
        assert httpx.get(f"{url}/info", headers={"api-key": "wrong"}, timeout=10).status_code == 401
        too_long = httpx.post(f"{url}/chat/completions", json={**body, "max_tokens": 1000},
                              headers={"api-key": key.group(1)}, timeout=60)  # fmt: skip
        assert "holds 512 tokens" in too_long.json()["error"]["message"]  # the model's own context
    finally:
        stop_process(process)


def test_ctrl_c_lets_running_streams_end_and_exits_cleanly(tiny_model_path: Path, tmp_path: Path) -> None:
    # a grace period the 400 tokens always fit in, however loaded the machine (it took ~9 s of the default 10 s)
    options = ("--ctx-size", "512", "--parallel", "2", "--shutdown-timeout", "180")
    server = start_server(tiny_model_path, tmp_path, *options)
    lines: list[str] = []
    first_chunk = threading.Event()

    def read_stream() -> None:
        body = {"messages": [{"role": "user", "content": "Go"}], "stream": True, "max_tokens": 400, "ignore_eos": True}
        headers = {"api-key": server.key, "extra-parameters": "pass-through"}
        with httpx.stream("POST", f"{server.url}/chat/completions", json=body, headers=headers, timeout=60) as reply:
            for line in reply.iter_lines():
                if line:
                    lines.append(line)
                    first_chunk.set()

    reader = threading.Thread(target=read_stream)
    reader.start()
    try:
        assert first_chunk.wait(30), server.log()
        server.process.send_signal(signal.SIGINT)
        reader.join(timeout=170)
        assert not reader.is_alive()
        assert lines[-1] == "data: [DONE]", lines[-3:]  # the stream ended properly, it was not cut
        assert '"finish_reason":"length"' in lines[-2] and '"completion_tokens":400' in lines[-2]
        assert server.process.wait(timeout=30) == 0, server.log()
    finally:
        stop_server(server)


def test_requests_still_running_at_the_shutdown_timeout_end_with_errors(tiny_model_path: Path, tmp_path: Path) -> None:
    """They used to run on until uvicorn cancelled them: the stream cut mid-body, the plain answer a text/plain 500.
    Now a stream ends with an error chunk and a waiting answer is a 503 to retry; then the server exits."""
    server = start_server(tiny_model_path, tmp_path, "--ctx-size", "8192", "--parallel", "2", "--shutdown-timeout", "2")
    body = {"messages": [{"role": "user", "content": "Go"}], "max_tokens": 8000, "ignore_eos": True}
    headers = {"api-key": server.key, "extra-parameters": "pass-through"}
    lines: list[str] = []
    plain: list[httpx.Response] = []
    first_chunk = threading.Event()

    def read_stream() -> None:
        stream_body = {**body, "stream": True}
        with httpx.stream("POST", f"{server.url}/chat/completions", json=stream_body, headers=headers,
                          timeout=60) as reply:  # fmt: skip
            for line in reply.iter_lines():
                if line:
                    lines.append(line)
                    first_chunk.set()

    def ask() -> None:
        plain.append(httpx.post(f"{server.url}/chat/completions", json=body, headers=headers, timeout=60))

    clients = [threading.Thread(target=read_stream), threading.Thread(target=ask)]
    for client in clients:
        client.start()
    try:
        assert first_chunk.wait(30), server.log()
        time.sleep(0.5)  # the plain request is running too
        server.process.send_signal(signal.SIGINT)
        for client in clients:
            client.join(timeout=30)
            assert not client.is_alive()
        assert '"code":"ServiceUnavailable"' in lines[-1] and "shutting down" in lines[-1], lines[-2:]
        (answer,) = plain
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
        assert answer.json()["error"]["code"] == "ServiceUnavailable"
        assert server.process.wait(timeout=30) == 0, server.log()
        assert "Traceback" not in server.log()
    finally:
        stop_server(server)


def test_serve_with_flash_attention_off_answers(tiny_model_path: Path, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    args = ["--model", str(tiny_model_path), "--port", str(port), "--api-key", "k" * 32, "--flash-attn", "off"]
    process = launch_serve([*args, "--data-dir", str(tmp_path), "--content-safety", "off"], log_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log_path, timeout_s=120)
        body = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 8}
        reply = httpx.post(f"{url}/chat/completions", json=body, headers={"api-key": "k" * 32}, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] >= 1
    finally:
        stop_process(process)


def test_a_port_in_use_fails_at_once_and_prints_no_key(tmp_path: Path) -> None:
    """It printed the banner, with a new admin key shown only once, and then failed to bind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log_path = tmp_path / "serve.log"
        process = launch_serve(["--port", str(port), "--data-dir", str(tmp_path)], log_path)
        assert process.wait(timeout=60) == 2
    printed = log_path.read_text()
    assert f"Cannot listen on 127.0.0.1:{port}" in printed and "--port N" in printed, printed
    assert not re.search(r"[0-9a-f]{32}", printed), printed  # neither the API key nor an admin key


def test_the_default_context_is_the_models_own(tmp_path: Path) -> None:
    """The demo model was trained for 512 tokens; serve gave it 4096 (the cap) because a vocabulary-only load
    reports a trained context of 0."""
    from llamafoundry.model.demo import demo_model_path
    from llamafoundry.model.llamacpp import LlamaCppVocab

    vocab = LlamaCppVocab(demo_model_path())
    try:
        assert vocab.n_ctx_train() == 512
    finally:
        vocab.close()
