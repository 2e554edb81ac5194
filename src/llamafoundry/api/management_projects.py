"""`/management/projects`: projects, their keys, token grants and budgets, as the `project` commands offer them
(the same rules and sentences: `platform.projects`, `project_keys`, `budgets`).

    GET    /management/projects                          the projects (a project key: its own)
    POST   /management/projects                          {"name", "description"}
    GET    /management/projects/{project}                its deployments, keys, grants, budgets and spend
    DELETE /management/projects/{project}
    GET    /management/projects/{project}/keys
    POST   /management/projects/{project}/keys           {"name", "deployments", "tpm", "rpm", "expires"}: the key, once
    DELETE /management/projects/{project}/keys/{key}     revoke (by name or id)
    GET    /management/projects/{project}/grants
    POST   /management/projects/{project}/grants         {"kind": subject|group|app_role|any, "value", "deployments"}
    DELETE /management/projects/{project}/grants/{kind}/{value}
    GET    /management/projects/{project}/budgets
    PUT    /management/projects/{project}/budgets/{period}   {"amount_usd", "project_key", "webhook"}
    DELETE /management/projects/{project}/budgets/{period}?project_key=
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from llamafoundry.api.body import read_body
from llamafoundry.api.errors import json_response
from llamafoundry.api.management_access import principal_of
from llamafoundry.platform import budgets as budgets_mod
from llamafoundry.platform import project_keys as keys_mod
from llamafoundry.platform import projects as ops
from llamafoundry.platform.errors import DeploymentError
from llamafoundry.platform.project_view import budget_bodies, project_body
from llamafoundry.platform.store import Store
from llamafoundry.protocol.chat import parse_json_object
from llamafoundry.protocol.errors import ApiError


def projects_router(store: Store) -> APIRouter:
    """The routes, relative to the `/management` router that includes them (its key checks apply)."""
    router = APIRouter()

    async def list_projects(request: Request) -> Response:
        scope = principal_of(request).scope(None)
        found = await _call(ops.list_projects, store)
        return json_response({"data": [await _call(project_body, store, p.name) for p in found
                                       if scope in (None, p.name)]})  # fmt: skip

    async def create(request: Request) -> Response:
        body = await _body(request, {"name": str, "description": str})
        project = await _call(ops.create_project, store, _required(body, "name"), body.get("description"))
        return json_response(await _call(project_body, store, project.name), 201)

    async def show(request: Request) -> Response:
        return json_response(await _call(project_body, store, request.path_params["project"], True))

    async def delete(request: Request) -> Response:
        name = request.path_params["project"].lower()
        await _call(ops.delete_project, store, name)
        return json_response({"name": name, "deleted": True})

    async def list_keys(request: Request) -> Response:
        found = await _call(keys_mod.list_keys, store, request.path_params["project"])
        return json_response({"data": [key.describe() for key in found]})

    async def create_key(request: Request) -> Response:
        fields = {"name": str, "deployments": list, "tpm": int, "rpm": int, "expires": str}
        body = await _body(request, fields)
        key, secret = await _call(lambda: keys_mod.create_key(
            store, request.path_params["project"], _required(body, "name"), _names(body.get("deployments")),
            tokens_per_minute=body.get("tpm"), requests_per_minute=body.get("rpm"), expires=body.get("expires"),
        ))  # fmt: skip
        return json_response({**key.describe(), "key": secret}, 201)

    async def revoke_key(request: Request) -> Response:
        params = request.path_params
        key = await _call(keys_mod.revoke_key, store, params["project"], params["key"])
        return json_response(key.describe())

    async def list_grants(request: Request) -> Response:
        project = await _call(ops.get_project, store, request.path_params["project"])
        found = await _call(ops.list_grants, store, project.name)
        return json_response({"data": [grant.describe() for grant in found]})

    async def grant(request: Request) -> Response:
        body = await _body(request, {"kind": str, "value": str, "deployments": list})
        added = await _call(ops.add_grant, store, request.path_params["project"], _required(body, "kind"),
                            body.get("value") or "", _names(body.get("deployments")))  # fmt: skip
        return json_response(added.describe(), 201)

    async def revoke_grant(request: Request) -> Response:
        params = request.path_params
        await _call(ops.remove_grant, store, params["project"], params["kind"], params["value"])
        return json_response({"kind": params["kind"], "value": params["value"], "deleted": True})

    async def list_budgets(request: Request) -> Response:
        project = await _call(ops.get_project, store, request.path_params["project"])
        return json_response({"data": await _call(budget_bodies, store, project.name)})

    async def put_budget(request: Request) -> Response:
        body = await _body(request, {"amount_usd": (int, float), "project_key": str, "webhook": str})
        if body.get("amount_usd") is None:
            raise ApiError(400, "missing_value", "'amount_usd' is required.", "amount_usd")
        budget = await _call(lambda: budgets_mod.set_budget(
            store, request.path_params["project"], request.path_params["period"], float(body["amount_usd"]),
            key=body.get("project_key"), webhook_url=body.get("webhook"),
        ))  # fmt: skip
        return json_response(budget.describe())

    async def remove_budget(request: Request) -> Response:
        params = request.path_params
        key = request.query_params.get("project_key") or None
        await _call(budgets_mod.remove_budget, store, params["project"], params["period"], key)
        return json_response({"period": params["period"], "project_key": key, "deleted": True})

    base = "/projects/{project}"
    routes: list[tuple[str, Callable[[Request], Any], str, str]] = [
        ("/projects", list_projects, "GET", "project.list"),
        ("/projects", create, "POST", "project.create"),
        (base, show, "GET", "project.show"),
        (base, delete, "DELETE", "project.delete"),
        (base + "/keys", list_keys, "GET", "project.key.list"),
        (base + "/keys", create_key, "POST", "project.key.create"),
        (base + "/keys/{key}", revoke_key, "DELETE", "project.key.revoke"),
        (base + "/grants", list_grants, "GET", "project.grant.list"),
        (base + "/grants", grant, "POST", "project.grant"),
        (base + "/grants/{kind}/{value}", revoke_grant, "DELETE", "project.grant.revoke"),
        (base + "/budgets", list_budgets, "GET", "project.budget.list"),
        (base + "/budgets/{period}", put_budget, "PUT", "project.budget.set"),
        (base + "/budgets/{period}", remove_budget, "DELETE", "project.budget.remove"),
    ]
    for path, handler, method, name in routes:  # the name is the audit log's action
        router.add_api_route(path, handler, methods=[method], name=name)
    return router


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a (blocking) platform operation off the event loop; its error becomes the API error."""
    try:
        return await asyncio.to_thread(function, *args)
    except DeploymentError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


async def _body(request: Request, fields: dict[str, Any]) -> dict[str, Any]:
    body = parse_json_object(await read_body(request), request.headers.get("content-type"))
    for key, value in body.items():
        expected = fields.get(key)
        if expected is None:
            raise ApiError(400, "invalid_value", f"Unknown field '{key}'. Send only: {', '.join(fields)}.", key)
        is_bool = isinstance(value, bool) and expected is not bool
        if value is not None and (not isinstance(value, expected) or is_bool):
            raise ApiError(400, "invalid_value", f"'{key}' has the wrong type.", key)
    return body


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not value:
        raise ApiError(400, "missing_value", f"'{key}' is required.", key)
    return str(value)


def _names(value: list[Any] | None) -> list[str] | None:
    if value is None:
        return None
    if not all(isinstance(item, str) for item in value):
        raise ApiError(400, "invalid_value", "'deployments' must be a list of deployment names.", "deployments")
    return value
