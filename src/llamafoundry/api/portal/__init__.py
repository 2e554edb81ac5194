"""The portal at `/portal`: catalog, deployments and their keys, the playground and usage in the browser.

Server-rendered pages (Jinja2) with small progressive enhancement (htmx, and plain JavaScript for the playground
and the charts); every asset ships in this package (`static/`, the vendored libraries with their licences).
The server side is a client of the management API (`client.py`), the playground a client of the inference API:
the portal adds no rule of its own. docs/portal.md says how it is built and why.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from llamafoundry.api.portal.auth_pages import sign_in_routes
from llamafoundry.api.portal.catalog_pages import catalog_routes
from llamafoundry.api.portal.deploy_pages import deploy_routes
from llamafoundry.api.portal.deployment_pages import deployment_routes
from llamafoundry.api.portal.playground_pages import playground_routes
from llamafoundry.api.portal.sessions import Session, SessionStore
from llamafoundry.api.portal.usage_pages import usage_routes
from llamafoundry.api.portal.web import PREFIX, OwnModel, Portal

__all__ = ["OwnModel", "portal_router"]


def portal_router(own_model: OwnModel | None, sessions: SessionStore | None = None) -> APIRouter:
    """The portal's routes.

    Args:
        own_model: the server's own model (name and `--api-key`) for the playground; None under `--no-default`.
        sessions: where sessions live (default: a new in-memory store).
    """
    portal = Portal(own_model, sessions)
    router = APIRouter(include_in_schema=False)
    routes = [
        *sign_in_routes(portal),
        *catalog_routes(portal),
        *deploy_routes(portal),
        *deployment_routes(portal),
        *playground_routes(portal),
        *usage_routes(portal),
    ]
    for path, endpoint, methods in routes:
        router.add_api_route(path, endpoint, methods=methods)

    async def static(request: Request) -> Response:
        return portal.asset(request.path_params["path"])

    async def not_found(request: Request, session: Session) -> Response:
        return portal.error_page(request, session, 404, "Not found", f"There is no page at {request.url.path}.")

    # the assets are public (the sign-in page needs them); they are the package's files, no data
    router.add_api_route(f"{PREFIX}/static/{{path:path}}", static, methods=["GET"])
    router.add_api_route(f"{PREFIX}/{{rest:path}}", portal.page(not_found), methods=["GET", "POST"])
    return router
