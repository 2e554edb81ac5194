"""The playground page. The chat itself runs in the browser (`static/playground.js`), as a client of the real
inference routes: `POST /deployments/<name>/chat/completions` (or the bare `/chat/completions` for the server's
own model) with an `api-key`, streamed as the SDKs read it (server-sent events).

Keys are stored hashed, so the page can fill in only the keys this session was shown (a deployment created or a
key regenerated here) and, for a principal allowed to, the server's own `--api-key`; otherwise the user pastes one.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llamafoundry.api.portal.sessions import READ_DEPLOYMENTS, USE_SERVER_MODEL, Session
from llamafoundry.api.portal.views import status_view
from llamafoundry.api.portal.web import PREFIX, Portal, Route

CHAT_PATH = "/chat/completions"


def playground_targets(portal: Portal, session: Session, deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the playground can chat with: the server's own model first, then the deployments, each with its chat
    URL (relative: the page's own origin), endpoint path for the code samples, and a key when one is known."""
    targets = []
    own = portal.own_model
    if own is not None:
        key = own.api_key if session.principal.can(USE_SERVER_MODEL) else ""
        targets.append({"name": own.name, "label": f"{own.name} (this server's model)", "url": CHAT_PATH,
                        "endpoint": "", "key": key, "state": "ready"})  # fmt: skip
    for deployment in deployments:
        known = session.known_keys(deployment["name"])
        view = status_view(deployment.get("status"))
        targets.append({"name": deployment["name"], "label": f"{deployment['name']} ({deployment['model']})",
                        "url": f"/deployments/{deployment['name']}{CHAT_PATH}",
                        "endpoint": f"/deployments/{deployment['name']}",
                        "key": known.get("primary") or known.get("secondary") or "", "state": view.label})  # fmt: skip
    return targets


def playground_routes(portal: Portal) -> list[Route]:
    async def playground(request: Request, session: Session) -> Response:
        async with portal.api(request, session) as api:
            deployments = (await api.get("/management/deployments"))["data"]
        targets = playground_targets(portal, session, deployments)
        chosen = request.query_params.get("deployment") or (targets[0]["name"] if targets else "")
        return portal.render(request, "playground.html", session, targets=targets, chosen=chosen,
                             base_url=str(request.base_url).rstrip("/"))  # fmt: skip

    return [(f"{PREFIX}/playground", portal.page(playground, READ_DEPLOYMENTS), ["GET"])]
