"""The inference routes: `/info` and `/chat/completions` served bare, under `/models` and under
`/deployments/<name>` (the SDK appends routes to whatever endpoint URL it was given); `/v1/chat/completions`,
`/v1/completions` (text) and `/v1/models` for OpenAI-style clients; `/embeddings` answering 404 as a chat
deployment does on Azure.

Handlers only parse and respond: `chat_request` validates, `ChatService` generates, `render`/`streaming` shape
the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from llamafoundry.api.body import read_body
from llamafoundry.api.drain import Drain, stopping_error
from llamafoundry.api.errors import from_service_exception, json_response
from llamafoundry.api.limits import admit, request_usage
from llamafoundry.api.routing import authorize_request, authorized_targets
from llamafoundry.api.sse import EventStreamResponse
from llamafoundry.api.streaming import StreamRenderer, chat_events, until_disconnect
from llamafoundry.api.usage import track_result, track_stream
from llamafoundry.config import ServeSettings
from llamafoundry.platform.gateway import Gateway, Target
from llamafoundry.platform.replicas import MODEL_LOAD_FAILED
from llamafoundry.protocol.chat import extra_parameters_mode, parse_chat, parse_json_object
from llamafoundry.protocol.completions import TextChunkRenderer, parse_completion, text_completion_body
from llamafoundry.protocol.errors import ApiError, not_found, service_unavailable
from llamafoundry.protocol.render import ChunkRenderer, completion_body
from llamafoundry.safety.chat import ContentFilteredError, prompt_filter_results_of
from llamafoundry.service.backend import ChatBackend
from llamafoundry.service.types import ChatRequest, ChatResult

logger = logging.getLogger(__name__)

API_VERSIONS = ("2024-04-01-preview", "2024-05-01-preview", "2024-08-01-preview", "2025-04-01")
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


def inference_router(gateway: Gateway, settings: ServeSettings) -> APIRouter:
    """All authenticated routes of the served models: the server's own and the deployments (`api.routing` says
    which one a request is for and checks its credentials)."""

    async def authorize(request: Request) -> None:
        await authorize_request(request, gateway)

    async def chat(request: Request) -> Response:
        target = _started(request)
        try:
            return await _chat(
                request,
                target.service,
                is_openai_route=request.url.path.startswith("/v1/"),
                deployment=target.name,
                accepts_images=target.accepts_images,
            )
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is listening; uvicorn drops it

    async def text_completion(request: Request) -> Response:
        target = _started(request)
        try:
            return await _text_completion(request, target.service, deployment=target.name)
        except ClientDisconnect:
            return Response(status_code=499)

    async def info(request: Request) -> Response:
        service = request.state.target.service
        return json_response(
            {"model_name": service.model_name, "model_type": MODEL_TYPE, "model_provider_name": service.model_provider}
        )

    async def no_embeddings(request: Request) -> Response:
        raise not_found(
            f"Not found: {request.url.path}. This deployment serves chat completions only; embeddings "
            "are not supported by the model."
        )

    async def list_models(request: Request) -> Response:
        targets = await authorized_targets(request, gateway)
        return json_response({"object": "list", "data": [_openai_model(t) for t in targets]})

    async def get_model(request: Request) -> Response:
        model_id = request.path_params["model_id"].lower()
        for target in await authorized_targets(request, gateway):
            if model_id in (target.name.lower(), target.service.model_name.lower()):
                return json_response(_openai_model(target))
        raise not_found(f"Model '{model_id}' not found. GET /v1/models lists the models this server serves.")

    azure = APIRouter(dependencies=[Depends(authorize), Depends(check_api_version)])
    for prefix in AZURE_PREFIXES:
        azure.add_api_route(prefix + "/chat/completions", chat, methods=["POST"])
        azure.add_api_route(prefix + "/info", info, methods=["GET"])
        for route in ("/embeddings", "/images/embeddings"):
            azure.add_api_route(prefix + route, no_embeddings, methods=["GET", "POST"])
    openai = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])
    openai.add_api_route("/chat/completions", chat, methods=["POST"])
    openai.add_api_route("/completions", text_completion, methods=["POST"])
    listing = APIRouter(prefix="/v1")  # authorized in the handlers: with no default model, by the key alone
    listing.add_api_route("/models", list_models, methods=["GET"])
    listing.add_api_route("/models/{model_id}", get_model, methods=["GET"])
    router = APIRouter()
    router.include_router(azure)
    router.include_router(openai)
    router.include_router(listing)
    return router


def _started(request: Request) -> Target:
    """The request's target, unless it failed to start: then a 503 without Retry-After (waiting cannot help; the
    cause is for the admin, in the server log and the management API's status)."""
    target: Target = request.state.target
    lifecycle = getattr(request.app.state, "lifecycle", None)
    if target.deployment is None and lifecycle is not None and lifecycle.load_error is not None:
        raise ApiError(503, MODEL_LOAD_FAILED, lifecycle.load_error_message())  # no Retry-After: waiting cannot help
    if target.start_error is not None:
        raise ApiError(
            503,
            "ServiceUnavailable",
            f"Deployment '{target.name}' failed to start, so it cannot answer. Its administrator finds why in "
            "the server log or the management API's status; the deployment must be created again.",
        )
    return target


async def _chat(
    request: Request, service: ChatBackend, *, is_openai_route: bool, deployment: str, accepts_images: bool = False
) -> Response:
    mode = extra_parameters_mode(request.headers.get("extra-parameters"))
    body = parse_json_object(await read_body(request), request.headers.get("content-type"))
    chat = parse_chat(body, mode, is_openai_route=is_openai_route, accepts_images=accepts_images)
    model = service.model_name
    return await _generate(
        request, service, chat, deployment, ChunkRenderer(model),
        lambda result: completion_body(result, model),
    )  # fmt: skip


async def _text_completion(request: Request, service: ChatBackend, *, deployment: str) -> Response:
    mode = extra_parameters_mode(request.headers.get("extra-parameters"))
    body = parse_json_object(await read_body(request), request.headers.get("content-type"))
    parsed = parse_completion(body, mode)
    model, echo = service.model_name, parsed.request.prompt if parsed.echo else None
    return await _generate(
        request, service, parsed.request, deployment, TextChunkRenderer(model, echo),
        lambda result: text_completion_body(result, model, echo),
    )  # fmt: skip


async def _generate(
    request: Request,
    service: ChatBackend,
    chat: ChatRequest,
    deployment: str,
    renderer: StreamRenderer,
    body_of: Callable[[ChatResult], dict[str, Any]],
) -> Response:
    """Admit (rate limits), run and answer one validated request: an SSE stream of `renderer`'s chunks, or the
    JSON `body_of` its result. Service errors become the API's errors."""
    drain: Drain | None = getattr(request.app.state, "drain", None)
    if drain is not None and drain.is_draining:
        raise stopping_error()
    if not service.is_ready:
        loading = "The model is loading or the server is shutting down; retry in a few seconds."
        raise service_unavailable(service.failure_note() or loading)
    try:
        prepared = await service.prepare(chat)  # checked, rendered and counted once
        await admit(request, prepared, service.max_context, deployment=deployment)  # 429 over limits
        if chat.stream:
            updates = await service.stream(prepared)
            prompt_filter = prompt_filter_results_of(updates)
            stream = track_stream(request, updates)
        else:
            result = await until_disconnect(request.receive, service.complete(prepared), drain)
    except Exception as exc:
        error = from_service_exception(exc)
        if error is None:
            raise
        _count_filtered_prompt(request, exc)
        raise error from None
    if chat.stream:
        keepalive_s = request.app.state.stream_keepalive_s
        num_choices = chat.options.num_choices
        return EventStreamResponse(chat_events(stream, renderer, num_choices, prompt_filter, drain, keepalive_s))
    if result is None:
        return Response(status_code=499)  # the client went away; generation was aborted
    track_result(request, result)
    headers = {
        "prompt_token_len": str(result.usage.prompt_tokens),
        "sampling_token_len": str(result.usage.completion_tokens),
    }
    return json_response(body_of(result), headers=headers)


def _count_filtered_prompt(request: Request, exc: Exception) -> None:
    """A prompt blocked by the content filter was evaluated: its tokens are metered (Azure charges them)."""
    usage = request_usage(request)
    if isinstance(exc, ContentFilteredError) and usage is not None and exc.num_prompt_tokens is not None:
        usage.prompt_tokens = exc.num_prompt_tokens


_STARTED_AT = int(time.time())


def _openai_model(target: Target) -> dict[str, object]:
    """A served model for `/v1/models`: its id is what to send as `model` (a deployment's name)."""
    owner = target.service.model_provider
    return {"id": target.name, "object": "model", "created": _STARTED_AT, "owned_by": owner}
