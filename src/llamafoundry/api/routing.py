"""Which served model a request is for, and whether the caller may use it.

- `/deployments/<name>/...`: that deployment (or the server's own model, by its name).
- everything else (bare routes, `/models/...`, `/v1/...`): the deployment named by the `azureml-model-deployment`
  header, else by the body's `model` field (the `model` query parameter for `/info`), else the server's own
  model. A server that serves only its own model ignores the header (Azure's single-model endpoints do; the
  SDK samples send it whenever AZURE_AI_CHAT_DEPLOYMENT_NAME is set); with deployments, a header naming none of
  them is a 404. An unknown `model` falls back to the server's own model (the field is "ignored if the endpoint
  serves only one model") for a key that opens it; for a key that opens only deployments it is a 404 naming
  them, and without a model of the server's own (`serve --no-default`) a 404 too.

`authorize_request` is the routes' dependency: it sets the target, the caller and its key id (what usage is
recorded under; never the key) in the request's context (`api/context.py`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.requests import Request

from llamafoundry.api.auth import AuthError, presented_keys
from llamafoundry.api.body import read_body
from llamafoundry.api.context import context_of
from llamafoundry.platform.gateway import Gateway, Target
from llamafoundry.protocol.errors import not_found

DEPLOYMENT_HEADER = "azureml-model-deployment"
BodyReader = Callable[[Request], Awaitable[bytes]]  # `api.bounds.read_body`


async def authorize_request(request: Request, gateway: Gateway) -> Target:
    """Resolve the request's target and check its credentials. Raises ApiError 404 or AuthError (401)."""
    target = await _resolve(request, gateway, read_body)
    caller = await target.authorize(presented_keys(request.headers))
    if caller is None:
        raise AuthError()
    context = context_of(request)
    context.target = target
    context.caller = caller  # its project and a project key's own limits, for `limits.admit`
    context.key_id = caller.key_id or f"token:{caller.subject or 'unknown'}"
    return target


async def authorized_targets(request: Request, gateway: Gateway) -> list[Target]:
    """The models a model listing shows (`GET /v1/models`): those the caller's key or token opens (the server's
    own key opens the server's own model; a deployment's key, that deployment). Raises AuthError (401) when there
    are none."""
    keys = presented_keys(request.headers)
    visible = [target for target in gateway.all_targets() if await target.authorize(keys) is not None]
    if not visible:
        raise AuthError()
    return visible


async def _resolve(request: Request, gateway: Gateway, read_body: BodyReader) -> Target:
    path_name = request.path_params.get("deployment")
    if path_name is not None:
        return await _named(request, gateway, path_name)
    header = request.headers.get(DEPLOYMENT_HEADER)
    if header:
        if not gateway.targets and gateway.default is not None:
            return gateway.default  # one model only: a name from the client's Azure settings selects nothing
        return await _named(request, gateway, header.strip())
    model = request.query_params.get("model") if request.method == "GET" else await _body_model(request, read_body)
    target = gateway.resolve(model) if model else None
    if target is None and model and gateway.targets:
        target = await _unknown_model(request, gateway, model)
    target = target or gateway.default
    if target is None:
        names = ", ".join(sorted(gateway.targets)) or "none yet"
        raise not_found(
            "This server has no default model: name a deployment with the 'azureml-model-deployment' header or "
            f"the 'model' field, or use the endpoint /deployments/<name>. Deployments: {names}."
        )
    return target


async def _named(request: Request, gateway: Gateway, name: str) -> Target:
    """The deployment called `name`. An unknown name is a 404 only for a caller whose key or token opens some model
    here; anyone else gets the 401, so deployment names cannot be probed without credentials."""
    target = gateway.resolve(name)
    if target is not None:
        return target
    keys = presented_keys(request.headers)
    for known in gateway.all_targets():
        if await known.authorize(keys) is not None:
            raise not_found(f"Deployment '{name}' not found. `llamafoundry deploy list` shows the deployments.")
    raise AuthError()


async def _unknown_model(request: Request, gateway: Gateway, model: str) -> Target | None:
    """A `model` that names no deployment, on a server with deployments: the server's own model for a caller whose
    key opens it (the field is ignored, as before); a 404 naming the models the key opens for any other caller
    (a deployment's key with a typo); None (then a 401) for a caller whose key opens nothing."""
    keys = presented_keys(request.headers)
    opened = [target for target in gateway.all_targets() if await target.authorize(keys) is not None]
    if not opened or any(target is gateway.default for target in opened):
        return None
    names = ", ".join(target.name for target in opened)
    raise not_found(
        f"Model '{model}' not found. Your key opens: {names}; send one of them as 'model' (GET /v1/models lists them)."
    )


async def _body_model(request: Request, read_body: BodyReader) -> str | None:
    """The body's `model` string, if the body is a JSON object that has one. The body is kept for the handler."""
    raw = await read_body(request)  # kept in the request's context for the handler
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None  # the handler reports the malformed body, after authentication
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model.strip() else None
