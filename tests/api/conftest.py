"""API test fixtures: the app over a scripted fake service (unit tests), and real `llamafoundry serve`
processes on loopback serving the tiny random-weight GGUF (end-to-end tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.config import EngineSettings, ServeSettings
from tests.api.fakes import FakeChatService

API_KEY = "0123456789abcdef0123456789abcdef"
MODEL_NAME = "tiny-llama"
SERVER_START_TIMEOUT_S = 90


# ---- in-process app over a fake service ------------------------------------------------------------------


@pytest.fixture
def fake_service() -> FakeChatService:
    return FakeChatService(model_name=MODEL_NAME)


@pytest.fixture
def client(fake_service: FakeChatService) -> Iterator[TestClient]:
    """A TestClient (lifespan run) with the API key sent on every request."""
    settings = ServeSettings(
        engine=EngineSettings(model_path=Path("unused.gguf")), model_name=MODEL_NAME, api_key=API_KEY
    )
    with TestClient(create_app(fake_service, settings), headers={"api-key": API_KEY}) as test_client:
        yield test_client


# ---- real server processes -------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    key: str
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, log_dir: Path, *extra_args: str) -> Server:
    """`python -m llamafoundry serve` on a free loopback port; returns once GET /health answers 200."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    args = [
        sys.executable,
        "-m",
        "llamafoundry",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--api-key",
        API_KEY,
        "--name",
        MODEL_NAME,
        "--threads",
        "1",
        *extra_args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", API_KEY, MODEL_NAME, process, log_path)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    pytest.fail(f"the server did not become healthy in {SERVER_START_TIMEOUT_S} s:\n{server.log()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the session: 4 slots, 1024-token context."""
    running = start_server(tiny_model_path, tmp_path_factory.mktemp("server"), "--ctx-size", "1024", "--parallel", "4")
    yield running
    stop_server(running)
