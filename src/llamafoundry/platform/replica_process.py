"""Replica processes forked from a server process that has already imported what a replica runs.

A replica is `llamafoundry serve --replica`. Started as a new Python process it spends most of its start on
imports (FastAPI, pydantic, SQLAlchemy, numpy, llama_cpp: about 1 s on an idle core, 10 s measured on a loaded
2-core machine), which is most of the time a crashed replica is away. So replicas come from a fork server
(Python's `multiprocessing` "forkserver"): one process per gateway, started with the first replica, that imports
those modules once and forks a child per replica. A child has everything imported; it only parses its arguments,
loads its model and listens.

A child behaves as the `serve --replica` process it replaces: its output goes to its log file, its key comes in
the environment (never a command line), and it gets SIGTERM when the gateway dies (the fork server exits with
the gateway: every replica lets go of the pipe that keeps it alive, and asks the kernel for a signal when its
parent, the fork server, dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import setproctitle

# What `serve --replica` imports before it loads its model (the command-line modules themselves are light, and
# are left out so that their console sees the replica's log, not the gateway's terminal).
PRELOAD = [
    "numpy",
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "llamafoundry.api.app",
    "llamafoundry.engine.factory",
    "llamafoundry.service.chat",
    "llamafoundry.settings",  # pydantic-settings and the options' classes: ~75 ms a replica need not spend again
]

_context: multiprocessing.context.ForkServerContext | None = None


def _fork_server() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _context = context
    return _context


class ReplicaProcess:
    """One forked replica, with the parts of `asyncio.subprocess.Process` the replica set uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited (negative: the signal that ended it), else None."""
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # never signal a pid that may already belong to another process
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Its exit status, as soon as it exits (the fork server reports it on a pipe the event loop watches)."""
        loop = asyncio.get_running_loop()
        sentinel = self._process.sentinel
        while self.returncode is None:
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sentinel, _resolve, exited)
            try:
                await exited
            finally:
                loop.remove_reader(sentinel)
        code = self.returncode
        assert code is not None
        return code


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def spawn_replica(argv: Sequence[str], env: Mapping[str, str], log_path: Path | None) -> ReplicaProcess:
    """Fork `llamafoundry <argv>` from the fork server (started, and its imports done, on the first call: seconds;
    later calls take milliseconds), with `env` added to its environment and its output appended to `log_path`."""
    process = _fork_server().Process(
        target=_run_replica, args=(list(argv), dict(env), str(log_path) if log_path else None), daemon=True
    )
    await asyncio.to_thread(process.start)
    return ReplicaProcess(process)


def _run_replica(argv: list[str], env: dict[str, str], log_path: str | None) -> None:
    """In the forked child: become the `llamafoundry <argv>` process."""
    _follow_the_gateway()
    _redirect_output(log_path)
    os.environ.update(env)
    setproctitle.setproctitle(" ".join([sys.executable, "-m", "llamafoundry", *argv]))  # what `ps` shows, as before
    from llamafoundry.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.exit(code)


def _follow_the_gateway() -> None:
    """Die with the gateway: close this child's copy of the pipe whose end tells the fork server its gateway is
    gone (it then exits), and ask for SIGTERM when the fork server dies."""
    server = multiprocessing.forkserver._forkserver
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        setattr(server, "_forkserver_alive_fd", None)  # noqa: B010 (a private attribute of the stdlib's server)
    if sys.platform.startswith("linux"):
        parent = os.getppid()
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the fork server died before the request took effect
            os._exit(1)


def _redirect_output(log_path: str | None) -> None:
    """stdout and stderr (the file descriptors: llama.cpp writes there too) into the log, line by line."""
    if log_path is None:
        fd = os.open(os.devnull, os.O_WRONLY)
    else:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
