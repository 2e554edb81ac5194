"""A scripted chat backend for testing the HTTP layer in isolation (validation, framing, error mapping). It prepares
requests with the service's real mapping (`service.sampling`), so the API's errors are the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from llamafoundry.engine.outputs import TokenLogprob, TopLogprob
from llamafoundry.service.sampling import sampling_params
from llamafoundry.service.types import (
    ChatChoice,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ChatUpdate,
    PreparedRequest,
    Usage,
)

WORDS = ["Hello", " there", ",", " friend", "."]


def fake_logprobs(text: str, top: int) -> list[TokenLogprob]:
    alternatives = [TopLogprob(token=f"t{k}", logprob=-1.0 - k, bytes=list(f"t{k}".encode())) for k in range(top)]
    return [TokenLogprob(token=text, logprob=-0.5, bytes=list(text.encode()), top_logprobs=alternatives)]


class FakeStream:
    def __init__(
        self, updates: list[ChatUpdate], delay_s: float, fail_after: int | None, failure: Exception | None = None
    ) -> None:
        self.updates = updates
        self.failure = failure or RuntimeError("engine exploded")
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.is_aborted = False
        self.num_sent = 0

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChatUpdate]:
        for update in self.updates:
            if self.is_aborted:
                return
            if self.fail_after is not None and self.num_sent >= self.fail_after:
                raise self.failure
            await asyncio.sleep(self.delay_s)
            self.num_sent += 1
            yield update

    def abort(self) -> None:
        self.is_aborted = True


@dataclass
class FakeChatService:
    """Answers every request with WORDS (per choice), or raises `error` from complete()/stream()."""

    model_name: str = "fake-llama"
    model_provider: str = "Meta"
    max_context: int = 512
    is_ready: bool = True
    error: Exception | None = None
    delay_s: float = 0.0
    fail_after: int | None = None
    stream_failure: Exception | None = None  # what a stream raises after `fail_after` updates (a bug by default)
    num_words: int = len(WORDS)
    requests: list[PreparedRequest] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)
    on_start: Callable[[], None] | None = None
    num_stops: int = 0

    async def start(self) -> None:
        if self.on_start is not None:
            self.on_start()

    def failure_note(self) -> str | None:
        return None

    async def stop(self) -> None:
        self.num_stops += 1

    def status(self) -> dict[str, Any]:
        return {"state": "ready" if self.is_ready else "starting"}

    async def prepare(self, request: ChatRequest) -> PreparedRequest:
        return PreparedRequest(request, sampling_params(request), num_prompt_tokens=7)

    def _usage(self, num_done: int) -> Usage:
        return Usage(prompt_tokens=7, completion_tokens=num_done)

    def _deltas(self, prepared: PreparedRequest) -> list[ChatUpdate]:
        params = prepared.params
        updates, n, words = [], params.n, WORDS[: self.num_words]
        for step, word in enumerate(words):
            last = step == len(words) - 1
            deltas = [
                ChatDelta(
                    index=i,
                    text=word,
                    finish_reason="stop" if last else None,
                    logprobs=fake_logprobs(word, params.top_logprobs) if params.logprobs else None,
                )
                for i in range(n)
            ]
            updates.append(ChatUpdate(deltas=deltas, usage=self._usage((step + 1) * n), finished=last))
        return updates

    async def complete(self, prepared: PreparedRequest) -> ChatResult:
        self.requests.append(prepared)
        if self.error is not None:
            raise self.error
        await asyncio.sleep(self.delay_s)
        updates = self._deltas(prepared)
        choices = []
        for i in range(prepared.params.n):
            text = "".join(d.text for u in updates for d in u.deltas if d.index == i)
            lps = [lp for u in updates for d in u.deltas if d.index == i for lp in (d.logprobs or [])]
            choices.append(ChatChoice(i, text, "stop", lps if prepared.params.logprobs else None))
        return ChatResult(choices=choices, usage=updates[-1].usage)

    async def stream(self, prepared: PreparedRequest) -> FakeStream:
        self.requests.append(prepared)
        if self.error is not None:
            raise self.error
        stream = FakeStream(self._deltas(prepared), self.delay_s, self.fail_after, self.stream_failure)
        self.streams.append(stream)
        return stream
