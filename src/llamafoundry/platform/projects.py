"""Projects, as Azure AI Foundry scopes work: every deployment belongs to one; keys, token grants, budgets and
usage are per project. Endpoint URLs do not change (`/deployments/<name>`; names are unique per server).

Every store has the project `default` (migration 0007 moves existing deployments there); it cannot be deleted,
and a project that still has deployments cannot be deleted either (delete them first). Deleting a project
deletes its keys, grants and budgets.

Grants say which Entra ID tokens open a project's managed deployments, as Azure's role assignments do: a token
whose subject (`oid`, else `sub`), one of whose `groups`, or one of whose app `roles` is granted, optionally for
some of the project's deployments only. Used by the `project` commands and the management API alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from llamafoundry.platform.errors import DeploymentConflict, ProjectError, ProjectNotFound
from llamafoundry.platform.store import DEFAULT_PROJECT, Store, StoreConflict, deployments, iso_time, metadata

_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
GRANT_KINDS = ("subject", "group", "app_role", "any")
MAX_GRANT_VALUE = 256

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
)
project_grants = sa.Table(
    "project_grants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(64), sa.ForeignKey("projects.name", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("deployments", sa.JSON),
    sa.Column("created_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Project:
    name: str
    description: str | None
    created_at: float


@dataclass(frozen=True)
class Grant:
    """Tokens of `kind` `value` (a subject's object id, a group id, an app role's name; `any`: every token of the
    configured issuer) open the project's managed deployments, or only `deployments`."""

    project: str
    kind: str
    value: str
    deployments: tuple[str, ...] | None
    created_at: float

    def matches(self, claims: Mapping[str, Any], deployment: str) -> bool:
        if self.deployments is not None and deployment not in self.deployments:
            return False
        if self.kind == "any":
            return True
        if self.kind == "subject":
            return self.value in (claims.get("oid"), claims.get("sub"))
        listed = claims.get("groups" if self.kind == "group" else "roles")
        return isinstance(listed, list) and self.value in listed

    def describe(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "value": self.value, "created_at": iso_time(self.created_at)}
        body["deployments"] = list(self.deployments) if self.deployments is not None else "all"
        return body


def check_project_name(name: str) -> str:
    lowered = name.lower()
    if not _NAME.match(lowered) or "--" in lowered:
        raise ProjectError(
            f"'{name}' is not a valid project name: use 3 to 32 letters, digits and single hyphens, starting with a "
            "letter and not ending with a hyphen (for example 'team-search')."
        )
    return lowered


def check_project(store: Store, name: str | None) -> str:
    """The project called `name` (lowercased; None: `default`). Raises ProjectNotFound."""
    return get_project(store, name or DEFAULT_PROJECT).name


def get_project(store: Store, name: str) -> Project:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(projects).where(projects.c.name == name.lower())).mappings().first()
    if row is None:
        raise ProjectNotFound(f"Project '{name}' not found. `llamafoundry project list` shows the projects.")
    return Project(row["name"], row["description"], row["created_at"])


def list_projects(store: Store) -> list[Project]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(projects).order_by(projects.c.name)).mappings()
        return [Project(row["name"], row["description"], row["created_at"]) for row in rows]


def create_project(store: Store, name: str, description: str | None = None, now: float | None = None) -> Project:
    name = check_project_name(name)
    project = Project(name, description, time.time() if now is None else now)
    try:
        with store.write() as conn:
            conn.execute(projects.insert().values(**project.__dict__))
    except StoreConflict:
        raise DeploymentConflict(f"A project named '{name}' already exists. Choose another name.") from None
    return project


def delete_project(store: Store, name: str) -> None:
    """Delete an empty project with its keys, grants and budgets. The `default` project stays."""
    project = get_project(store, name)
    if project.name == DEFAULT_PROJECT:
        raise ProjectError("The project 'default' cannot be deleted: deployments made without --project go there.")
    names = project_deployments(store, project.name)
    if names:
        raise DeploymentConflict(
            f"Project '{project.name}' still has deployments ({', '.join(names)}). Delete them first "
            "(`llamafoundry deploy delete NAME`), then the project."
        )
    with store.write() as conn:
        conn.execute(projects.delete().where(projects.c.name == project.name))


def project_deployments(store: Store, project: str) -> list[str]:
    query = sa.select(deployments.c.name).where(deployments.c.project == project).order_by(deployments.c.name)
    with store.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def check_deployments(store: Store, project: str, names: Iterable[str] | None) -> tuple[str, ...] | None:
    """A subset of the project's deployments (None: all of them). Raises when a name is not one of them."""
    if names is None:
        return None
    wanted = tuple(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
    if not wanted:
        raise ProjectError("Name at least one deployment, or leave the deployments out for all of the project's.")
    known = set(project_deployments(store, project))
    missing = [name for name in wanted if name not in known]
    if missing:
        raise ProjectError(
            f"Project '{project}' has no deployment called {', '.join(repr(n) for n in missing)}. Its deployments: "
            f"{', '.join(sorted(known)) or 'none yet'}."
        )
    return wanted


# ---- grants ---------------------------------------------------------------------------------------------------


def add_grant(
    store: Store, project: str, kind: str, value: str, deployment_names: Iterable[str] | None = None,
    now: float | None = None,
) -> Grant:  # fmt: skip
    """Grant tokens of a subject, group or app role access to the project's managed deployments."""
    project = get_project(store, project).name
    kind, value = _check_grant(kind, value)
    subset = check_deployments(store, project, deployment_names)
    grant = Grant(project, kind, value, subset, time.time() if now is None else now)
    values = {**grant.__dict__, "deployments": list(subset) if subset is not None else None}
    try:
        with store.write() as conn:
            conn.execute(project_grants.insert().values(**values))
    except StoreConflict:
        raise DeploymentConflict(f"Project '{project}' already grants {kind} {value}.") from None
    return grant


def remove_grant(store: Store, project: str, kind: str, value: str) -> None:
    project = get_project(store, project).name
    kind, value = _check_grant(kind, value)
    where = (project_grants.c.project == project) & (project_grants.c.kind == kind) & (project_grants.c.value == value)
    with store.write() as conn:
        if not conn.execute(project_grants.delete().where(where)).rowcount:
            raise ProjectNotFound(f"Project '{project}' has no grant to {kind} {value}; nothing was removed.")


def list_grants(store: Store, project: str | None = None) -> list[Grant]:
    query = sa.select(project_grants).order_by(project_grants.c.project, project_grants.c.id)
    if project is not None:
        query = query.where(project_grants.c.project == project)
    with store.engine.connect() as conn:
        return [_grant(row) for row in conn.execute(query).mappings()]


def _check_grant(kind: str, value: str) -> tuple[str, str]:
    kind = kind.lower().replace("-", "_")
    if kind not in GRANT_KINDS:
        raise ProjectError(f"'{kind}' is not a kind of grant: use subject, group, app_role or any.")
    if kind == "any":
        return kind, "*"
    value = value.strip()
    if not value or len(value) > MAX_GRANT_VALUE:
        raise ProjectError(f"Give the {kind.replace('_', ' ')} to grant (an object id, group id or role name).")
    return kind, value


def _grant(row: sa.RowMapping) -> Grant:
    names = row["deployments"]
    return Grant(row["project"], row["kind"], row["value"], tuple(names) if names is not None else None,
                 row["created_at"])  # fmt: skip


def describe_project(project: Project, deployment_names: list[str]) -> dict[str, Any]:
    return {"name": project.name, "description": project.description, "created_at": iso_time(project.created_at),
            "deployments": deployment_names}  # fmt: skip

