"""Records that cross the API <-> service seam. Plain dataclasses: no HTTP, no pydantic.

A `ChatRequest` holds what the client asked, field for field as the API defines it (`GenerationOptions` keeps
"not sent" apart from a default, so a gateway can forward a request as it came); the service turns it into the
engine's settings once, in `ChatBackend.prepare`, which returns a `PreparedRequest`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from llamafoundry.engine.outputs import TokenLogprob, TopLogprob
from llamafoundry.engine.sampling_params import SamplingParams

CONTENT_FILTER = "content_filter"  # the finish reason of filtered content, and the error code of a filtered prompt

__all__ = ["TokenLogprob", "TopLogprob"]  # the engine's logprob records are the service's too


@dataclass
class ChatMessage:
    """One message, normalized: role is system|user|assistant|tool (developer is mapped to system by the API);
    content is text (content parts already joined).

    `content_parts` keeps the content parts as the client sent them when they include images, for deployments
    whose model takes images (they are forwarded unchanged to its upstream server); None otherwise.
    """

    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    content_parts: list[dict[str, Any]] | None = None


@dataclass
class GenerationOptions:
    """What the request asks of generation, as the API defines the fields (None: not sent; the service applies
    the API's defaults: temperature 0.7, or 0 under beam search; top_p 1; n 1)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    # Beyond the Azure spec: extra parameters on the Azure routes (`extra-parameters: pass-through`), OpenAI's
    # and vLLM's own fields on the OpenAI routes.
    n: int | None = None
    best_of: int | None = None
    logprobs: bool | int | None = None  # OpenAI's `true` (with top_logprobs) or the Llama integer
    top_logprobs: int | None = None
    ignore_eos: bool | None = None
    use_beam_search: bool | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = None
    # vLLM's sampling extensions and OpenAI's logit_bias ({token id: bias added to its logit})
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[int, float] | None = None

    @property
    def num_choices(self) -> int:
        return self.n or 1

    @property
    def num_candidates(self) -> int:
        """Sequences generated: best_of (or n) of them."""
        return max(self.best_of or 0, self.num_choices)


@dataclass
class ChatRequest:
    messages: list[ChatMessage]
    options: GenerationOptions = field(default_factory=GenerationOptions)
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    # {"type": "text" | "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
    response_format: dict[str, Any] | None = None
    # A text completion's prompt (`/v1/completions`): the model continues this text, with no chat template;
    # `messages` then hold it as one user message, which is what the content filter reads.
    prompt: str | None = None


@dataclass
class PreparedRequest:
    """A request turned, once, into what generation needs (`ChatBackend.prepare`): admission, the content filter and
    generation all use it, so the prompt is rendered and counted once.

    Attributes:
        request: the request as the client sent it.
        params: the engine's settings (grammar included); checked for every backend, so a forwarded request is
            refused for the same reasons as a local one.
        num_prompt_tokens: the prompt's tokens (a forwarded request's: counted with the Llama 3 tokenizer over
            Meta's template; the upstream's own usage replaces it afterwards).
        prompt_ids: the prompt's token ids, for a model this process runs; None for one that runs elsewhere.
    """

    request: ChatRequest
    params: SamplingParams
    num_prompt_tokens: int
    prompt_ids: list[int] | None = None


@dataclass
class ToolCall:
    """A function call the model made; `arguments` is a JSON object as a string."""

    id: str
    name: str
    arguments: str


@dataclass
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call `index` has its id and name, later ones add
    `arguments` text (the concatenated pieces are the call's arguments)."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatChoice:
    """A finished choice. `finish_reason` is one of stop|length|content_filter|tool_calls."""

    index: int
    text: str
    finish_reason: str
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] | None = None  # set (and finish_reason "tool_calls") when the model called tools
    content_filter_results: dict[str, Any] | None = None  # Azure's per-category annotation, when the filter ran


@dataclass
class ChatResult:
    choices: list[ChatChoice]
    usage: Usage
    prompt_filter_results: list[dict[str, Any]] | None = None  # Azure's prompt annotation, when the filter ran


@dataclass
class ChatDelta:
    """New text of one choice; `finish_reason` is set on the choice's last delta."""

    index: int
    text: str
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCallDelta] | None = None
    content_filter_results: dict[str, Any] | None = None  # on the delta that releases checked text or blocks
    content_filter_offsets: dict[str, int] | None = None  # asynchronous filter: the text span a verdict covers


@dataclass
class ChatUpdate:
    """One streaming update: the deltas that advanced, and token usage so far (final on the last update)."""

    deltas: list[ChatDelta]
    usage: Usage
    finished: bool = False
    prompt_filter_results: list[dict[str, Any]] | None = None  # on the first update, when the filter ran


class ChatStream(Protocol):
    """Streaming updates of one chat request. Call `abort()` when you stop reading early (client gone)."""

    def __aiter__(self) -> AsyncIterator[ChatUpdate]: ...

    def abort(self) -> None: ...
