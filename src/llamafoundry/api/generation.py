"""The one path every generating route takes (docs/architecture.md, "One request, one path"): the route's body
parsed into a `ChatRequest`, then `generate`: prepare, admit (rate limits), complete or stream, render, meter.

Routes differ only in how they parse the body (`protocol.chat`, `protocol.completions`, `protocol.responses`) and
how they render the answer (`Answer`); `api/inference.py` (Azure's routes) and `api/openai_routes.py` (OpenAI's and
Azure OpenAI's) call these functions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from llamafoundry.api.body import read_body
from llamafoundry.api.context import context_of
from llamafoundry.api.drain import Drain, stopping_error
from llamafoundry.api.errors import from_service_exception, json_response
from llamafoundry.api.limits import admit, request_usage
from llamafoundry.api.sse import EventStreamResponse
from llamafoundry.api.streaming import StreamRenderer, chat_events, until_disconnect
from llamafoundry.api.usage import blocked_categories, track_result, track_stream
from llamafoundry.platform.gateway import Target
from llamafoundry.platform.replicas import MODEL_LOAD_FAILED
from llamafoundry.protocol.chat import extra_parameters_mode, parse_chat, parse_json_object
from llamafoundry.protocol.completions import TextChunkRenderer, parse_completion, text_completion_body
from llamafoundry.protocol.errors import ApiError, service_unavailable
from llamafoundry.protocol.render import ChunkRenderer, completion_body
from llamafoundry.safety.chat import ContentFilteredError, prompt_filter_results_of
from llamafoundry.service.backend import ChatBackend
from llamafoundry.service.types import ChatRequest, ChatResult, ChatStream

# (stream, prompt_filter_results, drain, keepalive_s) -> the SSE bytes of the answer
EventsOf = Callable[[ChatStream, "list[dict[str, Any]] | None", "Drain | None", "float | None"],
                    AsyncGenerator[bytes, None]]  # fmt: skip


@dataclass
class Answer:
    """How one route renders a request's answer: `body_of` a result, or `events_of` a stream."""

    body_of: Callable[[ChatResult], dict[str, Any]]
    events_of: EventsOf


def chunk_answer(renderer: StreamRenderer, body_of: Callable[[ChatResult], dict[str, Any]], num_choices: int) -> Answer:
    """Chat and text completions: a JSON body, or `chat_events`' chunks ending with `[DONE]`."""

    def events_of(
        stream: ChatStream, prompt_filter: list[dict[str, Any]] | None, drain: Drain | None, keepalive_s: float | None
    ) -> AsyncGenerator[bytes, None]:
        return chat_events(stream, renderer, num_choices, prompt_filter, drain, keepalive_s)

    return Answer(body_of, events_of)


def started(request: Request) -> Target:
    """The request's target, unless it failed to start: then a 503 without Retry-After (waiting cannot help; the
    cause is for the admin, in the server log and the management API's status)."""
    target = context_of(request).target
    assert target is not None, "authorize_request runs before every generating route"
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


async def read_json(request: Request) -> tuple[dict[str, Any], str]:
    """The body as a JSON object, and the `extra-parameters` mode."""
    mode = extra_parameters_mode(request.headers.get("extra-parameters"))
    return parse_json_object(await read_body(request), request.headers.get("content-type")), mode


def handler(respond: Callable[[Request, Target], Any]) -> Callable[[Request], Any]:
    """A route handler around `respond(request, target)`: the target checked, a vanished client a 499."""

    async def handle(request: Request) -> Response:  # no functools.wraps: FastAPI would read respond's parameters
        target = started(request)
        try:
            response: Response = await respond(request, target)
            return response
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is listening; uvicorn drops it

    handle.__name__ = respond.__name__
    return handle


async def chat_response(request: Request, target: Target, *, is_openai_route: bool) -> Response:
    """`POST .../chat/completions` on any route."""
    body, mode = await read_json(request)
    chat = parse_chat(body, mode, is_openai_route=is_openai_route, accepts_images=target.accepts_images)
    model = target.service.model_name
    answer = chunk_answer(ChunkRenderer(model), lambda result: completion_body(result, model), chat.options.num_choices)
    return await generate(request, target, chat, answer)


async def text_completion_response(request: Request, target: Target) -> Response:
    """`POST .../completions` (text) on any route."""
    body, mode = await read_json(request)
    parsed = parse_completion(body, mode)
    model, echo = target.service.model_name, parsed.request.prompt if parsed.echo else None
    answer = chunk_answer(
        TextChunkRenderer(model, echo),
        lambda result: text_completion_body(result, model, echo),
        parsed.request.options.num_choices,
    )
    return await generate(request, target, parsed.request, answer)


async def generate(request: Request, target: Target, chat: ChatRequest, answer: Answer) -> Response:
    """Admit (rate limits), run and answer one validated request: an SSE stream of `answer`'s events, or the
    JSON body of its result. Service errors become the API's errors."""
    service: ChatBackend = target.service
    drain: Drain | None = getattr(request.app.state, "drain", None)
    if drain is not None and drain.is_draining:
        raise stopping_error()
    if not service.is_ready:
        loading = "The model is loading or the server is shutting down; retry in a few seconds."
        raise service_unavailable(service.failure_note() or loading)
    try:
        prepared = await service.prepare(chat)  # checked, rendered and counted once
        await admit(request, prepared, service.max_context, deployment=target.name)  # 429 over limits
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
        return EventStreamResponse(answer.events_of(stream, prompt_filter, drain, keepalive_s))
    if result is None:
        return Response(status_code=499)  # the client went away; generation was aborted
    track_result(request, result)
    headers = {
        "prompt_token_len": str(result.usage.prompt_tokens),
        "sampling_token_len": str(result.usage.completion_tokens),
    }
    return json_response(answer.body_of(result), headers=headers)


def _count_filtered_prompt(request: Request, exc: Exception) -> None:
    """A prompt blocked by the content filter was evaluated: the request counts as filtered, and its tokens are
    metered (Azure charges them)."""
    usage = request_usage(request)
    if not isinstance(exc, ContentFilteredError) or usage is None:
        return
    usage.is_filtered = True
    usage.filter_blocks += [(category, "prompt") for category in blocked_categories(exc.content_filter_result)]
    if exc.num_prompt_tokens is not None:
        usage.prompt_tokens = exc.num_prompt_tokens
