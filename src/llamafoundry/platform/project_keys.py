"""Project keys: named keys that open a project's deployments (all of them, or a chosen few), each with its own
optional TPM/RPM limits, expiry and spend budget (`platform.budgets`).

A key is 32 hex characters (128 random bits) like every other key here; only its SHA-256 is stored (a fast hash
is enough for a random secret: there is no dictionary to try), it is shown once, when it is created, and
presented keys are compared with every stored hash in constant time. A revoked key keeps its row, so usage and
audit records that name its id still say whose it was. A key id (`key-` and 12 hex digits of the hash) names a
key in logs, usage and the audit log; it cannot be turned back into the key.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from llamafoundry.platform.errors import DeploymentConflict, ProjectError, ProjectNotFound
from llamafoundry.platform.keys import generate_key, hash_key, key_id_of
from llamafoundry.platform.projects import check_deployments, get_project
from llamafoundry.platform.ratelimit import UNLIMITED, RateLimits
from llamafoundry.platform.store import Store, StoreConflict, iso_time, metadata

_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

project_keys = sa.Table(
    "project_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project", sa.String(64), sa.ForeignKey("projects.name", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("deployments", sa.JSON),
    sa.Column("tokens_per_minute", sa.Integer),
    sa.Column("requests_per_minute", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
)


@dataclass(frozen=True)
class ProjectKey:
    """A project key as stored (never the key itself)."""

    id: str
    project: str
    name: str
    key_hash: str
    created_at: float
    deployments: tuple[str, ...] | None = None  # None: every deployment of the project, present and future
    tokens_per_minute: int | None = None
    requests_per_minute: int | None = None
    expires_at: float | None = None
    revoked_at: float | None = None

    def is_active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def opens(self, deployment: str) -> bool:
        return self.deployments is None or deployment in self.deployments

    @property
    def limits(self) -> RateLimits | None:
        """The key's own limits (None: only the deployment's apply)."""
        tokens, requests = self.tokens_per_minute or UNLIMITED, self.requests_per_minute or UNLIMITED
        return None if tokens == requests == UNLIMITED else RateLimits(tokens, requests)

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        state = "revoked" if self.revoked_at is not None else ("active" if self.is_active(now) else "expired")
        return {
            "id": self.id, "name": self.name, "project": self.project, "state": state,
            "deployments": list(self.deployments) if self.deployments is not None else "all",
            "tpm": self.tokens_per_minute, "rpm": self.requests_per_minute, "created_at": iso_time(self.created_at),
            "expires_at": iso_time(self.expires_at) if self.expires_at is not None else None,
            "revoked_at": iso_time(self.revoked_at) if self.revoked_at is not None else None,
        }  # fmt: skip


def create_key(
    store: Store,
    project: str,
    name: str,
    deployment_names: Iterable[str] | None = None,
    *,
    tokens_per_minute: int | None = None,
    requests_per_minute: int | None = None,
    expires: str | None = None,
    now: float | None = None,
) -> tuple[ProjectKey, str]:
    """A new key of `project`; returns it and the key itself (the only time it is known)."""
    now = time.time() if now is None else now
    project = get_project(store, project).name
    if not _KEY_NAME.match(name):
        raise ProjectError(f"'{name}' is not a valid key name: use up to 64 letters, digits, '.', '_' and '-'.")
    for flag, value in (("tpm", tokens_per_minute), ("rpm", requests_per_minute)):
        if value is not None and value < 0:
            raise ProjectError(f"{flag} {value}: give a number of tokens or requests per minute, or 0 for no limit.")
    secret = generate_key()
    key_hash = hash_key(secret)
    key = ProjectKey(
        id=key_id_of(key_hash), project=project, name=name, key_hash=key_hash, created_at=now,
        deployments=check_deployments(store, project, deployment_names),
        tokens_per_minute=tokens_per_minute or None, requests_per_minute=requests_per_minute or None,
        expires_at=parse_expiry(expires, now) if expires else None,
    )  # fmt: skip
    values = {**key.__dict__, "deployments": list(key.deployments) if key.deployments is not None else None}
    try:
        with store.write() as conn:
            conn.execute(project_keys.insert().values(**values))
    except StoreConflict:
        raise DeploymentConflict(f"Project '{project}' already has a key named '{name}'. Choose another name, or "
                                 "revoke that key first.") from None  # fmt: skip
    return key, secret


def list_keys(store: Store, project: str | None = None) -> list[ProjectKey]:
    query = sa.select(project_keys).order_by(project_keys.c.project, project_keys.c.created_at)
    if project is not None:
        query = query.where(project_keys.c.project == get_project(store, project).name)
    with store.engine.connect() as conn:
        return [_key(row) for row in conn.execute(query).mappings()]


def find_key(store: Store, project: str, name_or_id: str) -> ProjectKey:
    for key in list_keys(store, project):
        if name_or_id in (key.name, key.id):
            return key
    raise ProjectNotFound(f"Project '{project}' has no key named '{name_or_id}'. `llamafoundry project key list "
                          f"{project}` shows its keys.")  # fmt: skip


def revoke_key(store: Store, project: str, name_or_id: str, now: float | None = None) -> ProjectKey:
    """Revoke a key at once (running servers stop accepting it within two seconds)."""
    key = find_key(store, project, name_or_id)
    if key.revoked_at is not None:
        return key
    revoked_at = time.time() if now is None else now
    with store.write() as conn:
        conn.execute(project_keys.update().where(project_keys.c.id == key.id).values(revoked_at=revoked_at))
    return find_key(store, project, key.id)


def active_keys(store: Store) -> list[ProjectKey]:
    """Every key not revoked (expiry is checked when a key is presented: it passes without a store change)."""
    query = sa.select(project_keys).where(project_keys.c.revoked_at.is_(None))
    with store.engine.connect() as conn:
        return [_key(row) for row in conn.execute(query).mappings()]


def project_key_holder(store: Store, key_hash: str) -> ProjectKey | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(project_keys).where(project_keys.c.key_hash == key_hash)).mappings().first()
    return _key(row) if row is not None else None


def match_project_key(presented: Iterable[str], keys: Iterable[ProjectKey], now: float) -> ProjectKey | None:
    """The active key one of the presented credentials is, or None. Every pair is compared in constant time."""
    hashes = [hash_key(p) for p in presented if p]
    found = None
    for key in keys:
        for presented_hash in hashes:
            if hmac.compare_digest(presented_hash, key.key_hash) and found is None:
                found = key
    return found if found is not None and found.is_active(now) else None


def parse_expiry(text: str, now: float) -> float:
    """When a key expires: an age such as `30d`, `12h`, or an ISO date (UTC unless it says otherwise)."""
    from llamafoundry.platform.usage import parse_since

    value = text.strip().lower()
    age = re.fullmatch(r"(\d+)\s*([mhd])", value)
    if age:
        return now + int(age.group(1)) * {"m": 60, "h": 3600, "d": 86400}[age.group(2)]
    try:
        moment = parse_since(text, now)
    except ValueError:
        raise ProjectError(f"Expiry '{text}' is not understood: give an age such as 30d or 12h, or a date such as "
                           "2026-12-31.") from None  # fmt: skip
    if moment <= now:
        raise ProjectError(f"Expiry '{text}' is in the past: give a later date, or an age such as 30d.")
    return moment


def _key(row: sa.RowMapping) -> ProjectKey:
    values = dict(row)
    names = values["deployments"]
    values["deployments"] = tuple(names) if names is not None else None
    return ProjectKey(**values)

