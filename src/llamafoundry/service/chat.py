"""The chat use case: messages -> prompt tokens -> engine -> choices or streaming updates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from llamafoundry.engine.client import EngineClient, RequestStream
from llamafoundry.engine.outputs import ChoiceDelta, RequestOutput, TokenLogprob
from llamafoundry.errors import EngineUnavailableError
from llamafoundry.service import structured, tools
from llamafoundry.service.answer_ids import AnswerIds
from llamafoundry.service.chat_format import ChatFormatter
from llamafoundry.service.prompt_pieces import render_pieces
from llamafoundry.service.sampling import sampling_params
from llamafoundry.service.types import (
    ChatChoice,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ChatStream,
    ChatUpdate,
    PreparedRequest,
    Usage,
)

# What the local engine reports beside running and waiting requests (`status()`, /metrics).
ENGINE_GAUGES = ("kv_cache_usage", "prefix_cache_tokens", "prefix_cache_computed_tokens", "prefix_cache_requests",
                 "prefix_cache_ram_bytes", "prefix_cache_copy_seconds", "speculative_counts")


class ManagedEngine(EngineClient, Protocol):
    """An EngineClient with a lifecycle and its load (the local AsyncEngine)."""

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ChatService:
    """Turns chat requests (and text completions) into engine requests for one model. Satisfies
    `service.backend.ChatBackend`.

    Args:
        engine: the model's engine; started by `start()`.
        model_name: reported by /info and in every response's `model`.
        model_provider: reported by /info.
        max_context: tokens one request may use (prompt + completion).
    """

    def __init__(self, engine: ManagedEngine, model_name: str, model_provider: str, max_context: int) -> None:
        self.engine = engine
        self.model_name = model_name
        self.model_provider = model_provider
        self.max_context = max_context
        self._formatter: ChatFormatter | None = None
        self._answers: AnswerIds | None = None  # the ids of recent answers, to prompt returning histories with

    @property
    def is_ready(self) -> bool:
        return self._formatter is not None and self.engine.is_ready

    def status(self) -> dict[str, Any]:
        state = "ready" if self.is_ready else "starting"
        status: dict[str, Any] = {"state": state, "running": self.engine.num_running,
                                  "waiting": self.engine.num_waiting}  # fmt: skip
        for gauge in ENGINE_GAUGES:  # the local engine has them; another EngineClient need not
            value = getattr(self.engine, gauge, None)
            if value is not None:
                status[gauge] = value
        return status

    def failure_note(self) -> str | None:
        return None  # a failed load is the app's to report (`ModelLifecycle`); the engine thread does not crash alone

    async def start(self) -> None:
        await self.engine.start()
        info = self.engine.model_info
        self._formatter = ChatFormatter(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
        self._answers = AnswerIds(self.engine.detokenize)

    async def stop(self) -> None:
        await self.engine.stop()

    async def prepare(self, request: ChatRequest) -> PreparedRequest:
        params = structured.with_grammar(request, sampling_params(request))
        prompt_ids = await asyncio.to_thread(self.prompt_ids, request)  # templates and tokenizing: not on the loop
        return PreparedRequest(request, params, len(prompt_ids), prompt_ids)

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """Render the messages with the model's chat template and tokenize them; a text completion's prompt is
        tokenized as it is, after the BOS (control-token text in it is parsed: a raw prompt may be a whole
        hand-written Llama prompt)."""
        if self._formatter is None:
            raise EngineUnavailableError("The model is still loading; retry in a few seconds.")
        if request.prompt is not None:
            bos = self._formatter.bos_token
            return self.engine.tokenize(request.prompt if request.prompt.startswith(bos) else bos + request.prompt)
        answers = self._answers
        known = [
            i for i, m in enumerate(request.messages)
            if answers is not None and m.role == "assistant" and m.content and (
                answers.get(m.content) is not None or answers.get(m.content.strip()) is not None)
        ]  # fmt: skip
        pieces = render_pieces(self._formatter, request.messages, tools=tools.prompt_tools(request), separate=known)
        ids: list[int] = []
        for piece in pieces:
            generated = answers.get(piece.text) if answers is not None and piece.is_message_text else None
            ids += generated or self.engine.tokenize(piece.text, parse_special=not piece.is_message_text)
        return ids

    def _remember(self, text: str, token_ids: list[int]) -> None:
        """An answer's generated ids, for when it comes back in a history (answer_ids.py)."""
        if self._answers is not None:
            self._answers.record(text, token_ids)

    async def complete(self, prepared: PreparedRequest) -> ChatResult:
        request = prepared.request
        stream = await self.engine.add_request(_ids(prepared), prepared.params)
        choices: dict[int, _ChoiceBuilder] = {}
        last: RequestOutput | None = None
        try:
            async for output in stream:
                last = output
                for delta in output.deltas:
                    choices.setdefault(delta.index, _ChoiceBuilder(delta.index)).add(delta)
        finally:
            stream.abort()
        assert last is not None and last.finished
        for builder in choices.values():
            self._remember("".join(builder.parts), builder.token_ids)
        return ChatResult(
            choices=[tools.with_tool_calls(choices[i].build(), tools.function_names(request)) for i in sorted(choices)],
            usage=Usage(last.num_prompt_tokens, last.num_completion_tokens),
        )

    async def stream(self, prepared: PreparedRequest) -> ChatStream:
        request = prepared.request
        stream = await self.engine.add_request(_ids(prepared), prepared.params)
        names = tools.function_names(request)
        updates: ChatStream = ChatStreamHandle(stream, self._remember)
        if names:
            updates = tools.ToolCallStream(updates, names, forced=tools.forced_function(request) is not None)
        return updates


def _ids(prepared: PreparedRequest) -> list[int]:
    assert prepared.prompt_ids is not None, "prepared by another backend"
    return prepared.prompt_ids


class ChatStreamHandle:
    """Satisfies `service.types.ChatStream`; hands each choice's text and token ids to `on_answer` when it ends."""

    def __init__(self, stream: RequestStream, on_answer: Callable[[str, list[int]], None] | None = None) -> None:
        self._stream = stream
        self._on_answer = on_answer

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._updates()

    async def _updates(self) -> AsyncIterator[ChatUpdate]:
        answers: dict[int, tuple[list[str], list[int]]] = {}
        try:
            async for output in self._stream:
                for delta in output.deltas:
                    texts, ids = answers.setdefault(delta.index, ([], []))
                    texts.append(delta.text)
                    ids += delta.token_ids
                    if delta.finish_reason is not None and self._on_answer is not None:
                        self._on_answer("".join(texts), ids)
                yield ChatUpdate(
                    deltas=[_chat_delta(d) for d in output.deltas],
                    usage=Usage(output.num_prompt_tokens, output.num_completion_tokens),
                    finished=output.finished,
                )
        finally:
            self._stream.abort()

    def abort(self) -> None:
        self._stream.abort()


def _chat_delta(delta: ChoiceDelta) -> ChatDelta:
    reason = delta.finish_reason.value if delta.finish_reason is not None else None
    return ChatDelta(index=delta.index, text=delta.text, finish_reason=reason, logprobs=delta.logprobs)


class _ChoiceBuilder:
    def __init__(self, index: int) -> None:
        self.index = index
        self.parts: list[str] = []
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = None
        self.finish_reason: str | None = None

    def add(self, delta: ChoiceDelta) -> None:
        self.parts.append(delta.text)
        self.token_ids += delta.token_ids
        if delta.logprobs:
            self.logprobs = (self.logprobs or []) + delta.logprobs
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason.value

    def build(self) -> ChatChoice:
        return ChatChoice(self.index, "".join(self.parts), self.finish_reason or "stop", self.logprobs)
