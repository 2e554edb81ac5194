"""`/management/deployments/{name}/content-safety`: a deployment's whole content-safety policy over HTTP, as
`deploy update --content-safety*` sets it (the portal's Settings tab uses it).

- `GET` answers the effective policy (the deployment type's default with its stored overrides) and the stored
  overrides: `{"policy": {...}, "overrides": {...}}`.
- `PATCH` takes any of `enabled`, `threshold`, `categories`, `jailbreak`, `indirect_attack`, `streaming` and `guard`
  (a Llama Guard 3 deployment's name; `null` or `""`: the built-in classifier), stores them with
  `content_safety_settings` (the CLI's rules and sentences) and answers as GET does.

Included in the `/management` router, so the admin-key check applies. Blocklists keep their own routes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from llamafoundry.api.body import read_body
from llamafoundry.api.errors import json_response
from llamafoundry.platform.content_safety import (
    SETTING_CONTENT_SAFETY,
    content_safety_settings,
    deployment_policy,
    is_guard_model,
)
from llamafoundry.platform.store import Deployment, Store
from llamafoundry.protocol.chat import parse_json_object
from llamafoundry.protocol.errors import ApiError, not_found

FIELDS: dict[str, type | tuple[type, ...]] = {
    "enabled": bool,
    "threshold": str,
    "categories": list,
    "jailbreak": bool,
    "indirect_attack": bool,
    "streaming": str,
    "guard": str,
}


def content_safety_router(store: Store) -> APIRouter:
    """The routes, relative to the `/management` router that includes them."""
    router = APIRouter()

    async def get_policy(request: Request) -> Response:
        deployment = await _deployment(store, request.path_params["name"])
        return json_response(_body(deployment))

    async def update_policy(request: Request) -> Response:
        body = parse_json_object(await read_body(request), request.headers.get("content-type"))
        _check_fields(body)
        deployment = await _deployment(store, request.path_params["name"])
        guard = body.get("guard")
        if guard:
            await asyncio.to_thread(_check_guard, store, guard)
        current = deployment.settings.get(SETTING_CONTENT_SAFETY)
        categories = body.get("categories")
        try:
            changes = content_safety_settings(
                current,
                enabled=body.get("enabled"),
                threshold=body.get("threshold"),
                categories=[str(c) for c in categories] if categories is not None else None,
                jailbreak=body.get("jailbreak"),
                guard=(guard or "") if "guard" in body else None,
                indirect_attack=body.get("indirect_attack"),
                streaming=body.get("streaming"),
            )
        except ValueError as exc:  # the CLI's sentence; the option it names is the field without "--content-safety-"
            message = str(exc)
            raise ApiError(400, "invalid_value", message, _param_of(message)) from None
        if not changes:
            raise ApiError(400, "missing_value", f"Nothing to change: send any of {', '.join(FIELDS)}.")
        updated = await asyncio.to_thread(store.update_settings, deployment.name, changes)
        return json_response(_body(updated))

    router.add_api_route("/deployments/{name}/content-safety", get_policy, methods=["GET"],
                         name="deployment.content_safety.show")
    router.add_api_route("/deployments/{name}/content-safety", update_policy, methods=["PATCH"],
                         name="deployment.content_safety.update")
    return router


async def _deployment(store: Store, name: str) -> Deployment:
    found = await asyncio.to_thread(store.get_deployment, name.lower())
    if found is None:
        raise not_found(f"Deployment '{name}' not found. `llamafoundry deploy list` shows the deployments.")
    return found


def _body(deployment: Deployment) -> dict[str, Any]:
    policy = deployment_policy(deployment.type, deployment.settings).to_dict()
    return {"name": deployment.name, "policy": policy,
            "overrides": dict(deployment.settings.get(SETTING_CONTENT_SAFETY) or {})}  # fmt: skip


def _check_fields(body: dict[str, Any]) -> None:
    for key, value in body.items():
        expected = FIELDS.get(key)
        if expected is None:
            raise ApiError(400, "invalid_value", f"Unknown field '{key}'. Send only: {', '.join(FIELDS)}.", key)
        if value is not None and not isinstance(value, expected):
            kind = "list of category names" if expected is list else ("boolean" if expected is bool else "string")
            raise ApiError(400, "invalid_value", f"'{key}' must be a {kind}.", key)


def _check_guard(store: Store, guard: str) -> None:
    """A guard must be a Llama Guard 3 deployment: a misspelt name would leave the deployment unfiltered (the filter
    fails open). The sentences of `deploy update --content-safety-guard`."""
    found = store.get_deployment(guard.lower())
    if found is None:
        raise ApiError(400, "invalid_value", f"--content-safety-guard {guard}: no deployment has that name. Deploy "
                       "Llama Guard 3 first (deploy create NAME --model Llama-Guard-3-1B --type managed ...), or send "
                       "no guard for the built-in classifier.", "guard")  # fmt: skip
    if not is_guard_model(found.model):
        raise ApiError(400, "invalid_value", f"--content-safety-guard {guard}: that deployment serves {found.model}, "
                       "not Llama Guard 3.", "guard")  # fmt: skip


def _param_of(message: str) -> str | None:
    prefix = "--content-safety-"
    if not message.startswith(prefix):
        return None
    return message[len(prefix) :].split(maxsplit=1)[0].rstrip(":").replace("-", "_")
