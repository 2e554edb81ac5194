"""The management API under `/management`: the catalog, deployments and their keys, as the `deploy` commands
offer them; projects, their keys, grants and budgets (`management_projects`); the audit log. Every route needs
the admin key (`api-key: <key>` or `Authorization: Bearer <key>`), which is not a deployment key: `llamafoundry
deploy admin-key --regenerate` prints a new one, and the first `serve` on a data directory without one creates it
and prints it once. A project key reads its own project only (`management_access`).

Handlers only parse and respond; the rules are `platform.deployments`' (the same answers as the CLI).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from llamafoundry.api.body import read_body
from llamafoundry.api.errors import json_response
from llamafoundry.api.management_access import management_dependency, principal_of
from llamafoundry.api.management_audit import audit_router
from llamafoundry.api.management_projects import projects_router
from llamafoundry.api.management_safety import content_safety_router
from llamafoundry.platform import deployments as ops
from llamafoundry.platform import downloads, sizing
from llamafoundry.platform.catalog import CATALOG, UnknownModelError, find_model
from llamafoundry.platform.content_safety import (
    SETTING_CONTENT_SAFETY,
    content_safety_settings,
    put_blocklist,
    remove_blocklist_items,
    stored_blocklists,
)
from llamafoundry.platform.gateway import Gateway
from llamafoundry.platform.ratelimit import limit_settings
from llamafoundry.platform.store import Store, iso_time
from llamafoundry.protocol.chat import parse_json_object
from llamafoundry.protocol.errors import ApiError, not_found
from llamafoundry.safety.blocklists import Blocklist, BlocklistError

logger = logging.getLogger(__name__)

# What `deploy create/update --tpm --rpm --content-safety` set: accepted by POST and changed by PATCH.
SETTING_FIELDS: dict[str, type] = {
    "tpm": int, "rpm": int, "content_safety": bool,
    **{name: kind for name, (kind, *_) in sizing.FIELDS.items()},  # deploy create/update --ctx-size ...
}  # fmt: skip
CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "model": str,
    "type": str,
    "weights": str,
    "upstream": (str, list),  # one base URL, or a pool's several
    "upstream_model": str,
    "upstream_key": str,
    "instances": int,
    "instance_type": str,
    "shared_quota": bool,
    "project": str,
    **SETTING_FIELDS,
}


def management_router(store: Store, home: Path, gateway: Gateway | None = None) -> APIRouter:
    """The `/management` routes over `store` (deployments created here download weights into `home`)."""
    router = APIRouter(prefix="/management", dependencies=[Depends(management_dependency(store))])

    async def whoami(request: Request) -> Response:
        """Who the key is: the admin key (`project` null: every project) or a project key of `project`."""
        principal = principal_of(request)
        return json_response({"actor": principal.actor, "actor_type": principal.actor_type,
                              "project": principal.project})  # fmt: skip

    async def list_models(request: Request) -> Response:
        return json_response({"data": [_model_body(m.name) for m in CATALOG]})

    async def get_model(request: Request) -> Response:
        try:
            return json_response(_model_body(request.path_params["model"]))
        except UnknownModelError as exc:
            raise not_found(str(exc)) from None

    async def list_deployments(request: Request) -> Response:
        project = principal_of(request).scope(request.query_params.get("project") or None)
        found = await _call(ops.list_deployments, store)
        jobs = await asyncio.to_thread(downloads.list_jobs, store)
        return json_response({"data": [_describe(d, gateway, jobs.get(d.name)) for d in found
                                       if project in (None, d.project)]})  # fmt: skip

    async def create(request: Request) -> Response:
        spec = _spec(parse_json_object(await read_body(request), request.headers.get("content-type")))
        conflict = gateway.name_conflict(spec.name) if gateway is not None else None
        if conflict is not None:
            raise ApiError(409, ops.DeploymentConflict.code, conflict, "name")
        deployment, keys = await _call(ops.create_deployment, store, spec, home)
        job = await asyncio.to_thread(downloads.get_job, store, deployment.name)
        body = {**_describe(deployment, gateway, job), "primary_key": keys.primary, "secondary_key": keys.secondary}
        return json_response(body, 201)  # with `status.state` "downloading" when the weights are on their way

    async def get_deployment(request: Request) -> Response:
        deployment = await _call(ops.get_deployment, store, request.path_params["name"])
        keys = await asyncio.to_thread(store.keys, deployment.name)
        body = _describe(deployment, gateway, await asyncio.to_thread(downloads.get_job, store, deployment.name))
        body["keys"] = {k.slot: {"id": k.key_id, "created_at": iso_time(k.created_at)} for k in keys}
        return json_response(body)

    async def update(request: Request) -> Response:
        body = parse_json_object(await read_body(request), request.headers.get("content-type"))
        _check_fields(body, {**SETTING_FIELDS, "instances": int, "upstream": (str, list)})
        deployment = await _call(ops.get_deployment, store, request.path_params["name"])
        changes = _settings(body, deployment.settings)
        if not changes and body.get("instances") is None and body.get("upstream") is None:
            raise ApiError(400, "missing_value", "Nothing to change: send instances, upstream, "
                           f"{', '.join(SETTING_FIELDS)}.")  # fmt: skip
        if body.get("instances") is not None:
            await _call(ops.scale, store, deployment.name, body["instances"])
        if body.get("upstream") is not None:
            await _call(ops.set_upstream, store, deployment.name, _upstream(body))
        updated = await _call(ops.update_settings, store, deployment.name, changes)
        job = await asyncio.to_thread(downloads.get_job, store, updated.name)
        return json_response(_describe(updated, gateway, job))

    async def delete(request: Request) -> Response:
        name = request.path_params["name"].lower()
        await _call(ops.delete_deployment, store, name)
        return json_response({"name": name, "deleted": True})

    async def cancel_download(request: Request) -> Response:
        """Stop the download of a deployment's weights; the bytes so far are kept for `resume-download`."""
        return await _download_change(downloads.cancel, request.path_params["name"])

    async def resume_download(request: Request) -> Response:
        """Download again, from the bytes it has, a deployment whose download failed or was cancelled."""
        return await _download_change(downloads.resume, request.path_params["name"])

    async def _download_change(change: Callable[..., downloads.DownloadJob], name: str) -> Response:
        deployment = await _call(ops.get_deployment, store, name)
        job = await _call(change, store, deployment.name)
        return json_response(_describe(deployment, gateway, job))

    async def list_keys(request: Request) -> Response:
        deployment = await _call(ops.get_deployment, store, request.path_params["name"])
        keys = await asyncio.to_thread(store.keys, deployment.name)
        return json_response({k.slot: {"id": k.key_id, "created_at": iso_time(k.created_at)} for k in keys})

    async def regenerate(request: Request) -> Response:
        body = parse_json_object(await read_body(request), request.headers.get("content-type"))
        slot, value = body.get("keyType", body.get("key_type")), body.get("keyValue", body.get("key_value"))
        if not isinstance(slot, str) or (value is not None and not isinstance(value, str)):
            raise ApiError(400, "invalid_value", 'Send {"keyType": "primary"} or {"keyType": "secondary"}.', "keyType")
        name = request.path_params["name"]
        key = await _call(ops.regenerate_key, store, name, slot, value)
        return json_response({"name": name.lower(), "keyType": slot.lower(), "key": key})

    async def list_blocklists(request: Request) -> Response:
        deployment = await _call(ops.get_deployment, store, request.path_params["name"])
        return json_response({"data": [b.to_dict() for b in stored_blocklists(deployment.settings)]})

    async def put_list(request: Request) -> Response:
        body = parse_json_object(await request.body(), request.headers.get("content-type"))
        _check_fields(body, {"description": str, "items": list})
        deployment = await _call(ops.get_deployment, store, request.path_params["name"])
        list_id = request.path_params["blocklist"]
        try:
            blocklist = Blocklist.from_dict({"id": list_id, **body})
            changes = put_blocklist(deployment.settings, blocklist)
        except (BlocklistError, KeyError, TypeError, AttributeError) as exc:
            raise ApiError(400, "invalid_value", _blocklist_message(exc), "items") from None
        await asyncio.to_thread(store.update_settings, deployment.name, changes)
        return json_response(blocklist.to_dict())

    async def delete_list(request: Request) -> Response:
        deployment = await _call(ops.get_deployment, store, request.path_params["name"])
        list_id = request.path_params["blocklist"]
        try:
            changes = remove_blocklist_items(deployment.settings, list_id, [])
        except BlocklistError as exc:
            raise not_found(str(exc)) from None
        await asyncio.to_thread(store.update_settings, deployment.name, changes)
        return json_response({"id": list_id, "deleted": True})

    routes = [
        ("/whoami", whoami, "GET", "principal.show"),
        ("/models", list_models, "GET", "model.list"),
        ("/models/{model}", get_model, "GET", "model.show"),
        ("/deployments", list_deployments, "GET", "deployment.list"),
        ("/deployments", create, "POST", "deployment.create"),
        ("/deployments/{name}", get_deployment, "GET", "deployment.show"),
        ("/deployments/{name}", update, "PATCH", "deployment.update"),
        ("/deployments/{name}", delete, "DELETE", "deployment.delete"),
        ("/deployments/{name}/cancel-download", cancel_download, "POST", "deployment.download.cancel"),
        ("/deployments/{name}/resume-download", resume_download, "POST", "deployment.download.resume"),
        ("/deployments/{name}/keys", list_keys, "GET", "deployment.key.list"),
        ("/deployments/{name}/keys/regenerate", regenerate, "POST", "deployment.key.regenerate"),
        ("/deployments/{name}/blocklists", list_blocklists, "GET", "deployment.blocklist.list"),
        ("/deployments/{name}/blocklists/{blocklist}", put_list, "PUT", "deployment.blocklist.put"),
        ("/deployments/{name}/blocklists/{blocklist}", delete_list, "DELETE", "deployment.blocklist.delete"),
    ]
    for path, handler, method, name in routes:  # the name is the audit log's action
        router.add_api_route(path, handler, methods=[method], name=name)
    router.include_router(content_safety_router(store))  # the whole policy: GET/PATCH .../content-safety
    router.include_router(projects_router(store))
    router.include_router(audit_router(store))
    return router


def _blocklist_message(exc: Exception) -> str:
    if isinstance(exc, BlocklistError):
        return str(exc)
    return 'Send {"items": ["term", {"pattern": "regex", "is_regex": true}], "description": "..."}.'


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a (blocking) platform operation off the event loop; its DeploymentError becomes the API error."""
    try:
        return await asyncio.to_thread(function, *args)
    except ops.DeploymentError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


def _check_fields(body: dict[str, Any], allowed: Mapping[str, type | tuple[type, ...]]) -> None:
    for key, value in body.items():
        expected = allowed.get(key)
        if expected is None:
            fields = ", ".join(allowed)
            raise ApiError(400, "invalid_value", f"Unknown field '{key}'. Send only: {fields}.", key)
        if value is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            kinds = expected if isinstance(expected, tuple) else (expected,)
            raise ApiError(400, "invalid_value", f"'{key}' must be a {' or '.join(k.__name__ for k in kinds)}.", key)


def _upstream(body: dict[str, Any]) -> str | list[str] | None:
    """`upstream`: one base URL, or a list of them (a pool)."""
    value = body.get("upstream")
    if isinstance(value, list) and not all(isinstance(url, str) for url in value):
        raise ApiError(400, "invalid_value", "'upstream' must be a URL or a list of URLs.", "upstream")
    return value


def _settings(body: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """The settings change of `tpm`, `rpm`, `content_safety` and the sizes (the rules and sentences of the CLI's)."""
    changes: dict[str, Any] = {}
    for param, limits in (("tpm", (body.get("tpm"), None)), ("rpm", (None, body.get("rpm")))):
        try:
            changes.update(limit_settings(*limits))
        except ValueError as exc:  # the CLI's sentence, without its "--"
            raise ApiError(400, "invalid_value", str(exc).replace("--", ""), param) from None
    try:
        changes.update(sizing.sizing_changes(body))
    except ops.DeploymentError as exc:
        raise ApiError(400, "invalid_value", str(exc), next(f for f in sizing.FIELDS if f in str(exc))) from None
    enabled = body.get("content_safety")
    current_safety = (current or {}).get(SETTING_CONTENT_SAFETY)
    return {**changes, **content_safety_settings(current_safety, enabled=enabled)}


def _spec(body: dict[str, Any]) -> ops.DeploymentSpec:
    _check_fields(body, CREATE_FIELDS)
    for key in ("name", "model"):
        if not body.get(key):
            raise ApiError(400, "missing_value", f"'{key}' is required.", key)
    return ops.DeploymentSpec(
        name=body["name"],
        model=body["model"],
        type=body.get("type") or "serverless",
        weights=Path(body["weights"]) if body.get("weights") else None,
        upstream_url=_upstream(body),
        upstream_model=body.get("upstream_model"),
        upstream_api_key=body.get("upstream_key"),
        instances=body.get("instances"),
        instance_type=body.get("instance_type"),
        shared_quota=bool(body.get("shared_quota")),
        settings=_settings(body, None),
        project=body.get("project") or "default",
    )


def _describe(deployment: Any, gateway: Gateway | None, job: downloads.DownloadJob | None = None) -> dict[str, Any]:
    """The deployment with its `status`: its download's (state and progress, from the store: fresher than the
    gateway's last poll) while its weights are not there, else what the gateway reports of its replicas."""
    body = ops.describe(deployment)
    if job is not None:
        body["status"] = downloads.status(job)
    elif gateway is not None:
        body["status"] = gateway.status(deployment.name)
    return body


def _model_body(name: str) -> dict[str, Any]:
    return ops.describe_model(find_model(name))
