"""The catalog: every model as a card with a search box and filters, and a model's page with its card text and a
Deploy button. The models come from `GET /management/models`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llamafoundry.api.portal.sessions import READ_CATALOG, Session
from llamafoundry.api.portal.web import PREFIX, Portal, Route, segment

# filter name -> (label, choices as (value, label)); "" is "any"
FILTERS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "type": ("Deployment type", (("", "Any"), ("serverless", "Serverless API"), ("managed", "Managed compute"))),
    "input": ("Input", (("", "Any"), ("text", "Text only"), ("image", "Text and images"))),
    "tools": ("Tool calling", (("", "Any"), ("yes", "Supports tools"), ("no", "No tools"))),
    "preview": ("Preview", (("", "Any"), ("hide", "Hide preview models"), ("only", "Preview only"))),
}


def matches(model: dict[str, Any], query: str, chosen: dict[str, str]) -> bool:
    """Whether a catalog entry passes the search words (all of them, in its name, description, intended use,
    languages or licence) and the filters."""
    text = " ".join([model["name"], model.get("description", ""), model.get("intended_use", ""),
                     " ".join(model.get("languages", [])), model.get("license_name", "")]).lower()  # fmt: skip
    if any(word not in text for word in query.lower().split()):
        return False
    if chosen.get("type") and chosen["type"] not in model["deployment_types"]:
        return False
    takes_images = "image" in model["input_modalities"]
    if chosen.get("input") and (chosen["input"] == "image") != takes_images:
        return False
    if chosen.get("tools") and (chosen["tools"] == "yes") != bool(model["supports_tools"]):
        return False
    preview = chosen.get("preview")
    return not (preview == "hide" and model["is_preview"]) and not (preview == "only" and not model["is_preview"])


def catalog_routes(portal: Portal) -> list[Route]:
    async def catalog(request: Request, session: Session) -> Response:
        async with portal.api(request, session) as api:
            models = (await api.get("/management/models"))["data"]
        query = request.query_params.get("q", "").strip()
        chosen = {name: request.query_params.get(name, "") for name in FILTERS}
        shown = [m for m in models if matches(m, query, chosen)]
        return portal.render(request, "catalog.html", session, models=shown, total=len(models), q=query,
                             chosen=chosen, filters=FILTERS)  # fmt: skip

    async def model_page(request: Request, session: Session) -> Response:
        async with portal.api(request, session) as api:
            model = await api.get(f"/management/models/{segment(request.path_params['model'])}")
            deployments = (await api.get("/management/deployments"))["data"]
        mine = [d for d in deployments if d["model"] == model["name"]]
        return portal.render(request, "model.html", session, model=model, deployments=mine)

    return [
        (f"{PREFIX}/catalog", portal.page(catalog, READ_CATALOG), ["GET"]),
        (f"{PREFIX}/catalog/{{model}}", portal.page(model_page, READ_CATALOG), ["GET"]),
    ]
