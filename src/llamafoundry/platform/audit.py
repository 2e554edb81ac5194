"""The audit log: every management action (create, update, delete, key regenerate or revoke, grant, budget
change), through the management API or the CLI, with who did it, when, what, on what, and the result, kept in
the store (`llamafoundry audit`, `GET /management/audit`).

Who is a key id (`key-...`: the admin key's or a project key's), `cli:<user>` for a command run on the store, or
`anonymous` for a change refused for want of a valid key. Details are copied from the request by name
(`SAFE_FIELDS`), never wholesale, so no key, token, upstream key or webhook URL (they carry secrets) is ever
written; a key created is recorded by its id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from llamafoundry.platform.store import Store, metadata

MAX_ENTRIES = 1000
SAFE_FIELDS = frozenset({
    "name", "model", "type", "project", "deployments", "tpm", "rpm", "content_safety", "instances",
    "instance_type", "shared_quota", "description", "kind", "value", "period", "amount_usd", "key", "id",
    "keyType", "key_type", "slot", "expires", "expires_at", "threshold", "categories", "jailbreak",
    "indirect_attack", "streaming", "guard", "enabled", "upstream_model", "weights", "project_key", "usd",
    "subject", "group", "app_role", "any", "regenerate", "deployment", "list", "regex",
})  # fmt: skip
# names that hold secrets: never copied, but noted as given ("set") so the entry says what changed
SECRET_FIELDS = frozenset({"keyValue", "key_value", "upstream_key", "webhook", "webhook_url", "upstream",
                           "primary_key", "secondary_key", "api_key"})  # fmt: skip

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("actor_type", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256)),
    sa.Column("project", sa.String(64)),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
)


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    actor_type: str  # admin, project-key, cli, anonymous
    action: str  # deployment.create, project.key.revoke, ...
    status: int  # the HTTP status (the CLI's: 200 done, 400/404/409 refused as the API would, 500 failed)
    result: str  # "ok", or the sentence the caller got
    target: str | None = None
    project: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    at: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)), "actor": self.actor,
                "actor_type": self.actor_type, "action": self.action, "target": self.target, "project": self.project,
                "status": self.status, "result": self.result, "details": dict(self.details)}  # fmt: skip


def safe_details(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a request that may be written down: named ones, short; secrets only as "set"."""
    details: dict[str, Any] = {}
    for name, value in values.items():
        if name in SECRET_FIELDS:
            if value not in (None, ""):
                details[name] = "set"
        elif name in SAFE_FIELDS and value is not None:
            details[name] = value if isinstance(value, bool | int | float) else str(value)[:200]
    return details


def record(store: Store, entry: AuditEntry) -> None:
    """Append `entry` (no revision bump: servers do not reload on it)."""
    values = {**entry.__dict__, "details": safe_details(entry.details), "at": entry.at or time.time()}
    values["result"] = values["result"][:1000]
    with store.engine.begin() as conn:
        conn.execute(audit_log.insert().values(**values))


def query(
    store: Store,
    *,
    since: float | None = None,
    actor: str | None = None,
    action: str | None = None,
    project: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries, newest first; `action` matches a prefix (`deployment` finds every deployment action)."""
    q = sa.select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(min(limit, MAX_ENTRIES))
    if since is not None:
        q = q.where(audit_log.c.at >= since)
    if actor is not None:
        q = q.where(audit_log.c.actor == actor)
    if action is not None:
        q = q.where(audit_log.c.action.startswith(action, autoescape=True))
    if project is not None:
        q = q.where(audit_log.c.project == project)
    if target is not None:
        q = q.where(audit_log.c.target == target)
    with store.engine.connect() as conn:
        rows = conn.execute(q).mappings()
        return [AuditEntry(**{k: v for k, v in row.items() if k != "id"}) for row in rows]
