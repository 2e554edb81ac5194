"""Starting and stopping real `llamafoundry serve` processes for end-to-end tests (one implementation for all)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

TEST_SEED = "20261207"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_serve(args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`python -m llamafoundry serve ARGS`, stdout and stderr into `log_path`; `env` added to the environment.

    Requests that send no seed sample with `TEST_SEED` (`serve --seed`, which the gateway passes to its replicas):
    a random-weight model writes random tokens from the whole vocabulary, and now and then they end
    early (an end-of-text token) or read as harmful to the content filter (" burn SEX"), which failed tests that
    expect a full answer at random. Seeded, a test's request gets the same answer every run."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "LLAMAFOUNDRY_SEED": TEST_SEED, **(env or {})}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "llamafoundry", "serve", *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )


def wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    """Poll GET /health until 200; fail the test with the server's log if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2, verify=False).status_code == 200:
                return
        time.sleep(0.2)
    stop_process(process)
    pytest.fail(f"serve did not become healthy in {timeout_s} s:\n{log_path.read_text(errors='replace')}")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Ctrl-C, as a user stops the server; kill only if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
