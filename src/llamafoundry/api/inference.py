"""The inference routes: `/info` and `/chat/completions` served bare, under `/models` and under
`/deployments/<name>` (the SDK appends routes to whatever endpoint URL it was given); `/v1/chat/completions`
and `/v1/models` for OpenAI-style clients; `/embeddings` answering 404 as a chat deployment does on Azure.

Handlers only parse and respond: `chat_request` validates, `ChatService` generates, `render`/`streaming` shape
the answer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from llamafoundry.api.auth import require_key
from llamafoundry.api.chat_request import extra_parameters_mode, parse_chat, parse_json_object
from llamafoundry.api.errors import ApiError, from_service_exception, json_response, not_found, service_unavailable
from llamafoundry.api.limits import admit
from llamafoundry.api.render import ChunkRenderer, completion_body
from llamafoundry.api.sse import EventStreamResponse
from llamafoundry.api.streaming import chat_events, until_disconnect
from llamafoundry.api.usage import track_result, track_stream
from llamafoundry.config import ServeSettings

if TYPE_CHECKING:
    from llamafoundry.service.chat import ChatService

logger = logging.getLogger(__name__)

API_VERSIONS = ("2024-04-01-preview", "2024-05-01-preview", "2024-08-01-preview", "2025-04-01")
MAX_BODY_BYTES = 8 * 1024 * 1024
MODEL_TYPE = "chat-completions"  # what Azure reports for Llama; `load_client` maps it to a chat client
AZURE_PREFIXES = ("", "/models", "/deployments/{deployment}")


async def check_api_version(request: Request) -> None:
    """Absent or one of the four published versions; anything else is a 400, as Azure front doors answer."""
    version = request.query_params.get("api-version")
    if version is not None and version not in API_VERSIONS:
        raise ApiError(
            400,
            "BadRequest",
            f"API version '{version}' not supported. Use one of {', '.join(API_VERSIONS)}, or leave api-version out.",
            "api-version",
        )


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_BODY_BYTES."""
    too_large = ApiError(
        413,
        "PayloadTooLarge",
        f"The request body is larger than {MAX_BODY_BYTES // 2**20} MiB. Send fewer or shorter messages.",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def inference_router(service: ChatService, settings: ServeSettings) -> APIRouter:
    """All authenticated routes of one served model."""

    async def authorize(request: Request) -> None:
        require_key(request.headers, settings.api_key)

    async def check_deployment(request: Request) -> None:
        name = request.path_params.get("deployment")
        if name is not None and name.lower() != settings.model_name.lower():
            raise not_found(f"Deployment '{name}' not found. This server serves '{settings.model_name}'.")

    async def chat(request: Request) -> Response:
        try:
            is_openai_route = request.url.path.startswith("/v1/")
            return await _chat(request, service, is_openai_route=is_openai_route, deployment=settings.model_name)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is listening; uvicorn drops it

    async def info(request: Request) -> Response:
        return json_response(
            {"model_name": service.model_name, "model_type": MODEL_TYPE, "model_provider_name": service.model_provider}
        )

    async def no_embeddings(request: Request) -> Response:
        raise not_found(
            f"Not found: {request.url.path}. This deployment serves chat completions only; embeddings "
            "are not supported by the model."
        )

    async def list_models(request: Request) -> Response:
        return json_response({"object": "list", "data": [_openai_model(service)]})

    async def get_model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        if model_id.lower() not in (service.model_name.lower(), settings.model_name.lower()):
            raise not_found(f"Model '{model_id}' not found. This server serves '{service.model_name}'.")
        return json_response(_openai_model(service))

    azure = APIRouter(dependencies=[Depends(authorize), Depends(check_api_version), Depends(check_deployment)])
    for prefix in AZURE_PREFIXES:
        azure.add_api_route(prefix + "/chat/completions", chat, methods=["POST"])
        azure.add_api_route(prefix + "/info", info, methods=["GET"])
        for route in ("/embeddings", "/images/embeddings"):
            azure.add_api_route(prefix + route, no_embeddings, methods=["GET", "POST"])
    openai = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])
    openai.add_api_route("/chat/completions", chat, methods=["POST"])
    openai.add_api_route("/models", list_models, methods=["GET"])
    openai.add_api_route("/models/{model_id}", get_model, methods=["GET"])
    router = APIRouter()
    router.include_router(azure)
    router.include_router(openai)
    return router


async def _chat(request: Request, service: ChatService, *, is_openai_route: bool, deployment: str) -> Response:
    mode = extra_parameters_mode(request.headers.get("extra-parameters"))
    body = parse_json_object(await read_body(request), request.headers.get("content-type"))
    parsed = parse_chat(body, mode, is_openai_route=is_openai_route)
    if not service.is_ready:
        raise service_unavailable("The model is loading or the server is shutting down; retry in a few seconds.")
    try:
        await admit(request, service, parsed.request, deployment=deployment, stream=parsed.stream)  # 429 over limits
        if parsed.stream:
            stream = track_stream(request, await service.stream(parsed.request))
        else:
            result = await until_disconnect(request.receive, service.complete(parsed.request))
    except Exception as exc:
        error = from_service_exception(exc)
        if error is None:
            raise
        raise error from None
    if parsed.stream:
        events = chat_events(stream, ChunkRenderer(service.model_name), parsed.request.params.n)
        return EventStreamResponse(events)
    if result is None:
        return Response(status_code=499)  # the client went away; generation was aborted
    track_result(request, result)
    headers = {
        "prompt_token_len": str(result.usage.prompt_tokens),
        "sampling_token_len": str(result.usage.completion_tokens),
    }
    return json_response(completion_body(result, service.model_name), headers=headers)


_STARTED_AT = int(time.time())


def _openai_model(service: ChatService) -> dict[str, object]:
    return {"id": service.model_name, "object": "model", "created": _STARTED_AT, "owned_by": service.model_provider}
