"""Real `llamafoundry serve` processes on loopback for the API tests (its own module, so that fixture modules
can import it without importing `conftest.py`, which imports them)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy

API_KEY = "0123456789abcdef0123456789abcdef"
MODEL_NAME = "tiny-llama"
SERVER_START_TIMEOUT_S = 90


@dataclass
class Server:
    url: str
    key: str
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(model: Path, log_dir: Path, *extra_args: str) -> Server:
    """`python -m llamafoundry serve` on a free loopback port; returns once GET /health answers 200."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    args = ["--model", str(model), "--port", str(port), "--api-key", API_KEY, "--name", MODEL_NAME,
            "--threads", "1", *extra_args]  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", API_KEY, MODEL_NAME, launch_serve(args, log_path), log_path)
    wait_healthy(server.url, server.process, log_path, SERVER_START_TIMEOUT_S)
    return server


def stop_server(server: Server) -> None:
    stop_process(server.process, timeout_s=20)
