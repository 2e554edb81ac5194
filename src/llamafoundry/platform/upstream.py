"""A chat backend whose model runs behind OpenAI-compatible servers: the `--upstream` URLs (a pool,
`upstream_pool.py`), or the replica processes of a local deployment. It satisfies `service.backend.ChatBackend`,
so the API serves it as it serves the server's own model; requests and answers go through the one codec of the
wire format (`protocol.forward`), so tools, tool calls, `response_format`, logprobs and the Llama extras survive
the hop.

A request is prepared as a local one is (`service.sampling`, `service.structured`: the same checks, the same
errors), and its prompt counted with the Llama 3 tokenizer (`service.prompt_counter`) for the rate limits; the
upstream's own usage replaces that count afterwards. Image content parts are forwarded as the client sent them
(the API keeps them in `ChatMessage.content_parts` for deployments whose catalog model takes images).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.errors import (
    EngineError,
    EngineUnavailableError,
    GenerationError,
    PromptTooLongError,
    QueueFullError,
    RequestTooLargeError,
)
from llamafoundry.platform.upstream_client import (
    CHAT,
    TEXT_COMPLETIONS,
    RemoteChatClient,
    ServerLimits,
    UpstreamError,
)
from llamafoundry.protocol.forward import deltas_from_chunk, request_body, result_from_body, usage_from_body
from llamafoundry.service import structured
from llamafoundry.service.prompt_counter import llama_prompt_counter
from llamafoundry.service.sampling import sampling_params
from llamafoundry.service.types import ChatRequest, ChatResult, ChatUpdate, PreparedRequest, Usage

logger = logging.getLogger(__name__)

# A server that breaks a connection mid-answer has usually died: its provider learns it at once (a replica's exit
# wakes its watcher), so the error waits this long at most for the provider to say which replica and why.
CRASH_NOTE_WAIT_S = 0.5


class UpstreamProvider(Protocol):
    """Where the servers are: started with the service, stopped with it."""

    async def start(self) -> tuple[list[str], str | None]:
        """Start (if there is anything to start) and return the base URLs and the key they want."""
        ...

    async def stop(self) -> None: ...

    @property
    def is_ready(self) -> bool: ...

    @property
    def sizes_itself(self) -> bool:
        """The servers were started elsewhere with a context of their own (read from them), not sized here."""
        ...

    def status(self) -> dict[str, Any]:
        """What the deployment's runtime status shows of the servers (a replica set: its replicas)."""
        ...

    def attach(self, client: RemoteChatClient) -> None:
        """The client that forwards to the servers, once the service made it (a pool health-checks them)."""
        ...

    def failure_note(self) -> str | None:
        """Sentences on why the servers may not be answering (a replica that crashed, a pool that is down), or
        None."""
        ...


class UpstreamChatService:
    """Forwards chat requests.

    Args:
        provider: the servers.
        model_name: reported by /info and in responses (the catalog model name).
        model_provider: reported by /info.
        max_context: the model's context, in tokens.
        upstream_model: the `model` sent upstream (vLLM wants its served model name); the model name if None.
        verify_tls: how to check the upstream's TLS certificate (httpx's `verify`).
    """

    def __init__(
        self,
        provider: UpstreamProvider,
        model_name: str,
        model_provider: str,
        max_context: int,
        upstream_model: str | None = None,
        verify_tls: bool | str = True,
    ) -> None:
        self.provider = provider
        self.model_name = model_name
        self.model_provider = model_provider
        self.max_context = max_context
        self.upstream_model = upstream_model or model_name
        self.verify_tls = verify_tls
        self.client: RemoteChatClient | None = None
        self.limits = ServerLimits()  # what servers sized elsewhere say they hold (checked before forwarding)

    @property
    def is_ready(self) -> bool:
        return self.client is not None and self.provider.is_ready

    def failure_note(self) -> str | None:
        return self.provider.failure_note()

    async def start(self) -> None:
        base_urls, api_key = await self.provider.start()
        self.client = RemoteChatClient(base_urls, api_key, self.verify_tls)
        self.provider.attach(self.client)
        if self.provider.sizes_itself:  # replicas run as sized here and check their own limits
            self.limits = await self.client.server_limits(self.upstream_model)
            self.max_context = min(self.max_context, self.limits.context or self.max_context)
        # Load the tokenizer (~0.25 s) now rather than on a first request; the service is ready meanwhile.
        await asyncio.to_thread(llama_prompt_counter)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        await self.provider.stop()

    def status(self) -> dict[str, Any]:
        state = "ready" if self.is_ready else "starting"
        body: dict[str, Any] = {"state": state, **self.provider.status()}
        if self.client is not None:
            body["requests"] = [u.num_requests for u in self.client.upstreams]
            body["in_flight"] = [u.num_in_flight for u in self.client.upstreams]
        return body

    async def prepare(self, request: ChatRequest) -> PreparedRequest:
        """Checked as a local request is; the prompt counted with the Llama 3 tokenizer over Meta's template of the
        model (the upstream's reported usage replaces the count afterwards)."""
        params = structured.with_grammar(request, sampling_params(request))
        counter = await asyncio.to_thread(llama_prompt_counter)
        num_tokens = await asyncio.to_thread(counter.count, request, self.model_name)
        check_server_limits(self.limits, num_tokens, params)
        return PreparedRequest(request, params, num_tokens)

    def _client(self) -> RemoteChatClient:
        if self.client is None:
            raise EngineUnavailableError("The deployment is starting; retry in a few seconds.")
        return self.client

    def _body(self, prepared: PreparedRequest) -> tuple[dict[str, Any], dict[str, str]]:
        """The request as the client sent it, plus the API's default temperature when it sent none (OpenAI-style
        servers default to 1, the Azure API to 0.7: a deployment answers as the bare route does)."""
        body, headers = request_body(prepared.request, self.upstream_model)
        body.setdefault("temperature", prepared.params.temperature)
        return body, headers

    async def complete(self, prepared: PreparedRequest) -> ChatResult:
        body, headers = self._body(prepared)
        try:
            answer = await self._client().complete(body, headers, _path(prepared.request))
        except UpstreamError as exc:
            raise engine_error(exc, await self._note_on(exc)) from None
        return result_from_body(answer)

    async def stream(self, prepared: PreparedRequest) -> UpstreamStream:
        body, headers = self._body(prepared)
        body["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._client().stream(body, headers, _path(prepared.request))
        except UpstreamError as exc:
            raise engine_error(exc, await self._note_on(exc)) from None
        return UpstreamStream(chunks, self._note_on)

    async def _note_on(self, exc: UpstreamError) -> str | None:
        """The provider's word on why `exc` happened; for a connection that broke under a request, it is given a
        moment to notice a replica that died."""
        note = self.failure_note()
        if note is not None or exc.status is not None or exc.is_unsent:
            return note
        deadline = time.monotonic() + CRASH_NOTE_WAIT_S
        while note is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            note = self.failure_note()
        return note


def _path(request: ChatRequest) -> str:
    """A text completion (a raw prompt) goes to the upstream's /v1/completions, a chat to /v1/chat/completions."""
    return TEXT_COMPLETIONS if request.prompt is not None else CHAT


class UpstreamStream:
    """Satisfies `service.types.ChatStream` over the upstream's chunks.

    Args:
        chunks: the upstream's chunks (`RemoteChatClient.stream`).
        note_on: why an upstream error happened, in the provider's words (a replica that died), if it knows.
    """

    def __init__(
        self,
        chunks: AsyncGenerator[dict[str, Any], None],
        note_on: Callable[[UpstreamError], Awaitable[str | None]] | None = None,
    ) -> None:
        self._chunks = chunks
        self._note_on = note_on
        self._usage = Usage(0, 0)
        self._updates_gen: AsyncGenerator[ChatUpdate, None] | None = None
        self._closing: asyncio.Future[None] | None = None

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        self._updates_gen = self._updates()
        return self._updates_gen

    async def _updates(self) -> AsyncGenerator[ChatUpdate, None]:
        num_deltas = 0
        try:
            async for chunk in self._chunks:
                deltas = deltas_from_chunk(chunk)
                num_deltas += sum(1 for d in deltas if d.text or d.tool_calls)
                usage = chunk.get("usage")
                self._usage = usage_from_body(usage) if usage else Usage(self._usage.prompt_tokens, num_deltas)
                yield ChatUpdate(deltas=deltas, usage=self._usage)
        except UpstreamError as exc:
            if exc.status in (None, 503):  # the server went away mid-answer (a replica died or stops): retry
                note = await self._note_on(exc) if self._note_on is not None else None
                raise EngineUnavailableError(note or broken_stream_message(exc)) from None
            raise engine_error(exc) from None
        finally:
            await self.aclose()
        yield ChatUpdate(deltas=[], usage=self._usage, finished=True)

    async def aclose(self) -> None:
        await self._chunks.aclose()

    def abort(self) -> None:
        """Close the HTTP stream (the upstream then aborts generation), unless iteration is closing it."""
        gen = self._updates_gen if self._updates_gen is not None else self._chunks
        if self._closing is None and not getattr(gen, "ag_running", False):
            self._closing = asyncio.ensure_future(gen.aclose())


def broken_stream_message(exc: UpstreamError) -> str:
    return (
        f"The model's server stopped answering during the stream ({exc.message}); the answer is incomplete. "
        "Retry in a few seconds."
    )


# Error codes of a llamafoundry upstream (a deployment's replica) that keep their meaning through the gateway.
_KNOWN_CODES: dict[str, type[EngineError]] = {
    GenerationError.code: GenerationError,
    PromptTooLongError.code: PromptTooLongError,
    RequestTooLargeError.code: RequestTooLargeError,
}


def check_server_limits(limits: ServerLimits, num_prompt: int, params: SamplingParams) -> None:
    """Refuse, as the bare route does, what the upstream servers said they cannot hold: llama-server would
    otherwise cut the completion short at its context, and answer `n` above its slots with a bare 500."""
    if limits.context is not None and params.max_tokens is not None and num_prompt + params.max_tokens > limits.context:
        raise PromptTooLongError(
            f"This deployment's servers hold {limits.context} tokens per request, but {num_prompt + params.max_tokens}"
            f" were requested ({num_prompt} in the messages, {params.max_tokens} in the completion). Lower max_tokens "
            "or shorten the messages.",
            param="max_tokens",
        )
    if limits.slots is not None and params.num_candidates > limits.slots:
        param = "best_of" if params.best_of is not None else "n"
        raise RequestTooLargeError(
            f"{param}={params.num_candidates} needs {params.num_candidates} parallel sequences, but this "
            f"deployment's servers run {limits.slots}. Lower {param}.",
            param=param,
        )


def engine_error(exc: UpstreamError, failure_note: str | None = None) -> EngineError:
    """The engine error the API already maps to a status: 400 for the request's faults, 429 when the upstream
    is busy, 503 when it cannot serve (with `failure_note`, the provider's word on why, when it has one)."""
    if failure_note is not None and (exc.status is None or exc.status == 503):
        return EngineUnavailableError(failure_note)
    if exc.status is None:
        return EngineUnavailableError(
            f"The model's server cannot be reached ({exc.message}); retry in a few seconds, and check that the "
            "upstream server is running if it keeps failing."
        )
    known = _KNOWN_CODES.get(exc.code or "")
    if known is not None:  # another llamafoundry (a replica) said what it was: keep it
        return known(exc.message, exc.param)
    if exc.status == 429:
        return QueueFullError(f"The model's server is busy: {exc.message}")
    if exc.status in (401, 403):
        return EngineUnavailableError(
            "The model's server refused the gateway's credentials. The deployment's --upstream-key needs fixing."
        )
    if 400 <= exc.status < 500 and exc.status != 404:
        return EngineError(exc.message, exc.param)
    return EngineUnavailableError(f"The model's server failed ({exc.status}): {exc.message}")
