"""Engine replicas of a local deployment: each its own `llamafoundry serve --replica` process on a loopback port.

The gateway forwards to them as to any upstream (`UpstreamChatService`), balancing by requests in flight. Each
replica serves only its model (no deployments, no management, no content safety or rate limits: the gateway
applies those), with a key generated for this set and handed over in the environment, never on the command
line. Replicas are forked from a process that has their imports done (`replica_process.py`), die with the
gateway, and are restarted the moment they exit: a replica's exit wakes its watcher at once (no polling), the
new process needs no imports, and its /health is polled every 50 ms, so it is back in its model's load time plus
a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llamafoundry import logs
from llamafoundry.config import generate_api_key
from llamafoundry.hardware.decode_check import explain_exit
from llamafoundry.platform.replica_process import ReplicaProcess, spawn_replica
from llamafoundry.platform.sizing import Sizing
from llamafoundry.platform.store import iso_time

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0
HEALTH_INTERVAL_S = 0.05  # a loopback GET a replica answers at once, loading or not
RESTART_BACKOFF_S = (1.0, 30.0)  # after a restart that failed: wait, doubling up to the second value
STOP_TIMEOUT_S = 15.0
API_KEY_ENV = "LLAMAFOUNDRY_API_KEY"
MODEL_LOAD_FAILED = "model_load_failed"  # the error code of a replica's /health when its model did not load


@dataclass
class ReplicaSpec:
    """What every replica of one deployment runs."""

    name: str  # the deployment, for logs
    weights_path: Path
    model_name: str
    model_provider: str
    num_replicas: int
    sizing: Sizing
    log_dir: Path | None = None
    prefix_cache_ram: int | None = None  # bytes of each replica's host-memory tier (None: the replica's default)
    prefix_cache_dir: Path | None = None  # the disk tier every replica shares
    prefix_cache_disk: int | None = None
    seed: int | None = None  # the gateway's `--seed`: the sampling seed of requests that send none

    def kv_cache_options(self) -> list[str]:
        """`serve` options of the KV cache and its prefix-cache tiers."""
        options = ["--kv-cache-type", self.sizing.kv_cache_type]
        if self.prefix_cache_ram is not None:
            options += ["--prefix-cache-ram", str(self.prefix_cache_ram)]
        if self.prefix_cache_dir is not None:
            options += ["--prefix-cache-dir", str(self.prefix_cache_dir)]
        if self.prefix_cache_disk is not None:
            options += ["--prefix-cache-disk", str(self.prefix_cache_disk)]
        return options


@dataclass
class Replica:
    index: int
    port: int
    process: ReplicaProcess | None = None
    is_healthy: bool = False
    log_path: Path | None = None
    num_restarts: int = 0
    last_exit: str | None = None  # how the process last ended on its own (a crash), as a sentence
    last_exit_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ReplicaSet:
    """Starts, watches and stops the replica processes of one deployment (an `UpstreamProvider`)."""

    spec: ReplicaSpec
    api_key: str = field(default_factory=generate_api_key)
    replicas: list[Replica] = field(default_factory=list)
    _watchers: list[asyncio.Task[None]] = field(default_factory=list)
    _is_stopping: bool = False
    sizes_itself = False  # the replicas run with the deployment's sizes

    @property
    def is_ready(self) -> bool:
        return any(r.is_healthy for r in self.replicas)

    async def start(self) -> tuple[list[str], str | None]:
        """Launch every replica and wait until each answers /health; returns their URLs and key."""
        self.replicas = [Replica(i, _free_port()) for i in range(self.spec.num_replicas)]
        await asyncio.gather(*(self._launch(r) for r in self.replicas))
        waiting = asyncio.gather(*(self._wait_healthy(r) for r in self.replicas))
        try:
            await asyncio.wait_for(waiting, START_TIMEOUT_S)
        except BaseException:  # a replica failed, the timeout, or the deployment was deleted while starting
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting  # its outcome is retrieved here, not logged later as "never retrieved"
            await self.stop()
            raise
        self._watchers = [asyncio.create_task(self._watch(r)) for r in self.replicas]
        return [r.url for r in self.replicas], self.api_key

    async def stop(self) -> None:
        self._is_stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await asyncio.gather(*(_terminate(r) for r in self.replicas))

    def status(self) -> dict[str, Any]:
        """The replicas, for the deployment's runtime status (`UpstreamProvider.status`)."""
        replicas = [
            {"index": r.index, "url": r.url, "pid": r.process.pid if r.process else None, "healthy": r.is_healthy,
             "restarts": r.num_restarts, "last_exit": r.last_exit,
             "last_exit_at": iso_time(r.last_exit_at) if r.last_exit_at else None}
            for r in self.replicas
        ]  # fmt: skip
        return {"replicas": replicas, "sizing": self.spec.sizing.as_dict()}

    def failure_note(self) -> str | None:
        """Why requests may be failing: the newest crash of a replica that is not healthy again, or None."""
        crashed = [r for r in self.replicas if not r.is_healthy and r.last_exit is not None]
        if not crashed:
            return None
        latest = max(crashed, key=lambda r: r.last_exit_at or 0.0)
        return (
            f"Replica {latest.index} of deployment '{self.spec.name}' {latest.last_exit} It is being restarted; "
            "retry in a few seconds."
        )

    def attach(self, client: Any) -> None:
        """Nothing to watch through the client: the replicas' own processes say when one fails."""
        return None

    async def _launch(self, replica: Replica) -> None:
        spec = self.spec
        argv = [
            "serve", "--replica",
            "--model", str(spec.weights_path),
            "--name", spec.model_name,
            "--provider", spec.model_provider,
            "--host", "127.0.0.1",
            "--port", str(replica.port),
            *spec.sizing.serve_options(),
            *spec.kv_cache_options(),
            *(["--seed", str(spec.seed)] if spec.seed is not None else []),
        ]  # fmt: skip
        argv += logs.current_options()  # the gateway's log level and format: one format across the processes
        spawning = asyncio.ensure_future(spawn_replica(argv, {API_KEY_ENV: self.api_key}, log_path(spec, replica)))
        try:
            replica.process = await asyncio.shield(spawning)
        except asyncio.CancelledError:  # the set is stopping: let the fork finish, so that stop() can end it
            replica.process = await spawning
            raise
        logger.info("deployment %s: replica %d started (pid %d, port %d)", spec.name, replica.index,
                    replica.process.pid, replica.port)  # fmt: skip

    async def _wait_healthy(self, replica: Replica) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if replica.process is not None and replica.process.returncode is not None:
                    raise RuntimeError(
                        f"replica {replica.index} of deployment {self.spec.name} exited with "
                        f"{replica.process.returncode} while loading; see {replica.log_path}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    health = await http.get(replica.url + "/health")
                    if health.status_code == 200:
                        replica.is_healthy = True
                        return
                    if _error_code(health) == MODEL_LOAD_FAILED:  # it stays up answering 503: no use waiting
                        raise RuntimeError(
                            f"replica {replica.index} of deployment {self.spec.name} could not load "
                            f"{self.spec.weights_path}: {_error_message(health)} (log: {replica.log_path or 'none'})"
                        )
                await asyncio.sleep(HEALTH_INTERVAL_S)

    async def _watch(self, replica: Replica) -> None:
        """Restart the replica the moment it exits (a crash, the OOM killer), for as long as the set runs."""
        backoff_s = 0.0
        while not self._is_stopping:
            assert replica.process is not None
            returncode = await replica.process.wait()
            exited = time.monotonic()
            replica.is_healthy = False
            replica.num_restarts += 1
            replica.last_exit = explain_exit(returncode, "while serving")
            replica.last_exit_at = time.time()
            logger.warning("deployment %s: replica %d %s; restarting", self.spec.name, replica.index,
                           replica.last_exit)  # fmt: skip
            await asyncio.sleep(backoff_s)
            try:
                await self._launch(replica)
                forked = time.monotonic()
                await asyncio.wait_for(self._wait_healthy(replica), START_TIMEOUT_S)
            except (OSError, RuntimeError, TimeoutError):
                logger.exception("deployment %s: replica %d did not come back", self.spec.name, replica.index)
                backoff_s = min(max(2 * backoff_s, RESTART_BACKOFF_S[0]), RESTART_BACKOFF_S[1])
                continue
            backoff_s = 0.0
            now = time.monotonic()
            logger.info("deployment %s: replica %d serves again, %.2f s after it exited (forked in %.2f s, healthy "
                        "%.2f s later)", self.spec.name, replica.index, now - exited, forked - exited,
                        now - forked)  # fmt: skip



def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"its /health answered {response.status_code}"


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def log_path(spec: ReplicaSpec, replica: Replica) -> Path | None:
    """Where a replica's output goes (appended; the folder and file readable by the server's user only), or None
    (discarded) without a log_dir."""
    if spec.log_dir is None:
        return None
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    spec.log_dir.chmod(0o700)  # logs hold prompts in tracebacks: the server's user only
    replica.log_path = spec.log_dir / f"{spec.name}-{replica.index}.log"
    return replica.log_path


async def _terminate(replica: Replica) -> None:
    process = replica.process
    replica.is_healthy = False
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGINT)  # uvicorn drains in-flight requests on SIGINT
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
