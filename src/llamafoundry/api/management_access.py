"""Who may use the management API, and how far.

- The **admin key** manages everything.
- A **project key** reads its own project only: the project, its deployments (their status, key ids, content
  safety), its usage and its audit log, and the catalog. Anything else, and every change, is refused: another
  project's resources answer 404 as if they did not exist (names cannot be probed), changes and server-wide routes
  answer 403 saying that the admin key is needed.

The route dependency leaves a `Principal` in `request.state.principal` (handlers filter lists by its project) and
the caller's key id in the request's context (the access log and the audit log name it; never the key).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from llamafoundry.api.auth import AuthError, presented_keys
from llamafoundry.api.context import context_of
from llamafoundry.platform.keys import match_key
from llamafoundry.platform.project_keys import active_keys, match_project_key
from llamafoundry.platform.store import Store
from llamafoundry.protocol.errors import ApiError, not_found

ADMIN = "admin"
PROJECT_KEY = "project-key"
# routes (by name) a project key may read (GET) beside those naming its own project or one of its deployments
_PROJECT_READABLE = ("principal.show", "model.list", "model.show", "deployment.list", "usage.show", "audit.list",
                     "project.list")


@dataclass(frozen=True)
class Principal:
    """Who calls the management API: the admin key, or a project key (`project` is then its project)."""

    actor: str  # the key's id (`key-...`), never the key
    actor_type: str  # ADMIN or PROJECT_KEY
    project: str | None = None  # None: every project

    def scope(self, requested: str | None) -> str | None:
        """The project a listing is limited to: `requested` for the admin key, the key's own for a project key
        (asking for another project is a 404, as if it did not exist)."""
        if self.project is None:
            return requested
        if requested is not None and requested.lower() != self.project:
            raise not_found(f"Project '{requested}' not found.")
        return self.project


def principal_of(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    assert principal is not None, "a management route without the management dependency"
    return principal


def management_dependency(store: Store) -> Callable[[Request], Awaitable[None]]:
    """The dependency of every `/management` route: 401 (the MaaS body) without the admin key or a project key;
    403/404 for a project key outside its project."""

    async def require_principal(request: Request) -> None:
        request.state.audit_store = store  # the audit middleware records changes (also refused ones) there
        principal = await asyncio.to_thread(_principal, store, presented_keys(request.headers))
        if principal is None:
            raise AuthError()
        request.state.principal = principal
        context_of(request).key_id = principal.actor
        name = request.path_params.get("name")
        if name is not None and request.method not in ("GET", "HEAD"):  # the audit entry's project, before a delete
            found = await asyncio.to_thread(store.get_deployment, name.lower())
            request.state.audit_project = found.project if found is not None else None
        if principal.project is not None:
            await asyncio.to_thread(_check_project_scope, store, request, principal.project)

    return require_principal


def _principal(store: Store, presented: list[str]) -> Principal | None:
    admin = store.admin_key()
    if admin is not None and match_key(presented, [admin]) is not None:
        return Principal(admin.key_id, ADMIN)
    key = match_project_key(presented, active_keys(store), time.time())
    return Principal(key.id, PROJECT_KEY, key.project) if key is not None else None


def _check_project_scope(store: Store, request: Request, project: str) -> None:
    route = getattr(request.scope.get("route"), "name", "")  # the route's name: `project.show`, ...
    if request.method not in ("GET", "HEAD"):
        raise ApiError(403, "Forbidden", f"A project key can read project '{project}' (its deployments, usage and "
                       "audit log) but not change anything: changes need the admin key.")  # fmt: skip
    params = request.path_params
    if "project" in params:
        if params["project"].lower() != project:
            raise not_found(f"Project '{params['project']}' not found.")
        return
    if "name" in params and route.startswith("deployment."):
        found = store.get_deployment(params["name"].lower())
        if found is None or found.project != project:
            raise not_found(f"Deployment '{params['name']}' not found.")
        return
    if route not in _PROJECT_READABLE:
        raise ApiError(403, "Forbidden", f"A project key (of project '{project}') cannot use {request.url.path}: it "
                       "needs the admin key.")  # fmt: skip
