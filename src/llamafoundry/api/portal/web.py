"""What every portal page shares: templates, security headers, the sign-in guard, CSRF checks, form parsing and
the packaged static files.

Pages are handlers `async (request, session) -> Response` wrapped by `Portal.page(...)`, which answers a request
without a session with a redirect to the sign-in page, a POST without the session's CSRF token (or from another
origin) with 403, and turns the management API's refusals into pages: its 401 ends the session, its 404 is a
"not found" page, and other errors are shown with the API's sentence.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from llamafoundry import __version__
from llamafoundry.api.body import read_body
from llamafoundry.api.portal.client import ApiClient, PortalApiError, SignedOut
from llamafoundry.api.portal.sessions import (
    COOKIE_NAME,
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    WRITE_DEPLOYMENTS,
    WRITE_KEYS,
    Session,
    SessionStore,
    is_same_origin,
)

PREFIX = "/portal"
SIGN_IN = f"{PREFIX}/sign-in"
# No inline script or style anywhere: a page can run only the packaged files, talk only to this server, and
# cannot be framed (clickjacking) or post forms elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".svg": "image/svg+xml"}

Handler = Callable[[Request, Session], Awaitable[Response]]
Route = tuple[str, Callable[..., Any], list[str]]  # (path, endpoint, methods)


@dataclass(frozen=True)
class OwnModel:
    """The server's own model (the bare routes), which the playground can chat with: its name and key."""

    name: str
    api_key: str


class Portal:
    """The portal's shared state: sessions, templates, and the server's own model (None: `--no-default`)."""

    def __init__(self, own_model: OwnModel | None, sessions: SessionStore | None = None) -> None:
        self.own_model = own_model
        self.sessions = sessions or SessionStore()
        self.templates = Environment(
            loader=PackageLoader("llamafoundry.api.portal", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(prefix=PREFIX, version=__version__, WRITE_DEPLOYMENTS=WRITE_DEPLOYMENTS,
                                      WRITE_KEYS=WRITE_KEYS)  # fmt: skip
        self.templates.filters["dollars"] = dollars
        self.static = _static_files()

    # ---- responses ----------------------------------------------------------------------------------------

    def render(self, request: Request, template: str, session: Session | None, status: int = 200,
               **context: Any) -> HTMLResponse:  # fmt: skip
        """`template` with the page's common context (the session, its CSRF token, flashes, the current path)."""
        body = self.templates.get_template(template).render(
            session=session,
            principal=session.principal if session else None,
            csrf_token=session.csrf_token if session else "",
            flashes=session.pop_flashes() if session else [],
            path=request.url.path,
            **context,
        )
        return HTMLResponse(body, status, headers=SECURITY_HEADERS)

    def fragment(self, template: str, **context: Any) -> HTMLResponse:
        """A part of a page (htmx swaps it in)."""
        return HTMLResponse(self.templates.get_template(template).render(**context), headers=SECURITY_HEADERS)

    def error_page(self, request: Request, session: Session | None, status: int, title: str,
                   message: str) -> HTMLResponse:  # fmt: skip
        return self.render(request, "error.html", session, status, title=title, message=message)

    def api(self, request: Request, session: Session) -> ApiClient:
        return ApiClient(request.app, session.api_key)

    # ---- guards -------------------------------------------------------------------------------------------

    def page(self, handler: Handler, permission: str | None = None, *, csrf: bool = False) -> Callable[..., Any]:
        """Wrap `handler`: a session is required (else a redirect to sign in), `permission` checked, and with
        `csrf` (every POST) the request must come from this origin with the session's token."""

        async def endpoint(request: Request) -> Response:
            session = self.sessions.get(request.cookies.get(COOKIE_NAME))
            if session is None:
                return sign_in_redirect(request)
            if csrf and not await _passes_csrf(request, session):
                message = ("This form was sent from another site, or from a page older than your session. "
                           "Reload the page and try again.")  # fmt: skip
                return self.error_page(request, session, 403, "Request refused", message)
            if permission is not None and not session.principal.can(permission):
                return self.error_page(request, session, 403, "Not allowed", not_allowed(session))
            try:
                return await handler(request, session)
            except SignedOut:
                self.sessions.end(session.id)
                return sign_in_redirect(request, expired=True)
            except PortalApiError as exc:
                title = {404: "Not found", 403: "Not allowed"}.get(exc.status, "The request failed")
                return self.error_page(request, session, exc.status, title, exc.message)

        return endpoint

    def asset(self, name: str) -> Response:
        path = self.static.get(name)
        if path is None:
            return Response("Not found", 404, media_type="text/plain")
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type=STATIC_TYPES.get(path.suffix, "application/octet-stream"),
                            headers=headers)  # fmt: skip


def not_allowed(session: Session) -> str:
    """Why a page is refused to this session's key."""
    project = session.principal.project
    if project is not None:
        return (f"Your key is a project key of '{project}': it reads its project's deployments and usage but changes "
                "nothing; changes need the admin key.")  # fmt: skip
    return "Your key does not open this page."


def sign_in_redirect(request: Request, expired: bool = False) -> Response:
    """To the sign-in page, which returns here afterwards (htmx requests are told to load it as a page)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or target.startswith(SIGN_IN):
        target = PREFIX
    location = f"{SIGN_IN}?next={quote(target, safe='')}" + ("&expired=1" if expired else "")
    response = RedirectResponse(location, 303)
    if request.headers.get("hx-request"):
        response.headers["HX-Redirect"] = location
    if expired:
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
    return response


def redirect(location: str) -> RedirectResponse:
    """Post/redirect/get: a state change answers with the page to show next."""
    return RedirectResponse(location, 303)


async def form_data(request: Request) -> dict[str, list[str]]:
    """An `application/x-www-form-urlencoded` body (the portal's forms), every field as the list of its values;
    cached on the request, since the CSRF check reads it first."""
    cached = request.scope.get("portal_form")
    if cached is None:
        cached = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            for key, value in parse_qsl((await read_body(request)).decode("utf-8", "replace"), keep_blank_values=True):
                cached.setdefault(key, []).append(value)
        request.scope["portal_form"] = cached
    return dict(cached)


def dollars(value: float | None) -> str:
    """As `llamafoundry usage` prints costs: 4 decimals, amounts under a tenth of a cent to 2 significant digits
    (a cost never reads 0.0000), n/a without a price."""
    if value is None:
        return "n/a"
    decimals = 4 if value == 0 or value >= 0.001 else 1 - math.floor(math.log10(value))
    return f"{value:,.{decimals}f}"


def segment(name: str) -> str:
    """`name` as one segment of an API path (a name from a URL never reaches another route)."""
    return quote(name, safe="")


def field(form: dict[str, list[str]], name: str) -> str:
    """One text field, stripped ('' when absent)."""
    return (form.get(name) or [""])[-1].strip()


async def _passes_csrf(request: Request, session: Session) -> bool:
    if not is_same_origin(request):
        return False
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        token = field(await form_data(request), CSRF_FIELD) or None
    return session.is_csrf_token(token)


def _static_files() -> dict[str, Path]:
    """The files under static/, by their path there: only these are served (no path is joined from a URL)."""
    root = Path(str(resources.files("llamafoundry.api.portal") / "static"))
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
