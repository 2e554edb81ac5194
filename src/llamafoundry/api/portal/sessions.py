"""Portal sessions: who signed in, with which key, and the CSRF token of their forms.

A session lives in this server's memory; the browser holds only its random id, in an HttpOnly, SameSite=Strict
cookie scoped to `/portal`. The key the user signed in with stays on the server, in the session: the portal
calls the management API with it (`client.ApiClient`), so what a session may do is what that key may do, and a key
regenerated or revoked ends its sessions at their next request.

Every state-changing request (POST) must carry the session's CSRF token (a form field or the `X-CSRF-Token`
header), and its `Origin`, when the browser sends one, must be this server's: a page on another site can neither
read the token nor pass the Origin check, and SameSite=Strict keeps the cookie off its requests in the first place.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import Request

COOKIE_NAME = "llamafoundry_portal"
COOKIE_PATH = "/portal"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
IDLE_TIMEOUT_S = 2 * 3600  # an admin console left open: sign in again after two idle hours
MAX_AGE_S = 12 * 3600  # and after twelve hours whatever happens
MAX_SESSIONS = 1000  # sessions exist only after a successful sign-in; this bounds memory all the same

# What a signed-in principal may do. The admin key may do everything; a project key reads its own project (the
# management API filters what it lists and refuses its changes), and pages ask `can()` rather than "is this the admin".
READ_CATALOG = "catalog.read"
READ_DEPLOYMENTS = "deployments.read"
WRITE_DEPLOYMENTS = "deployments.write"
WRITE_KEYS = "keys.write"
READ_USAGE = "usage.read"
USE_SERVER_MODEL = "server-model.use"  # the playground may use the server's own `--api-key`
ALL_PERMISSIONS = frozenset(
    {READ_CATALOG, READ_DEPLOYMENTS, WRITE_DEPLOYMENTS, WRITE_KEYS, READ_USAGE, USE_SERVER_MODEL}
)
PROJECT_PERMISSIONS = frozenset({READ_CATALOG, READ_DEPLOYMENTS, READ_USAGE})


@dataclass(frozen=True)
class Principal:
    """Who a session is: `kind` "admin" (the management API's admin key) or "project" (a project key of
    `project`; `key_id` is its id)."""

    kind: str
    name: str
    permissions: frozenset[str]
    project: str | None = None
    key_id: str | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions


ADMIN = Principal("admin", "admin", ALL_PERMISSIONS)


def project_principal(project: str, key_id: str) -> Principal:
    """A project key's principal: it reads its project (deployments, usage) and the catalog, and changes nothing."""
    return Principal("project", f"project {project}", PROJECT_PERMISSIONS, project, key_id)


@dataclass
class Session:
    """One signed-in browser. `keys` are deployment keys this session was shown (created or regenerated here):
    kept so that the deployment page can copy them and the playground can use them, never written anywhere."""

    id: str
    api_key: str
    principal: Principal
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (deployment, slot) -> key
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, sentence) shown on the next page

    def flash(self, message: str, kind: str = "info") -> None:
        self.flashes.append((kind, message))

    def pop_flashes(self) -> list[tuple[str, str]]:
        found, self.flashes = self.flashes, []
        return found

    def remember_key(self, deployment: str, slot: str, key: str) -> None:
        self.keys[(deployment, slot)] = key

    def known_keys(self, deployment: str) -> dict[str, str]:
        return {slot: key for (name, slot), key in self.keys.items() if name == deployment}

    def forget_deployment(self, deployment: str) -> None:
        self.keys = {k: v for k, v in self.keys.items() if k[0] != deployment}

    def is_csrf_token(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token.encode())


class SessionStore:
    """Sessions of this server process, by id. Several gateway processes behind one address need sticky
    sessions (or a sign-in per process): sessions are not shared through the database."""

    def __init__(self, idle_timeout_s: float = IDLE_TIMEOUT_S, max_age_s: float = MAX_AGE_S) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_age_s = max_age_s
        self._sessions: dict[str, Session] = {}

    def create(self, api_key: str, principal: Principal) -> Session:
        self._purge()
        if len(self._sessions) >= MAX_SESSIONS:  # drop the least recently used
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = Session(secrets.token_urlsafe(32), api_key, principal)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        """The live session of this id (its idle clock restarted), or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        now = time.time() if now is None else now
        if session is None:
            return None
        if now - session.last_seen > self.idle_timeout_s or now - session.created_at > self.max_age_s:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _purge(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for session in list(self._sessions.values()):
            if now - session.last_seen > self.idle_timeout_s or now - session.created_at > self.max_age_s:
                del self._sessions[session.id]


def own_origin(request: Request) -> str:
    """This server's origin as the browser addressed it (`scheme://host[:port]`)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def is_same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin (`Origin`, else `Referer`); requests
    that carry neither (curl, old browsers) are judged by the CSRF token alone."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        origin = "/".join(referer.split("/", 3)[:3])
    return origin == own_origin(request)
