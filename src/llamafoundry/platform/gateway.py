"""What one `llamafoundry serve` serves: its own model (the default target) and every deployment in the store,
each with its chat service and its auth policy. The API asks `Gateway.resolve()` which target a request is for
and `Target.authorize()` whether the caller may use it.

A running gateway polls the store's revision every second; on a change it starts the services of new
deployments, stops those of deleted ones, and swaps keys in place, so `deploy` commands (and the management
API) take effect within two seconds without a restart. Shared-quota deployments past their lifetime are
deleted by the same poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llamafoundry.outage import RepeatedFailure
from llamafoundry.platform import sizing
from llamafoundry.platform.access import Access, AuthPolicy, Caller, load_access
from llamafoundry.platform.catalog import MANAGED, find_model
from llamafoundry.platform.downloads import DownloadJob, DownloadWorker, list_jobs
from llamafoundry.platform.downloads import status as download_status
from llamafoundry.platform.errors import DeploymentError
from llamafoundry.platform.keys import DEFAULT_KEY_ID, StoredKey, hash_key
from llamafoundry.platform.server_keys import forget_server_key, record_server_key
from llamafoundry.platform.store import Deployment, Snapshot, Store
from llamafoundry.platform.tokens import TokenVerifier
from llamafoundry.service.backend import ChatBackend

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
RETIRE_TIMEOUT_S = 600.0  # a replaced deployment's longest request in flight (a long stream) may finish within this
RUNTIME_HEARTBEAT_S = 15.0  # a report unchanged this long is written again, so readers can tell a live server


def single_key_policy(api_key: str) -> AuthPolicy:
    """The default target's policy: the one key `serve --api-key` was given."""
    return AuthPolicy([StoredKey(DEFAULT_KEY_ID, hash_key(api_key), 0.0)])


@dataclass
class Target:
    """One served model: the default (`deployment` None) or a deployment."""

    service: ChatBackend
    auth: AuthPolicy
    deployment: Deployment | None = None
    start_task: asyncio.Task[None] | None = field(default=None, repr=False)
    start_error: BaseException | None = None
    # The target this one replaces (new sizes, instances or weights): it answers until this one is ready, then
    # finishes its requests in flight and stops, so a change drops no request.
    previous: Target | None = field(default=None, repr=False)

    default_name: str | None = None  # the default target's deployment name (`serve --name`)

    @property
    def name(self) -> str:
        if self.deployment is not None:
            return self.deployment.name
        return self.default_name or self.service.model_name

    @property
    def accepts_images(self) -> bool:
        """Image parts are forwarded to an upstream of a model that takes them; llama.cpp here reads text only."""
        deployment = self.deployment
        return deployment is not None and bool(deployment.upstream_url) and find_model(deployment.model).accepts_images

    async def authorize(self, credentials: Iterable[str]) -> Caller | None:
        return await self.auth.authorize(credentials)


BackendFactory = Callable[[Deployment], ChatBackend]


class Gateway:
    """The default target and the store's deployments.

    Args:
        default: the server's own model, or None (`serve --no-default`); its service is started by the app.
        store: where deployments live; None serves the default only.
        backend_factory: builds a deployment's service (`backends.local_backend_factory` in production).
        verifier: checks bearer tokens for managed deployments; None refuses every token.
        downloads: runs the store's weight downloads (`platform.downloads`) in this process; None leaves them to
            other servers (their progress is shown all the same).
    """

    def __init__(
        self,
        default: Target | None,
        store: Store | None = None,
        backend_factory: BackendFactory | None = None,
        verifier: TokenVerifier | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        downloads: DownloadWorker | None = None,
    ) -> None:
        self.default = default
        self.store = store
        self.backend_factory = backend_factory
        self.verifier = verifier
        self.poll_interval_s = poll_interval_s
        self.downloads = downloads
        self.jobs: dict[str, DownloadJob] = {}  # deployments whose weights are being downloaded (or failed to)
        self.targets: dict[str, Target] = {}
        self.unserved: dict[str, str] = {}  # deployment name -> why it is not served
        self.refused_keys: dict[str, str] = {}  # deployment name -> why one of its keys is not accepted
        self._revision: int | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self.server_id = f"{socket.gethostname()} pid {os.getpid()}"
        self._reported: tuple[dict[str, Any], float] | None = None  # last runtime report written, and when

    def resolve(self, name: str | None) -> Target | None:
        """The deployment called `name` (case-insensitive); the default target when `name` is None or is the
        default model's own name."""
        if name is None:
            return self.default
        found = self.targets.get(name.lower())
        if found is None and self.default is not None and name.lower() == self.default.name.lower():
            return self.default
        return None if found is None else serving(found)

    def all_targets(self) -> list[Target]:
        """The default target (if any), then the deployments by name."""
        default = [self.default] if self.default is not None else []
        return default + [self.targets[name] for name in sorted(self.targets)]

    @property
    def own_key_hash(self) -> str | None:
        """The hash of the server's own `--api-key` (None without a default model: it then opens nothing)."""
        return self.default.auth.keys[0].key_hash if self.default is not None and self.default.auth.keys else None

    async def start(self) -> None:
        if self.store is None:
            return
        if self.own_key_hash is not None:  # so that no deployment key can be set to it (platform/server_keys.py)
            await asyncio.to_thread(record_server_key, self.store, self.server_id, self.own_key_hash)
        await self.sync()
        await self.run_downloads()
        self._poll_task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        targets, self.targets = list(self.targets.values()), {}
        await asyncio.gather(*(_stop(t) for t in targets))
        if self.downloads is not None:  # released, not cancelled: the next server resumes them
            await asyncio.to_thread(self.downloads.stop)
        if self.store is not None:
            with contextlib.suppress(Exception):  # a store that is down cannot be told; its rows go stale
                await asyncio.to_thread(self.store.report_runtime, self.server_id, {})
                await asyncio.to_thread(forget_server_key, self.store, self.server_id)

    async def _poll(self) -> None:
        failures = RepeatedFailure(logger, "reading the deployment store")
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.sync()
                await self.run_downloads()
                await self.report_runtime()
            except Exception as exc:  # a database hiccup must not end the poll
                failures.failed(exc)
            else:
                failures.succeeded()

    async def run_downloads(self) -> None:
        """Take, renew and stop downloads (with a worker), and read every job's progress for `status`."""
        assert self.store is not None
        if self.downloads is not None:
            await asyncio.to_thread(self.downloads.tick)
        self.jobs = await asyncio.to_thread(list_jobs, self.store)

    async def report_runtime(self) -> None:
        """Write each served deployment's `status()` to the store (for `deploy show`) when it changed, or as a
        heartbeat every RUNTIME_HEARTBEAT_S."""
        assert self.store is not None
        statuses = {name: self.status(name) for name in [*self.targets, *self.unserved, *self.jobs]}
        if self.default is not None:  # `llamafoundry ps` lists it too; no deployment has its name (name_conflict)
            statuses[self.default.name] = {**self.default.service.status(), "server_model": True}
        now = time.time()
        if self._reported is not None:
            last, at = self._reported
            if last == statuses and now - at < RUNTIME_HEARTBEAT_S:
                return
        await asyncio.to_thread(self.store.report_runtime, self.server_id, statuses, now)
        if self.own_key_hash is not None:
            await asyncio.to_thread(record_server_key, self.store, self.server_id, self.own_key_hash, now)
        self._reported = (statuses, now)

    async def sync(self) -> None:
        """Bring the served deployments in line with the store."""
        assert self.store is not None
        store = self.store
        expired = await asyncio.to_thread(store.delete_expired)
        for name in expired:
            logger.info("deployment %s reached the end of its shared-quota lifetime and was deleted", name)
        if self._revision is not None and await asyncio.to_thread(store.revision) == self._revision:
            return
        snapshot = await asyncio.to_thread(store.snapshot)
        self._apply(snapshot, await asyncio.to_thread(load_access, store))

    def name_conflict(self, name: str) -> str | None:
        """Why a deployment called `name` cannot be served here, or None: the name is the server's own model's,
        which the same routes, limits and usage records already answer to."""
        if self.default is None or name.lower() != self.default.name.lower():
            return None
        return (
            f"Deployment '{name}' has the name of this server's own model, so requests, rate limits and usage "
            "under that name are the model's. Delete the deployment and create it under another name, or start "
            "the server with --name OTHER (or --no-default)."
        )

    def _apply(self, snapshot: Snapshot, access: Access) -> None:
        stopped = []
        for name in list(self.targets):
            if name not in snapshot.deployments:
                stopped.append(self.targets.pop(name))
                logger.info("deployment %s was deleted; no longer served", name)
        unserved = {}
        for name, deployment in snapshot.deployments.items():
            conflict = self.name_conflict(name)
            if conflict is not None:
                if name not in self.unserved:
                    logger.error("deployment %s is not served: %s", name, conflict)
                unserved[name] = conflict
                continue
            if deployment.weights_path is None and not deployment.upstream_url:
                continue  # its weights are being downloaded: started once they are there (a new revision)
            policy = self._policy(deployment, snapshot.keys.get(name, []), access)
            current = self.targets.get(name)
            if current is not None and _same_backend(current.deployment, deployment):
                current.deployment, current.auth = deployment, policy  # keys or settings changed
                if current.previous is not None:  # still answering for it: a revoked key is refused there too
                    current.previous.auth = policy
                continue
            try:
                launched = self._launch(deployment, policy)
            except DeploymentError as exc:  # sizes it cannot run with (set by hand in the store, a changed file)
                if self.unserved.get(name) != str(exc):
                    logger.error("deployment %s is not served: %s", name, exc)
                unserved[name] = str(exc)
                continue
            if current is not None:
                stopped += _replace(self.targets.pop(name), launched)
                if launched.previous is not None:
                    launched.previous.auth = policy
            self.targets[name] = launched
        for target in stopped:
            asyncio.create_task(_stop(target))
        self.unserved = unserved
        self._revision = snapshot.revision

    def _policy(self, deployment: Deployment, keys: list[StoredKey], access: Access) -> AuthPolicy:
        """The deployment's keys, less one equal to the server's own key (set while the server was down, or in a
        race with a command that checked it): that key keeps opening the server's own model only."""
        accepted = [key for key in keys if key.key_hash != self.own_key_hash]
        refused = [key.slot for key in keys if key not in accepted]
        if refused:
            reason = (
                f"Its {refused[0]} key is this server's own --api-key, so it is not accepted for the deployment. "
                f"Regenerate it: `llamafoundry deploy keys {deployment.name} --regenerate {refused[0]}`."
            )
            if self.refused_keys.get(deployment.name) != reason:
                logger.error("deployment %s: %s", deployment.name, reason)
            self.refused_keys[deployment.name] = reason
        else:
            self.refused_keys.pop(deployment.name, None)
        return AuthPolicy(
            accepted, self.verifier, accepts_tokens=deployment.type == MANAGED,
            project_keys=access.keys_for(deployment.project, deployment.name),
            grants=access.grants.get(deployment.project, []), deployment=deployment.name, project=deployment.project,
        )  # fmt: skip

    def _launch(self, deployment: Deployment, policy: AuthPolicy) -> Target:
        assert self.backend_factory is not None
        target = Target(self.backend_factory(deployment), policy, deployment)
        target.start_task = asyncio.create_task(_start(target))
        logger.info("serving deployment %s (%s, %s)", deployment.name, deployment.model, deployment.type)
        return target

    def status(self, name: str) -> dict[str, Any]:
        """Runtime state of a served deployment, for the management API."""
        target = self.targets.get(name)
        job = self.jobs.get(name)
        if target is None and job is not None:
            return download_status(job)
        if target is None:
            reason = self.unserved.get(name)
            if reason is not None:
                return {"state": "not served", "error": reason}
            return {"state": "pending"}  # in the store, not picked up yet (within a poll interval)
        body: dict[str, Any] = target.service.status()
        if target.start_error is not None:
            body.update(state="failed", error=str(target.start_error))
        if name in self.refused_keys:
            body["key_refused"] = self.refused_keys[name]
        if target.previous is not None:
            body["changing"] = "the previous replicas answer until these are ready, then finish their requests"
        return body


def _same_backend(old: Deployment | None, new: Deployment) -> bool:
    """Whether the running service still serves `new` (a re-created deployment gets a new one)."""
    if old is None:
        return False
    fields = ("model", "created_at", "weights_path", "upstream_url", "upstream_model", "upstream_api_key",
              "instances", "instance_type")  # fmt: skip
    same_sizes = all(old.settings.get(f) == new.settings.get(f) for f in sizing.FIELDS)  # replicas restart
    return same_sizes and all(getattr(old, f) == getattr(new, f) for f in fields)


def serving(target: Target) -> Target:
    """The target that answers a deployment's requests now: while a replacement starts (or if it failed to), the
    one it replaces."""
    previous = target.previous
    if previous is not None and not target.service.is_ready:
        return previous
    return target


def _replace(current: Target, new: Target) -> list[Target]:
    """Hand over from `current` to `new`: the target answering now keeps answering until `new` is ready (if it is
    ready itself); returns the targets to stop at once."""
    answering = serving(current)
    if not answering.service.is_ready:  # nothing answers: nothing to keep
        return [t for t in (current, current.previous) if t is not None]
    new.previous = answering
    logger.info("deployment %s is changing: its current replicas answer until the new ones are ready", new.name)
    if answering is current:  # ready; it retires what it replaced itself
        return []
    current.previous = None  # `current` never got ready: its predecessor goes on answering, for `new`
    return [current]


async def _start(target: Target) -> None:
    try:
        await target.service.start()
    except Exception as exc:
        target.start_error = exc
        logger.exception("deployment %s failed to start; it answers 503 until it is re-created", target.name)
        return
    if target.previous is not None:  # `serving` hands new requests to this target from now on
        await _retire(target.previous)
        target.previous = None


async def _retire(target: Target) -> None:
    """Stop a replaced target once its requests in flight have finished (at most RETIRE_TIMEOUT_S)."""
    deadline = time.monotonic() + RETIRE_TIMEOUT_S
    while sum(target.service.status().get("in_flight") or [0]) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    logger.info("deployment %s: the replaced replicas finished their requests and stop", target.name)
    await _stop(target)


async def _stop(target: Target) -> None:
    if target.start_task is not None and not target.start_task.done():
        target.start_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await target.start_task
    try:
        await target.service.stop()
    except Exception:
        logger.exception("stopping deployment %s failed", target.name)
    if target.previous is not None:  # stopped while it was taking over
        await _stop(target.previous)
