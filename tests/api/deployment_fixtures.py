"""Helpers for the platform's end-to-end tests: `deploy` through the real CLI, `serve` processes over a data
directory (HTTP or HTTPS), and polling for changes a running server must pick up."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamafoundry.cli import main
from tests.api.servers import API_KEY
from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy

START_TIMEOUT_S = 120
PICKUP_S = 2.0  # a running server must see store changes within this


def cli_json(home: Path, *argv: str) -> Any:
    """Run `llamafoundry <argv> --json --data-dir home` in-process; its JSON output."""
    out = io.StringIO()
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json", "--data-dir", str(home)])
    assert code == 0, f"llamafoundry {' '.join(argv)} exited with {code}"
    return json.loads(out.getvalue())


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def start_gateway(home: Path, model: Path, *extra: str, tls: tuple[Path, Path] | None = None) -> Gateway:
    """`llamafoundry serve` over data directory `home` (its own model: `model`, key API_KEY)."""
    port = free_port()
    log_path = home / f"serve-{port}.log"
    home.mkdir(parents=True, exist_ok=True)
    args = ["--data-dir", str(home), "--model", str(model), "--name", "tiny-llama", "--api-key", API_KEY,
            "--port", str(port), "--threads", "1", "--ctx-size", "1024", "--parallel", "2", *extra]  # fmt: skip
    scheme = "http"
    if tls is not None:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        scheme = "https"
    gateway = Gateway(f"{scheme}://127.0.0.1:{port}", launch_serve(args, log_path), log_path, home)
    wait_healthy(gateway.url, gateway.process, log_path, START_TIMEOUT_S)
    return gateway


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `check` until it is true; returns the seconds it took. Fails after `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - started


def chat(url: str, key: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, **body}
    return httpx.post(url, json=payload, headers={"api-key": key, **(headers or {})}, timeout=60, verify=False)


def wait_ready(url: str, key: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until a deployment (whose replicas load in the background) answers a chat request with 200."""
    wait_for(lambda: chat(url, key).status_code == 200, timeout_s, f"{url} answering 200")
