"""The content filter as one layer over any chat backend: the server's own model and every deployment (local
replicas and upstreams) are served through a `FilteredChatBackend`, whose policy is read per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamafoundry.safety.chat import ChatSafety
from llamafoundry.service.backend import ChatBackend
from llamafoundry.service.types import ChatRequest, ChatResult, ChatStream, PreparedRequest


class FilteredChatBackend:
    """A chat backend with a content filter in front, the same for the server's own model and for deployments: the
    prompt is checked before generation, the answer before it is released. `safety_of` is called once per request,
    so policy changes apply to the next request. Satisfies `service.backend.ChatBackend`.
    """

    def __init__(self, inner: ChatBackend, safety_of: Callable[[], ChatSafety | None]) -> None:
        self.inner = inner
        self.safety_of = safety_of
        self.model_name = inner.model_name
        self.model_provider = inner.model_provider
        self.max_context = inner.max_context

    @property
    def is_ready(self) -> bool:
        return self.inner.is_ready

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    def failure_note(self) -> str | None:
        return self.inner.failure_note()

    async def start(self) -> None:
        await self.inner.start()
        self.max_context = self.inner.max_context  # an upstream's, once it has said what it is

    async def stop(self) -> None:
        await self.inner.stop()

    async def prepare(self, request: ChatRequest) -> PreparedRequest:
        return await self.inner.prepare(request)

    async def complete(self, prepared: PreparedRequest) -> ChatResult:
        safety = self.safety_of()
        if safety is None or not safety.enabled:
            return await self.inner.complete(prepared)
        messages = prepared.request.messages
        prompt_filter = await safety.check_prompt(messages, prepared.num_prompt_tokens)
        result = await self.inner.complete(prepared)
        return await safety.filter_result(messages, result, prompt_filter)

    async def stream(self, prepared: PreparedRequest) -> ChatStream:
        safety = self.safety_of()
        if safety is None or not safety.enabled:
            return await self.inner.stream(prepared)
        messages = prepared.request.messages
        prompt_filter = await safety.check_prompt(messages, prepared.num_prompt_tokens)
        stream = await self.inner.stream(prepared)
        return safety.wrap_stream(stream, messages, prepared.params.n, prompt_filter)
