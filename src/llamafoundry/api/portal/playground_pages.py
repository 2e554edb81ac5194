"""The playground page. The chat itself runs in the browser (`static/playground.js`), as a client of the real
inference routes: `POST /deployments/<name>/chat/completions` (or the bare `/chat/completions` for the server's
own model) with an `api-key`, streamed as the SDKs read it (server-sent events).

Keys are stored hashed, so the page can fill in only the keys this session was shown (a deployment created or a
key regenerated here) and, for a principal allowed to, the server's own `--api-key`; a project key, which opens its
project's deployments for inference too, is filled in for those it opens; otherwise the user pastes one. A project
key's session does not see the server's own model (its key does not open it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llamafoundry.api.portal.sessions import READ_DEPLOYMENTS, USE_SERVER_MODEL, Session
from llamafoundry.api.portal.views import status_view
from llamafoundry.api.portal.web import PREFIX, Portal, Route, segment

CHAT_PATH = "/chat/completions"


def playground_targets(portal: Portal, session: Session, deployments: list[dict[str, Any]],
                       opened: Sequence[str] | str = ()) -> list[dict[str, Any]]:  # fmt: skip
    """What the playground can chat with: the server's own model first, then the deployments, each with its chat
    URL (relative: the page's own origin), endpoint path for the code samples, and a key when one is known.
    `opened`: the deployments the session's own key opens for inference ("all" or names: a project key's)."""
    targets = []
    own = portal.own_model
    if own is not None and session.principal.project is None:
        key = own.api_key if session.principal.can(USE_SERVER_MODEL) else ""
        targets.append({"name": own.name, "label": f"{own.name} (this server's model)", "url": CHAT_PATH,
                        "endpoint": "", "key": key, "state": "ready"})  # fmt: skip
    for deployment in deployments:
        known = session.known_keys(deployment["name"])
        view = status_view(deployment.get("status"))
        own_key = session.api_key if opened == "all" or deployment["name"] in opened else ""
        targets.append({"name": deployment["name"], "label": f"{deployment['name']} ({deployment['model']})",
                        "url": f"/deployments/{deployment['name']}{CHAT_PATH}",
                        "endpoint": f"/deployments/{deployment['name']}",
                        "key": known.get("primary") or known.get("secondary") or own_key,
                        "state": view.label})  # fmt: skip
    return targets


def playground_routes(portal: Portal) -> list[Route]:
    async def playground(request: Request, session: Session) -> Response:
        principal = session.principal
        opened: Sequence[str] | str = []
        async with portal.api(request, session) as api:
            deployments = (await api.get("/management/deployments"))["data"]
            if principal.project is not None:
                keys = (await api.get(f"/management/projects/{segment(principal.project)}/keys"))["data"]
                opened = next((k["deployments"] for k in keys if k["id"] == principal.key_id), [])
        targets = playground_targets(portal, session, deployments, opened)
        chosen = request.query_params.get("deployment") or (targets[0]["name"] if targets else "")
        return portal.render(request, "playground.html", session, targets=targets, chosen=chosen,
                             base_url=str(request.base_url).rstrip("/"))  # fmt: skip

    return [(f"{PREFIX}/playground", portal.page(playground, READ_DEPLOYMENTS), ["GET"])]
