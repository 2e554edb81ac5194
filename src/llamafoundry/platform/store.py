"""The platform's state: deployments, their keys, the admin key (projects, project keys, grants, budgets and the
audit log have their own modules over the same database). SQLite by default, PostgreSQL by URL.

One store layer (SQLAlchemy Core) for both databases; the schema is built and changed only by the alembic
migrations in `platform/migrations/versions`, applied when a store is opened (a new migration per change, never
a drop and re-create). Every write bumps `store_state.revision` in the same transaction, so a running server
notices any change by polling one integer (`revision()`).

How the database is opened and migrated (SQLite shared by several processes, PostgreSQL): `database.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from llamafoundry.platform.database import StoreUnavailable, create_engine, database_url, migrate
from llamafoundry.platform.keys import StoredKey

DEFAULT_PROJECT = "default"  # every store has it (migration 0007); deployments go there unless told otherwise

metadata = sa.MetaData()
# The tables as the latest migration leaves them; queries are written against these. Migrations never use them.
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("weights_path", sa.Text),
    sa.Column("upstream_url", sa.Text),
    sa.Column("upstream_model", sa.String(256)),
    sa.Column("upstream_api_key", sa.Text),
    sa.Column("instances", sa.Integer, nullable=False),
    sa.Column("instance_type", sa.String(64)),
    sa.Column("shared_quota", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("project", sa.String(64), nullable=False),
)
deployment_keys = sa.Table(
    "deployment_keys",
    metadata,
    sa.Column("deployment", sa.String(64), sa.ForeignKey("deployments.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("slot", sa.String(16), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
admin_keys = sa.Table(
    "admin_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
# Runtime state each serving process reports for its deployments; written without a revision bump (it is not
# configuration: servers do not reload on it).
deployment_runtime = sa.Table(
    "deployment_runtime",
    metadata,
    sa.Column("deployment", sa.String(64), primary_key=True),
    sa.Column("server", sa.String(255), primary_key=True),
    sa.Column("status", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
store_state = sa.Table(
    "store_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
)


class StoreConflict(Exception):
    """A write that the database refused because it contradicts existing rows (a name taken, for example)."""


@dataclass(frozen=True)
class Deployment:
    """A deployment as stored. `weights_path` xor `upstream_url` says where the model runs; `upstream_url` holds
    one base URL, or a pool's several separated by commas (`deployments.upstream_urls` reads them).

    `settings` holds per-deployment options that other parts of the platform own (rate limits, content
    safety, price overrides), as JSON; read them with `.settings.get(...)`.
    """

    name: str
    model: str
    type: str
    instances: int
    created_at: float
    weights_path: str | None = None
    upstream_url: str | None = None
    upstream_model: str | None = None
    upstream_api_key: str | None = None
    instance_type: str | None = None
    shared_quota: bool = False
    expires_at: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    project: str = DEFAULT_PROJECT


@dataclass(frozen=True)
class RuntimeReport:
    """One server's report on one deployment (`Gateway.status`), and when it was made."""

    deployment: str
    server: str
    status: Mapping[str, Any]
    updated_at: float


@dataclass(frozen=True)
class Snapshot:
    """Everything a server needs, read in one transaction."""

    revision: int
    deployments: dict[str, Deployment]
    keys: dict[str, list[StoredKey]]


class Store:
    """Deployments, keys and the admin key.

    Args:
        url: a SQLAlchemy URL (`database_url()` builds one); the database is migrated to the latest schema.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        try:
            self.migrate()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            self.engine.dispose()
            raise StoreUnavailable(url, exc) from None

    @classmethod
    def open(cls, home: Path, url: str | None = None) -> Store:
        """The store of data directory `home` (created if missing), or the database at `url`."""
        if not url:
            home.mkdir(parents=True, exist_ok=True)
        return cls(database_url(home, url))

    def close(self) -> None:
        self.engine.dispose()

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        migrate(self.engine)

    def schema_revision(self) -> str | None:
        """The alembic revision the database is at."""
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction that bumps the revision (running servers reload on it); integrity errors become
        StoreConflict. For the platform's other modules (projects, keys, budgets)."""
        with self._write() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that bumps the revision; integrity errors become StoreConflict."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    store_state.update().where(store_state.c.id == 1).values(revision=store_state.c.revision + 1)
                )
                yield conn
        except IntegrityError as exc:
            raise StoreConflict(str(exc.orig)) from exc

    # ---- reads ----

    def revision(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(store_state.c.revision)).scalar_one())

    def snapshot(self) -> Snapshot:
        with self.engine.begin() as conn:
            revision = int(conn.execute(sa.select(store_state.c.revision)).scalar_one())
            rows = conn.execute(sa.select(deployments).order_by(deployments.c.name)).mappings()
            found = {row["name"]: _deployment(row) for row in rows}
            keys: dict[str, list[StoredKey]] = {name: [] for name in found}
            for row in conn.execute(sa.select(deployment_keys).order_by(deployment_keys.c.slot)).mappings():
                keys.setdefault(row["deployment"], []).append(_key(row))
        return Snapshot(revision, found, keys)

    def list_deployments(self) -> list[Deployment]:
        return list(self.snapshot().deployments.values())

    def get_deployment(self, name: str) -> Deployment | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deployments).where(deployments.c.name == name)).mappings().first()
        return _deployment(row) if row is not None else None

    def find_serverless(self, model: str, project: str = DEFAULT_PROJECT) -> Deployment | None:
        """The serverless deployment of `model` in `project` (a project has at most one per model)."""
        query = sa.select(deployments).where(
            deployments.c.model == model, deployments.c.type == "serverless", deployments.c.project == project
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _deployment(row) if row is not None else None

    def keys(self, name: str) -> list[StoredKey]:
        query = sa.select(deployment_keys).where(deployment_keys.c.deployment == name).order_by(deployment_keys.c.slot)
        with self.engine.connect() as conn:
            return [_key(row) for row in conn.execute(query).mappings()]

    def key_holder(self, key_hash: str) -> str | None:
        """Who holds the key with this hash: `deployment NAME (slot)`, `the admin key`, or None."""
        query = sa.select(deployment_keys.c.deployment, deployment_keys.c.slot).where(
            deployment_keys.c.key_hash == key_hash
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
            if row is not None:
                return f"deployment {row.deployment} ({row.slot})"
            is_admin = conn.execute(sa.select(admin_keys.c.id).where(admin_keys.c.key_hash == key_hash)).first()
        return "the admin key" if is_admin is not None else None

    def admin_key(self) -> StoredKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(admin_keys).where(admin_keys.c.id == 1)).mappings().first()
        return StoredKey("admin", row["key_hash"], row["created_at"]) if row is not None else None

    def runtime(self, name: str) -> list[RuntimeReport]:
        """What the servers serving deployment `name` last reported, newest first."""
        query = (
            sa.select(deployment_runtime)
            .where(deployment_runtime.c.deployment == name)
            .order_by(deployment_runtime.c.updated_at.desc())
        )
        with self.engine.connect() as conn:
            return [
                RuntimeReport(row["deployment"], row["server"], _json(row["status"]), row["updated_at"])
                for row in conn.execute(query).mappings()
            ]

    def runtime_reports(self) -> list[RuntimeReport]:
        """Every server's last reports, by server then name (`llamafoundry ps`)."""
        query = sa.select(deployment_runtime).order_by(deployment_runtime.c.server, deployment_runtime.c.deployment)
        with self.engine.connect() as conn:
            return [
                RuntimeReport(row["deployment"], row["server"], _json(row["status"]), row["updated_at"])
                for row in conn.execute(query).mappings()
            ]

    # ---- writes ----

    def report_runtime(self, server: str, statuses: Mapping[str, Mapping[str, Any]], now: float | None = None) -> None:
        """Replace what `server` reports: one row per deployment it serves (none: it serves nothing now)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:  # not `_write`: no revision bump
            conn.execute(deployment_runtime.delete().where(deployment_runtime.c.server == server))
            for name, status in statuses.items():
                row = {"deployment": name, "server": server, "status": dict(status), "updated_at": now}
                conn.execute(deployment_runtime.insert().values(**row))

    def add_deployment(
        self, deployment: Deployment, key_hashes: Mapping[str, str], also: Callable[[Connection], None] | None = None
    ) -> None:
        """Insert a deployment and its keys (slot -> hash), and what `also` writes in the same transaction (its
        download job). Raises StoreConflict if the name (or, for serverless, the model) is taken."""
        values = {**deployment.__dict__, "settings": dict(deployment.settings)}
        with self._write() as conn:
            conn.execute(deployments.insert().values(**values))
            if also is not None:
                also(conn)
            for slot, key_hash in key_hashes.items():
                conn.execute(
                    deployment_keys.insert().values(
                        deployment=deployment.name, slot=slot, key_hash=key_hash, created_at=deployment.created_at
                    )
                )

    def delete_deployment(self, name: str) -> bool:
        with self._write() as conn:
            conn.execute(deployment_keys.delete().where(deployment_keys.c.deployment == name))
            return conn.execute(deployments.delete().where(deployments.c.name == name)).rowcount > 0

    def delete_expired(self, now: float | None = None) -> list[str]:
        """Delete deployments whose `expires_at` has passed; returns their names."""
        now = time.time() if now is None else now
        expired_query = sa.select(deployments.c.name).where(deployments.c.expires_at <= now)
        with self.engine.connect() as conn:
            if not conn.execute(expired_query.limit(1)).first():
                return []  # the common case: no write, no revision bump
        with self._write() as conn:
            names = list(conn.execute(expired_query).scalars())
            conn.execute(deployment_keys.delete().where(deployment_keys.c.deployment.in_(names)))
            conn.execute(deployments.delete().where(deployments.c.name.in_(names)))
        return names

    def set_instances(self, name: str, instances: int) -> Deployment:
        """A deployment's number of replicas (running servers scale it within a poll interval)."""
        with self._write() as conn:
            done = conn.execute(deployments.update().where(deployments.c.name == name).values(instances=instances))
            if done.rowcount == 0:
                raise KeyError(name)
        found = self.get_deployment(name)
        assert found is not None
        return found

    def set_upstream(self, name: str, upstream_url: str) -> Deployment:
        """The servers an `--upstream` deployment forwards to (base URLs separated by commas)."""
        with self._write() as conn:
            changed = deployments.update().where(deployments.c.name == name).values(upstream_url=upstream_url)
            if conn.execute(changed).rowcount == 0:
                raise KeyError(name)
        found = self.get_deployment(name)
        assert found is not None
        return found

    def update_settings(self, name: str, changes: Mapping[str, Any]) -> Deployment:
        """Merge `changes` into a deployment's settings (a None value removes the setting)."""
        with self._write() as conn:
            row = conn.execute(sa.select(deployments.c.settings).where(deployments.c.name == name)).first()
            if row is None:
                raise KeyError(name)
            settings = {**_json(row[0]), **changes}
            settings = {k: v for k, v in settings.items() if v is not None}
            conn.execute(deployments.update().where(deployments.c.name == name).values(settings=settings))
        found = self.get_deployment(name)
        assert found is not None
        return found

    def set_key(self, name: str, slot: str, key_hash: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        where = (deployment_keys.c.deployment == name) & (deployment_keys.c.slot == slot)
        with self._write() as conn:
            if conn.execute(deployment_keys.update().where(where).values(key_hash=key_hash, created_at=now)).rowcount:
                return
            conn.execute(deployment_keys.insert().values(deployment=name, slot=slot, key_hash=key_hash, created_at=now))

    def set_admin_key(self, key_hash: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._write() as conn:
            conn.execute(admin_keys.delete())
            conn.execute(admin_keys.insert().values(id=1, key_hash=key_hash, created_at=now))


def iso_time(timestamp: float) -> str:
    """A stored time as the API and the CLI show it: ISO 8601 in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def _deployment(row: RowMapping) -> Deployment:
    values = dict(row)
    values["settings"] = _json(values["settings"])
    values["shared_quota"] = bool(values["shared_quota"])
    return Deployment(**values)


def _key(row: RowMapping) -> StoredKey:
    return StoredKey(row["slot"], row["key_hash"], row["created_at"])
