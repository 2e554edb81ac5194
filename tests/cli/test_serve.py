"""`llamafoundry serve` as a user runs it: the embedded default model, the generated key, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import free_port, start_server, stop_server


def test_serve_without_arguments_serves_the_default_model_and_prints_a_key(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    args = [sys.executable, "-m", "llamafoundry", "serve", "--port", str(port), "--data-dir", str(tmp_path / "home")]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log_path)
        printed = log_path.read_text()
        key = re.search(r"API key[^:]*: ([0-9a-f]{32})\b", printed)
        assert key, printed
        assert url in printed and "ChatCompletionsClient" in printed and key.group(1) in printed
        info = httpx.get(f"{url}/info", headers={"api-key": key.group(1)}, timeout=10)
        assert info.status_code == 200
        assert info.json()["model_type"] == "chat-completions"
        assert httpx.get(f"{url}/info", headers={"api-key": "wrong"}, timeout=10).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def test_ctrl_c_lets_running_streams_end_and_exits_cleanly(tiny_model_path: Path, tmp_path: Path) -> None:
    server = start_server(tiny_model_path, tmp_path, "--ctx-size", "512", "--parallel", "2")
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
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert lines[-1] == "data: [DONE]", lines[-3:]  # the stream ended properly, it was not cut
        assert '"finish_reason":"length"' in lines[-2] and '"completion_tokens":400' in lines[-2]
        assert server.process.wait(timeout=30) == 0, server.log()
    finally:
        stop_server(server)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"serve did not become healthy:\n{log_path.read_text()}")
