"""The seam between the service layer and whatever generates tokens (the local engine, a remote backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from llamafoundry.engine.outputs import RequestOutput
from llamafoundry.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class ModelInfo:
    """What the service needs to know about the served model."""

    name: str
    provider: str
    max_context: int  # tokens one request may use, prompt and completion together
    chat_template: str | None  # the GGUF's `tokenizer.chat_template`, if any
    bos_token: str
    eos_token: str


class RequestStream(Protocol):
    """The outputs of one submitted request, in order, ending with one that has `finished=True`.

    `abort()` (idempotent, callable from any coroutine) stops generation and frees the request's sequences
    within one engine step; iteration then ends. Callers must call it when they stop reading early.
    """

    def __aiter__(self) -> AsyncIterator[RequestOutput]: ...

    def abort(self) -> None: ...


class EngineClient(Protocol):
    """Generates completions for token prompts.

    `add_request` validates and enqueues a request and returns its stream; errors that make a request
    unservable (prompt too long for the context, queue full, more sequences than slots) are raised from it,
    before any output, so the API can still answer with an ordinary error status.
    """

    @property
    def model_info(self) -> ModelInfo: ...

    @property
    def is_ready(self) -> bool: ...

    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, no BOS added (templates carry their own); control-token text ("<|eot_id|>") is
        parsed as control tokens when `parse_special`, as plain text otherwise (message text)."""
        ...

    def detokenize(self, token_ids: list[int]) -> str:
        """The text of generated token ids as a stream of them reads (control tokens as nothing)."""
        ...

    async def add_request(self, prompt_token_ids: list[int], params: SamplingParams) -> RequestStream: ...
