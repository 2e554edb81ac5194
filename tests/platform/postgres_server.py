"""A real, throwaway PostgreSQL cluster on a free loopback port (`scripts/install-services.sh` installs the
binaries; tests are skipped with a message only where they are missing).

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user (`runuser`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_S = 60
SUPERUSER = "llamafoundry"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian keeps them off PATH
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and runuser is missing: PostgreSQL cannot be started as root")
    return [runuser, "-u", "postgres", "--", *args]


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a cluster (trust auth, loopback only) and yield a `postgresql://` URL of its `postgres` database."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (scripts/install-services.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="llamafoundry-pg-"))  # not under pytest's root-only tmp tree
    data, log = work / "data", work / "server.log"
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(work, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    try:
        subprocess.run(_as_owner([initdb, "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"]), **quiet)
        options = f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"]
        subprocess.run(_as_owner(start), **quiet)
    except subprocess.CalledProcessError as exc:
        details = log.read_text() if log.exists() else ""
        shutil.rmtree(work, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')}\n{details}")
    try:
        yield f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the cluster at `server_url`; returns its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


def wait_until(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
