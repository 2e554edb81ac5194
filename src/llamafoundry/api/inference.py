"""The Azure AI Model Inference routes: `/info` and `/chat/completions` served bare, under `/models` and under
`/deployments/<name>` (the SDK appends routes to whatever endpoint URL it was given); `/embeddings` answering 404
as a chat deployment does on Azure. The OpenAI-style routes (`/v1`, Azure OpenAI's `/openai/...`) are in
`api/openai_routes.py`; both run requests through `api/generation.py`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from llamafoundry.api.context import context_of
from llamafoundry.api.errors import json_response
from llamafoundry.api.generation import chat_response, handler
from llamafoundry.api.openai_routes import openai_router
from llamafoundry.api.routing import authorize_request
from llamafoundry.config import ServeSettings
from llamafoundry.platform.gateway import Gateway, Target
from llamafoundry.protocol.errors import ApiError, not_found

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

    async def chat(request: Request, target: Target) -> Response:
        return await chat_response(request, target, is_openai_route=False)

    async def info(request: Request) -> Response:
        target = context_of(request).target
        assert target is not None, "authorize_request runs before every generating route"
        service = target.service
        return json_response(
            {"model_name": service.model_name, "model_type": MODEL_TYPE, "model_provider_name": service.model_provider}
        )

    async def no_embeddings(request: Request) -> Response:
        raise not_found(
            f"Not found: {request.url.path}. This deployment serves chat completions only; embeddings "
            "are not supported by the model."
        )

    azure = APIRouter(dependencies=[Depends(authorize), Depends(check_api_version)])
    for prefix in AZURE_PREFIXES:
        azure.add_api_route(prefix + "/chat/completions", handler(chat), methods=["POST"])
        azure.add_api_route(prefix + "/info", info, methods=["GET"])
        for route in ("/embeddings", "/images/embeddings"):
            azure.add_api_route(prefix + route, no_embeddings, methods=["GET", "POST"])
    router = APIRouter()
    router.include_router(azure)
    router.include_router(openai_router(gateway))
    return router
