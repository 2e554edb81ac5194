"""The chat use case: messages -> prompt tokens -> engine -> choices or streaming updates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from llamafoundry.engine.client import EngineClient, RequestStream
from llamafoundry.engine.outputs import ChoiceDelta, EngineUnavailableError, RequestOutput, TokenLogprob
from llamafoundry.service import tools
from llamafoundry.service.answer_ids import AnswerIds
from llamafoundry.service.chat_format import ChatFormatter
from llamafoundry.service.prompt_pieces import render_pieces
from llamafoundry.service.safety import ChatSafety
from llamafoundry.service.types import ChatChoice, ChatDelta, ChatRequest, ChatResult, ChatStream, ChatUpdate, Usage


class ManagedEngine(EngineClient, Protocol):
    """An EngineClient with a lifecycle (the local AsyncEngine; a remote backend later)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ChatService:
    """Turns chat requests (and text completions) into engine requests for one model.

    Args:
        engine: the model's engine; started by `start()`.
        model_name: reported by /info and in every response's `model`.
        model_provider: reported by /info.
        max_context: tokens one request may use (prompt + completion).
        safety: the deployment's content filter, if any (prompts checked before generation, output before release).
    """

    def __init__(
        self,
        engine: ManagedEngine,
        model_name: str,
        model_provider: str,
        max_context: int,
        safety: ChatSafety | None = None,
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.model_provider = model_provider
        self.max_context = max_context
        self.safety = safety
        self._formatter: ChatFormatter | None = None
        self._answers: AnswerIds | None = None  # the ids of recent answers, to prompt returning histories with

    @property
    def is_ready(self) -> bool:
        return self._formatter is not None and self.engine.is_ready

    def failure_note(self) -> str | None:
        return None  # a failed load is the app's to report (`ModelLifecycle`); the engine thread does not crash alone

    async def start(self) -> None:
        await self.engine.start()
        info = self.engine.model_info
        self._formatter = ChatFormatter(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
        self._answers = AnswerIds(self.engine.detokenize)

    async def stop(self) -> None:
        await self.engine.stop()

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

    def count_tokens(self, request: ChatRequest) -> int:
        return len(self.prompt_ids(request))

    async def complete(self, request: ChatRequest) -> ChatResult:
        prompt_ids = self.prompt_ids(request)
        prompt_filter = await self._check_prompt(request, prompt_ids)
        stream = await self.engine.add_request(prompt_ids, request.params)
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
        result = ChatResult(
            choices=[tools.with_tool_calls(choices[i].build(), tools.function_names(request)) for i in sorted(choices)],
            usage=Usage(last.num_prompt_tokens, last.num_completion_tokens),
        )
        if self.safety is not None:
            result = await self.safety.filter_result(request.messages, result, prompt_filter)
        return result

    async def stream(self, request: ChatRequest) -> ChatStream:
        """Submit the request now (errors are raised here, before any output) and return its updates."""
        prompt_ids = self.prompt_ids(request)
        prompt_filter = await self._check_prompt(request, prompt_ids)
        stream = await self.engine.add_request(prompt_ids, request.params)
        names = tools.function_names(request)
        updates: ChatStream = ChatStreamHandle(stream, self._remember)
        if names:
            updates = tools.ToolCallStream(updates, names, forced=tools.forced_function(request) is not None)
        if self.safety is not None:
            updates = self.safety.wrap_stream(updates, request.messages, request.params.n, prompt_filter)
        return updates

    async def _check_prompt(self, request: ChatRequest, prompt_ids: list[int]) -> list[dict[str, Any]] | None:
        """`prompt_filter_results`, None without a filter; raises `ContentFilteredError` for a blocked prompt."""
        if self.safety is None:
            return None
        return await self.safety.check_prompt(request.messages, num_prompt_tokens=len(prompt_ids))


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
