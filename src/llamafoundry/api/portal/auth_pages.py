"""Signing in and out of the portal.

A key signs in when the management API accepts it: the admin key, or a project key (which then sees its own project
only); a deployment key or the server's own `--api-key` is refused there. `identify` asks the API who the key is
(`GET /management/whoami`); the pages ask `principal.can(...)`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from llamafoundry.api.portal.client import ApiClient, PortalApiError, SignedOut
from llamafoundry.api.portal.sessions import (
    ADMIN,
    COOKIE_NAME,
    COOKIE_PATH,
    MAX_AGE_S,
    Principal,
    Session,
    is_same_origin,
    project_principal,
)
from llamafoundry.api.portal.web import PREFIX, SIGN_IN, Portal, Route, field, form_data, redirect

WRONG_KEY = (
    "This key does not open the portal. Sign in with the admin key of this server's management API "
    "(`llamafoundry deploy admin-key --regenerate` prints a new one) or a project key (`llamafoundry project key "
    "create`); deployment keys and the server's --api-key open only their models."
)


async def identify(app: ASGIApp, api_key: str) -> Principal | None:
    """Who `api_key` is, by asking the API what it opens; None when it opens nothing the portal shows."""
    try:
        async with ApiClient(app, api_key) as api:
            who = await api.get("/management/whoami")
    except SignedOut:
        return None
    if who.get("project") is None:
        return ADMIN
    return project_principal(str(who["project"]), str(who["actor"]))


def sign_in_routes(portal: Portal) -> list[Route]:
    """(path, endpoint, methods) of the sign-in and sign-out pages."""

    async def sign_in_page(request: Request) -> Response:
        target = _next(request.query_params.get("next"))
        if portal.sessions.get(request.cookies.get(COOKIE_NAME)) is not None:
            return redirect(target)
        notice = "Your session ended: sign in again." if request.query_params.get("expired") else None
        if request.query_params.get("signed_out"):
            notice = "You are signed out."
        return portal.render(request, "sign_in.html", None, next=target, notice=notice)

    async def sign_in(request: Request) -> Response:
        form = await form_data(request)
        target = _next(field(form, "next"))
        if not is_same_origin(request):
            return portal.error_page(request, None, 403, "Request refused", "Sign in from this server's own page.")
        key = field(form, "api_key")
        if not key:
            return portal.render(request, "sign_in.html", None, 400, next=target, error="Enter an API key.")
        try:
            principal = await identify(request.app, key)
        except PortalApiError as exc:  # the store is down, say: the API's sentence
            return portal.render(request, "sign_in.html", None, exc.status, next=target, error=exc.message)
        if principal is None:
            return portal.render(request, "sign_in.html", None, 401, next=target, error=WRONG_KEY)
        old = request.cookies.get(COOKIE_NAME)
        if old:
            portal.sessions.end(old)  # a new id at every sign-in: a planted cookie never becomes a session
        session = portal.sessions.create(key, principal)
        response = redirect(target)
        response.set_cookie(COOKIE_NAME, session.id, max_age=int(MAX_AGE_S), path=COOKIE_PATH, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
        return response

    async def sign_out(request: Request, session: Session) -> Response:
        portal.sessions.end(session.id)
        response = redirect(f"{SIGN_IN}?signed_out=1")
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
        return response

    async def home(request: Request, session: Session) -> Response:
        return redirect(f"{PREFIX}/deployments")

    return [
        (SIGN_IN, sign_in_page, ["GET"]),
        (SIGN_IN, sign_in, ["POST"]),
        (f"{PREFIX}/sign-out", portal.page(sign_out, csrf=True), ["POST"]),
        (PREFIX, portal.page(home), ["GET"]),
    ]


def _next(target: str | None) -> str:
    """Where to go after signing in: a portal page of this server only (never another site)."""
    target = target or ""
    if not target.startswith(PREFIX) or target.startswith("//") or "\\" in target or target.startswith(SIGN_IN):
        return f"{PREFIX}/deployments"
    return target
