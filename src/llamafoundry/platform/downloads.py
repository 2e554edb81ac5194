"""Weight downloads as background jobs: `deploy create` stores the deployment and a download job and returns at
once; the server that owns the deployments (the gateway, `DownloadWorker`) downloads the weights, writing its
progress to the job's row, where `deploy show`, the management API and the portal read it.

A job is `downloading` (waiting for a server, or running on one), `failed` (the reason: offline, a checksum
mismatch, a full disk, weights too large for the memory) or `cancelled`; once the weights are there the row is
deleted and the deployment's `weights_path` set, in one transaction, so the gateways start its replicas.

- **One downloader.** A server takes a job with a lease on its row (`owner`, `lease_until`), renewed every poll;
  several servers on one data directory (or database) never download the same job twice. A server that stops
  releases its leases; one that dies loses them after LEASE_S, and another (or the next `serve`) takes over.
- **Resumable.** Cancelling, a server stopping or a dropped connection keep the bytes in the `.part` file
  (`platform.hub`): a resumed job continues with a `Range` request.

Progress writes do not bump the store revision (they are not configuration; servers do not reload on them).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from llamafoundry.platform import sizing
from llamafoundry.platform.catalog import WeightsSource, find_instance_type
from llamafoundry.platform.errors import DeploymentConflict, DeploymentError, DeploymentNotFound
from llamafoundry.platform.hub import DownloadCancelled, HubError
from llamafoundry.platform.store import Store, deployments, metadata
from llamafoundry.platform.weights import download

logger = logging.getLogger(__name__)

DOWNLOADING, FAILED, CANCELLED = "downloading", "failed", "cancelled"
LEASE_S = 30.0  # a server that stopped renewing its lease this long ago is gone: another takes the job over
STOP_WAIT_S = 2.0  # how long a stopping server waits for its download threads, together
RATE_SMOOTHING = 0.3  # weight of the newest sample in the rate (bytes/s) shown

# The table as migration 0008 leaves it.
deployment_downloads = sa.Table(
    "deployment_downloads",
    metadata,
    sa.Column("deployment", sa.String(64), sa.ForeignKey("deployments.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("hf_repo", sa.String(256), nullable=False),
    sa.Column("hf_file", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("downloaded_bytes", sa.BigInteger, nullable=False),
    sa.Column("total_bytes", sa.BigInteger),
    sa.Column("rate", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("owner", sa.String(255)),
    sa.Column("lease_until", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
_T = deployment_downloads.c


@dataclass(frozen=True)
class DownloadJob:
    """One deployment's download, as stored."""

    deployment: str
    hf_repo: str
    hf_file: str
    sha256: str | None
    state: str
    downloaded_bytes: int
    total_bytes: int | None
    rate: float | None
    error: str | None
    owner: str | None
    lease_until: float | None
    created_at: float
    updated_at: float

    @property
    def source(self) -> WeightsSource:
        return WeightsSource(self.hf_repo, self.hf_file, sha256=self.sha256)

    def is_held(self, now: float) -> bool:
        """Whether a live server (or `deploy create --wait`) holds the job."""
        return self.owner is not None and self.lease_until is not None and self.lease_until > now


def process_id(what: str = "") -> str:
    """This process as a job's owner: host and pid (and what it is, for a command)."""
    return f"{socket.gethostname()} pid {os.getpid()}" + (f" ({what})" if what else "")


def add_job(conn: Connection, name: str, source: WeightsSource, now: float) -> None:
    """Queue the download of `source` for deployment `name` (inside the transaction that adds the deployment)."""
    conn.execute(deployment_downloads.insert().values(
        deployment=name, hf_repo=source.hf_repo, hf_file=source.hf_file, sha256=source.sha256, state=DOWNLOADING,
        downloaded_bytes=0, created_at=now, updated_at=now,
    ))  # fmt: skip


def get_job(store: Store, name: str) -> DownloadJob | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(deployment_downloads).where(_T.deployment == name)).mappings().first()
    return _job(row) if row is not None else None


def list_jobs(store: Store) -> dict[str, DownloadJob]:
    with store.engine.connect() as conn:
        return {row["deployment"]: _job(row) for row in conn.execute(sa.select(deployment_downloads)).mappings()}


def cancel(store: Store, name: str, now: float | None = None) -> DownloadJob:
    """Stop a deployment's download; the bytes so far stay in the `.part` file for `resume`.

    Raises:
        DeploymentNotFound: no such deployment. DeploymentConflict: it is not downloading.
    """
    now = time.time() if now is None else now
    message = "Cancelled by request; `llamafoundry deploy resume NAME` continues from the bytes downloaded."
    _change_state(store, name, {DOWNLOADING}, CANCELLED, message, now)
    job = get_job(store, name)
    assert job is not None
    return job


def resume(store: Store, name: str, now: float | None = None) -> DownloadJob:
    """Download again a deployment whose download failed or was cancelled (from the bytes it has)."""
    now = time.time() if now is None else now
    _change_state(store, name, {FAILED, CANCELLED}, DOWNLOADING, None, now)
    job = get_job(store, name)
    assert job is not None
    return job


def _change_state(store: Store, name: str, allowed: set[str], state: str, error: str | None, now: float) -> None:
    with store.engine.begin() as conn:  # no revision bump: the workers read the jobs every poll
        row = conn.execute(sa.select(_T.state).where(_T.deployment == name)).first()
        if row is not None and row.state in allowed:
            conn.execute(deployment_downloads.update().where(_T.deployment == name)
                         .values(state=state, error=error, updated_at=now, rate=None))  # fmt: skip
            return
        exists = conn.execute(sa.select(deployments.c.name).where(deployments.c.name == name)).first() is not None
    if not exists:
        raise DeploymentNotFound(f"Deployment '{name}' not found. `llamafoundry deploy list` shows the deployments.")
    if row is None:
        raise DeploymentConflict(f"Deployment '{name}' has no download: its weights are there already.")
    verb = "cancel" if state == CANCELLED else "resume"
    raise DeploymentConflict(f"Deployment '{name}' cannot {verb} its download: it is {row.state}.")


def status(job: DownloadJob, now: float | None = None) -> dict[str, Any]:
    """A job as the runtime status shows it: `{"state": "downloading", "progress": {...}}`, or failed/cancelled
    with the reason in `error`."""
    now = time.time() if now is None else now
    done, total, rate = job.downloaded_bytes, job.total_bytes, job.rate
    progress: dict[str, Any] = {"downloaded_bytes": done, "total_bytes": total,
                                "percent": round(100 * done / total, 1) if total else None}  # fmt: skip
    if job.state == DOWNLOADING and rate:
        progress["rate_bytes_per_s"] = round(rate)
        progress["eta_s"] = round((total - done) / rate) if total else None
    body: dict[str, Any] = {"state": job.state, "progress": progress, "source": f"{job.hf_repo}/{job.hf_file}"}
    if job.error:
        body["error"] = job.error
    if job.state == DOWNLOADING:
        if job.is_held(now):
            body["downloading_on"] = job.owner
        else:
            body["queued"] = "no server is downloading it yet: a running `llamafoundry serve` picks it up"
    elif job.is_held(now):
        body["stopping_on"] = job.owner  # that server has not seen the cancellation yet (within a second)
    return body


@dataclass
class _Running:
    job: DownloadJob
    cancel: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    total: int | None = None
    rate: float | None = None
    sampled: tuple[int, float] | None = None  # (bytes, when) at the last renewal
    thread: threading.Thread | None = None


class DownloadWorker:
    """Downloads the jobs of a store, one thread each; `tick()` (the gateway's poll, every second) takes free jobs,
    writes progress, renews the leases and stops the threads of jobs cancelled or deleted.

    Args:
        store: where the jobs are.
        models_dir: where the weights go (`<data dir>/models`).
        owner: this process, as the leases name it (`process_id()`).
    """

    def __init__(self, store: Store, models_dir: Path, owner: str | None = None, lease_s: float = LEASE_S) -> None:
        self.store = store
        self.models_dir = models_dir
        self.owner = owner or process_id()
        self.lease_s = lease_s
        self.running: dict[str, _Running] = {}

    def tick(self, now: float | None = None) -> None:
        """One round: blocking (database and thread bookkeeping); call it off the event loop."""
        now = time.time() if now is None else now
        jobs = list_jobs(self.store)
        for name, running in list(self.running.items()):
            job = jobs.get(name)
            if running.thread is not None and not running.thread.is_alive():
                del self.running[name]  # done, failed or stopped: a job still downloading is taken again below
                self._release(name)
            elif job is None or job.state != DOWNLOADING or job.owner != self.owner:
                running.cancel.set()  # deleted, cancelled, or taken over: the thread writes no further chunk
                self._release(name)  # so a resumed job may be taken (here once this thread has ended)
            else:
                self._renew(running, now)
        for name, job in jobs.items():
            if job.state == DOWNLOADING and name not in self.running and not self._held_elsewhere(job, now):
                if not self._file_busy(job) and self._claim(name, now):
                    self._start(job)

    def stop(self) -> None:
        """Stop every download of this process and release its jobs (they stay `downloading`: the next server
        resumes them from their `.part` files)."""
        for running in self.running.values():
            running.cancel.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for running in self.running.values():
            if running.thread is not None:  # a chunk's time; a stalled connection ends with the process
                running.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for name in list(self.running):
            self._release(name)
        self.running.clear()

    def _held_elsewhere(self, job: DownloadJob, now: float) -> bool:
        return job.is_held(now) and job.owner != self.owner

    def _file_busy(self, job: DownloadJob) -> bool:
        """Another job of this process writes the same file (two deployments of one model): it waits its turn."""
        return any(r.job.source == job.source for r in self.running.values())

    def _claim(self, name: str, now: float) -> bool:
        free = sa.or_(_T.owner.is_(None), _T.owner == self.owner, _T.lease_until < now)
        query = (deployment_downloads.update().where(_T.deployment == name, _T.state == DOWNLOADING, free)
                 .values(owner=self.owner, lease_until=now + self.lease_s, updated_at=now))  # fmt: skip
        with self.store.engine.begin() as conn:
            return bool(conn.execute(query).rowcount)

    def _renew(self, running: _Running, now: float) -> None:
        if running.sampled is not None and now > running.sampled[1]:
            sample = (running.done - running.sampled[0]) / (now - running.sampled[1])
            running.rate = sample if running.rate is None else (
                RATE_SMOOTHING * sample + (1 - RATE_SMOOTHING) * running.rate)  # fmt: skip
        running.sampled = (running.done, now)
        values = {"downloaded_bytes": running.done, "total_bytes": running.total, "rate": running.rate,
                  "lease_until": now + self.lease_s, "updated_at": now}  # fmt: skip
        where = (_T.deployment == running.job.deployment) & (_T.owner == self.owner) & (_T.state == DOWNLOADING)
        with self.store.engine.begin() as conn:
            conn.execute(deployment_downloads.update().where(where).values(**values))

    def _release(self, name: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(deployment_downloads.update().where(_T.deployment == name, _T.owner == self.owner)
                         .values(owner=None, lease_until=None, rate=None))  # fmt: skip

    def _start(self, job: DownloadJob) -> None:
        running = _Running(job, done=job.downloaded_bytes, total=job.total_bytes)
        running.thread = threading.Thread(target=self._run, args=(running,), name=f"download {job.deployment}",
                                          daemon=True)  # fmt: skip
        self.running[job.deployment] = running
        logger.info("downloading the weights of deployment %s (%s/%s)", job.deployment, job.hf_repo, job.hf_file)
        running.thread.start()

    def _run(self, running: _Running) -> None:
        name = running.job.deployment

        def progress(done: int, total: int | None) -> None:
            running.done, running.total = done, total

        try:
            path = download(running.job.source, self.models_dir, progress, running.cancel)
            self._complete(name, path)
        except DownloadCancelled:
            logger.info("the download of deployment %s stopped at %d bytes", name, running.done)
        except (HubError, DeploymentError) as exc:
            self._fail(name, str(exc))
        except OSError as exc:
            self._fail(name, _os_error_sentence(exc, self.models_dir))
        except Exception as exc:  # a bug must show as the job's reason, not as a download that never ends
            logger.exception("the download of deployment %s failed", name)
            self._fail(name, f"The download failed ({type(exc).__name__}: {exc}).")

    def _complete(self, name: str, path: Path) -> None:
        """Set the deployment's weights (its replicas start) once they fit; the job's row goes."""
        found = self.store.get_deployment(name)
        if found is None:
            return
        cores = find_instance_type(found.instance_type).num_cores if found.instance_type else None
        sizing.plan(found.settings, path, found.instances, cores)  # a DeploymentError: the job fails with it
        with self.store.write() as conn:  # the revision bump makes every gateway start the deployment
            deleted = conn.execute(deployment_downloads.delete().where(_T.deployment == name, _T.owner == self.owner))
            if deleted.rowcount:
                conn.execute(deployments.update().where(deployments.c.name == name).values(weights_path=str(path)))
        logger.info("the weights of deployment %s are downloaded: %s", name, path)

    def _fail(self, name: str, reason: str) -> None:
        logger.error("the download of deployment %s failed: %s", name, reason)
        with self.store.engine.begin() as conn:
            conn.execute(deployment_downloads.update().where(_T.deployment == name, _T.owner == self.owner)
                         .values(state=FAILED, error=reason, rate=None, updated_at=time.time()))  # fmt: skip


def _os_error_sentence(exc: OSError, models_dir: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return (f"The disk holding {models_dir} is full. Free some space (or move the data directory) and run "
                "`llamafoundry deploy resume NAME`: the download continues from the bytes it has.")  # fmt: skip
    return (f"The weights could not be written to {models_dir} ({exc}). Fix that, then run `llamafoundry deploy "
            "resume NAME`: the download continues from the bytes it has.")


def _job(row: RowMapping | Mapping[str, Any]) -> DownloadJob:
    return DownloadJob(**dict(row))
