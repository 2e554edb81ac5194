"""Azure's asynchronous filter mode for streamed completions (`SafetyPolicy.streaming == "asynchronous"`).

Text streams as the model writes it; checks of each choice's text so far run beside the stream. The custom
blocklists and the hard rules (cheap, deterministic) run before every delta is sent, so their matches never stream.
The classifier's check of the text including a delta starts when none is running for its choice, and the delta
waits at most `CHECK_BUDGET_S` for its verdict: the built-in classifier (well under a millisecond) answers within
that, so text that fails its check is not sent either; a slow one (Llama Guard) answers later, and text flows on
meanwhile, as on Azure. A violation ends the choice with an empty delta whose `finish_reason` is
`content_filter`, with the verdict in `content_filter_results` and `content_filter_offsets` (`check_offset`:
the characters checked; `start_offset`/`end_offset`: the span the verdict covers). A choice's own finish waits for
the check of its complete text, so a stream always ends with the verdict on everything it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llamafoundry.service.types import CONTENT_FILTER, ChatDelta, ChatMessage, ChatStream, ChatUpdate

if TYPE_CHECKING:
    from llamafoundry.safety.chat import ChatSafety

CHECK_BUDGET_S = 0.02


@dataclass
class _Choice:
    text: str = ""
    checked_chars: int = 0  # length of the text the last finished check covered
    check: asyncio.Task[tuple[bool, dict[str, Any]]] | None = None
    check_end: int = 0  # length of the text the running check covers
    blocked: bool = False
    done: bool = False
    held: list[ChatDelta] = field(default_factory=list)  # the finishing delta, until the last check is in


class AsyncFilteredChatStream:
    """Satisfies `ChatStream`: the inner stream's updates at once, with checks beside them."""

    def __init__(
        self,
        safety: ChatSafety,
        inner: ChatStream,
        messages: Sequence[ChatMessage],
        num_choices: int,
        prompt_filter_results: list[dict[str, Any]] | None,
    ) -> None:
        self._safety = safety
        self._inner = inner
        self._messages = list(messages)
        self._num_choices = num_choices
        self._prompt_filter_results = prompt_filter_results
        self.prompt_filter_results = prompt_filter_results
        self._choices: dict[int, _Choice] = {}

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._updates()

    def abort(self) -> None:
        self._inner.abort()

    async def _updates(self) -> AsyncIterator[ChatUpdate]:
        usage = None
        try:
            async for update in self._inner:
                usage = update.usage
                deltas = [out for delta in update.deltas for out in await self._advance(delta)]
                deltas.extend(await self._collect_blocks())
                if update.finished:
                    deltas.extend(await self._finish_all())
                first = self._first(ChatUpdate(deltas=deltas, usage=update.usage, finished=update.finished))
                yield first
                if update.finished:
                    return
                if self._all_stopped():
                    self._inner.abort()
                    yield ChatUpdate(deltas=[], usage=update.usage, finished=True)
                    return
            if usage is not None:  # the inner stream ended without a final update
                yield self._first(ChatUpdate(deltas=await self._finish_all(), usage=usage, finished=True))
        finally:
            self._inner.abort()
            for state in self._choices.values():
                if state.check is not None:
                    state.check.cancel()

    def _first(self, update: ChatUpdate) -> ChatUpdate:
        if self._prompt_filter_results is not None:
            update.prompt_filter_results = self._prompt_filter_results
            self._prompt_filter_results = None
        return update

    def _all_stopped(self) -> bool:
        states = self._choices.values()
        return len(self._choices) >= self._num_choices and any(s.blocked for s in states) and all(
            s.blocked or s.done for s in states
        )

    async def _advance(self, delta: ChatDelta) -> list[ChatDelta]:
        """Send `delta` unless the check it starts (or one already running) blocks within the budget."""
        state = self._choices.setdefault(delta.index, _Choice())
        if state.blocked or state.done:
            return []
        candidate = state.text + delta.text + "".join(c.arguments for c in delta.tool_calls or [])
        rule_block = self._safety.deterministic_block(candidate)
        if rule_block is not None:  # blocklists and hard rules: checked before the text is sent
            state.checked_chars = len(candidate)
            return [self._block(delta.index, state, rule_block)]
        if state.check is None:
            self._start_check(state, candidate)
        verdict = await self._verdict_within_budget(state)
        if verdict is not None and verdict[0]:
            return [self._block(delta.index, state, verdict[1])]
        state.text = candidate
        if delta.finish_reason is not None:  # the finish waits for the check of the whole text
            state.held.append(delta)
            return []
        return [delta]

    def _start_check(self, state: _Choice, text: str) -> None:
        state.check_end = len(text)
        state.check = asyncio.create_task(self._safety.judge_completion(self._messages, text))

    async def _verdict_within_budget(self, state: _Choice) -> tuple[bool, dict[str, Any]] | None:
        """The running check's verdict if it is in within `CHECK_BUDGET_S` (a new check starts for newer text)."""
        task = state.check
        if task is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), CHECK_BUDGET_S)
        if not task.done():
            return None
        state.check = None
        state.checked_chars = state.check_end
        return task.result()

    def _block(self, index: int, state: _Choice, annotations: dict[str, Any]) -> ChatDelta:
        state.blocked = True
        offsets = {"check_offset": state.checked_chars, "start_offset": 0, "end_offset": state.checked_chars}
        return ChatDelta(index, "", CONTENT_FILTER, content_filter_results=annotations, content_filter_offsets=offsets)

    async def _collect_blocks(self) -> list[ChatDelta]:
        """Blocks from checks that finished since (they end their choice before its next delta is sent)."""
        out = []
        for index, state in self._choices.items():
            if state.blocked or state.check is None or not state.check.done():
                continue
            verdict = await self._verdict_within_budget(state)
            if verdict is not None and verdict[0]:
                out.append(self._block(index, state, verdict[1]))
        return out

    async def _finish_all(self) -> list[ChatDelta]:
        """Check each choice's whole text (after any check still running) and release or block its finish."""
        out = []
        for index, state in sorted(self._choices.items()):
            if state.blocked:
                continue
            if state.check is not None:
                await asyncio.shield(state.check)
                state.check = None
            blocked, annotations = await self._safety.judge_completion(self._messages, state.text)
            state.checked_chars = len(state.text)
            if blocked:
                out.append(self._block(index, state, annotations))
                continue
            state.done = True
            finish = state.held[-1] if state.held else ChatDelta(index, "", None)
            out.append(dataclasses.replace(finish, content_filter_results=annotations))
        return out
