"""The routes OpenAI-style clients call, with OpenAI's semantics (`protocol.chat.parse_chat(is_openai_route=True)`:
OpenAI's fields and vLLM's sampling extensions need no `extra-parameters` header):

- `/v1/...` (`OpenAI(base_url=<endpoint>/v1)`) and Azure AI Foundry's `/openai/v1/...`: `chat/completions`,
  `completions`, `responses`, `models`; `api-version` is optional there (`preview`, `latest` or a dated version).
- Azure OpenAI's `/openai/deployments/<name>/chat/completions` and `/completions`, and `/openai/responses`,
  `/openai/models` (what `AzureOpenAI(azure_endpoint=...)` calls): `api-version` is required, as on Azure.

Every route resolves its target and key as the Azure routes do (`api.routing`) and runs through
`api.generation`: same keys, deployments, limits, safety and metering.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from llamafoundry.api.errors import json_response
from llamafoundry.api.generation import Answer, chat_response, generate, handler, read_json, text_completion_response
from llamafoundry.api.routing import authorize_request, authorized_targets
from llamafoundry.api.streaming import response_events
from llamafoundry.platform.gateway import Gateway, Target
from llamafoundry.protocol.errors import ApiError, not_found
from llamafoundry.protocol.responses import parse_response
from llamafoundry.protocol.responses_render import ResponseEvents, ResponseShape, response_body

OPENAI_PREFIXES = ("/v1", "/openai/v1")
OLDEST_AZURE_OPENAI_VERSION = dt.date(2022, 12, 1)  # the first GA version of Azure OpenAI's data plane
V1_VERSIONS = ("preview", "latest", "v1")  # what Azure AI Foundry's /openai/v1 routes take, if anything
_DATED_VERSION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(-preview)?$")


def _check_version(request: Request, *, required: bool) -> None:
    """Azure OpenAI's `api-version`: a published date (`2024-10-21`, `2025-04-01-preview`, ...); on /openai/v1 also
    `preview`/`latest`. Azure answers a missing one with 404 and an unknown one with 400; so does this server, with
    a sentence that says what to send."""
    version = request.query_params.get("api-version")
    if version is None:
        if required:
            raise ApiError(404, "404", "Resource not found: Azure OpenAI routes need the api-version query parameter, "
                           "such as ?api-version=2024-10-21 (AzureOpenAI clients send their api_version).")  # fmt: skip
        return
    if not required and version in V1_VERSIONS:
        return
    if not _is_published(version):
        raise ApiError(
            400,
            "BadRequest",
            f"API version not supported: '{version}'. Send as api-version an Azure OpenAI API version, a date from "
            "2022-12-01 on (such as 2024-10-21 or 2025-04-01-preview).",
            "api-version",
        )


def _is_published(version: str) -> bool:
    match = _DATED_VERSION.match(version)
    if match is None:
        return False
    try:
        day = dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return OLDEST_AZURE_OPENAI_VERSION <= day <= dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)


async def versioned(request: Request) -> None:
    _check_version(request, required=True)


async def optionally_versioned(request: Request) -> None:
    _check_version(request, required=False)


async def openai_chat(request: Request, target: Target) -> Response:
    return await chat_response(request, target, is_openai_route=True)


async def responses(request: Request, target: Target) -> Response:
    """`POST .../responses`: OpenAI's Responses API, stateless."""
    body, mode = await read_json(request)
    parsed = parse_response(body, mode, accepts_images=target.accepts_images)
    shape = ResponseShape(target.service.model_name, parsed.echo)

    def events_of(stream: Any, prompt_filter: Any, drain: Any, keepalive_s: float | None) -> Any:
        return response_events(stream, ResponseEvents(shape), drain, keepalive_s)

    return await generate(
        request, target, parsed.request, Answer(lambda result: response_body(result, shape), events_of)
    )


def openai_router(gateway: Gateway) -> APIRouter:
    """`/v1`, `/openai/v1`, `/openai/deployments/<name>` and `/openai` routes (see the module's docstring)."""

    async def authorize(request: Request) -> None:
        await authorize_request(request, gateway)

    async def list_models(request: Request) -> Response:
        targets = await authorized_targets(request, gateway)
        return json_response({"object": "list", "data": [_openai_model(t) for t in targets]})

    async def get_model(request: Request) -> Response:
        model_id = request.path_params["model_id"].lower()
        targets = await authorized_targets(request, gateway)
        for target in targets:
            if model_id in (target.name.lower(), target.service.model_name.lower()):
                return json_response(_openai_model(target))
        names = ", ".join(t.name for t in targets)
        raise not_found(f"Model '{model_id}' not found. Your key opens: {names} (GET /v1/models lists them).")

    router = APIRouter()
    for prefix, check in ((OPENAI_PREFIXES[0], None), (OPENAI_PREFIXES[1], optionally_versioned)):
        checks = [Depends(check)] if check is not None else []
        generating = APIRouter(prefix=prefix, dependencies=[*checks, Depends(authorize)])
        generating.add_api_route("/chat/completions", handler(openai_chat), methods=["POST"])
        generating.add_api_route("/completions", handler(text_completion_response), methods=["POST"])
        generating.add_api_route("/responses", handler(responses), methods=["POST"])
        router.include_router(generating)
        router.include_router(_listing(prefix, checks, list_models, get_model))
    deployments = APIRouter(prefix="/openai/deployments/{deployment}",
                            dependencies=[Depends(versioned), Depends(authorize)])  # fmt: skip
    deployments.add_api_route("/chat/completions", handler(openai_chat), methods=["POST"])
    deployments.add_api_route("/completions", handler(text_completion_response), methods=["POST"])
    router.include_router(deployments)
    azure_openai = APIRouter(prefix="/openai", dependencies=[Depends(versioned), Depends(authorize)])
    azure_openai.add_api_route("/responses", handler(responses), methods=["POST"])
    router.include_router(azure_openai)
    router.include_router(_listing("/openai", [Depends(versioned)], list_models, get_model))
    return router


def _listing(prefix: str, checks: list[Any], list_models: Any, get_model: Any) -> APIRouter:
    """`GET <prefix>/models` and `/models/<id>`: authorized in the handlers, by the key alone."""
    listing = APIRouter(prefix=prefix, dependencies=checks)
    listing.add_api_route("/models", list_models, methods=["GET"])
    listing.add_api_route("/models/{model_id}", get_model, methods=["GET"])
    return listing


_STARTED_AT = int(time.time())


def _openai_model(target: Target) -> dict[str, object]:
    """A served model for `/v1/models`: its id is what to send as `model` (a deployment's name); `max_model_len`
    (vLLM's field) the tokens one request may use, which a gateway forwarding here reads as the model's context."""
    service = target.service
    return {"id": target.name, "object": "model", "created": _STARTED_AT, "owned_by": service.model_provider,
            "max_model_len": service.max_context}  # fmt: skip
