"""`POST /v1/completions`: OpenAI's text completions, which Azure's serverless Llama endpoints serve beside chat
(the OpenAI SDK's `client.completions.create`, LangChain's `OpenAI` LLM). The model continues a raw prompt, with
no chat template: the natural API of the catalog's base (non-Instruct) models.

The request runs through the same service as a chat (content filter, limits, metering), as a `ChatRequest` whose
`prompt` is set; the sampling fields are validated by the chat's own rules. What differs is the body and the
answer's shape (`text_completion`, `choices[].text`, logprobs as parallel lists).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from llamafoundry.engine.outputs import TokenLogprob
from llamafoundry.protocol.bounds import check_request_bounds
from llamafoundry.protocol.chat import check_unknown, generation_options
from llamafoundry.protocol.errors import ApiError, invalid, not_supported
from llamafoundry.protocol.render import answer_body, usage_body
from llamafoundry.protocol.schemas import LLAMA_EXTRA_PARAMETERS, ChatCompletionsOptions, LlamaExtras
from llamafoundry.protocol.validation import validation_error
from llamafoundry.service.types import ChatDelta, ChatMessage, ChatRequest, ChatResult, Usage

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for text completions
SAMPLING_FIELDS = (
    "max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "stream",
)  # fmt: skip
IGNORED_FIELDS = ("model", "stream_options", "user", "store", "metadata", "service_tier")
# An OpenAI route: OpenAI's fields (`n`, `best_of`, `logprobs`, `logit_bias`) and vLLM's sampling extensions are
# ordinary fields; other keys are a 400 unless `extra-parameters: drop` or `pass-through` asks to ignore them.
KNOWN_FIELDS = frozenset({"prompt", "echo", "suffix", *IGNORED_FIELDS, *SAMPLING_FIELDS}) | LLAMA_EXTRA_PARAMETERS
MAX_LOGPROBS = 5  # OpenAI's limit for completions


@dataclass
class ParsedCompletion:
    request: ChatRequest
    echo: bool


def parse_completion(body: dict[str, Any], mode: str) -> ParsedCompletion:
    """Validate a completions body (`mode`, the `extra-parameters` header's, decides only about keys neither OpenAI
    nor vLLM defines). Raises ApiError: 400 naming the field, 422 for what is not served."""
    check_unknown([key for key in body if key not in KNOWN_FIELDS], mode)
    prompt = _prompt(body.get("prompt"))
    _check_not_served(body)
    chat_fields = {key: body[key] for key in SAMPLING_FIELDS if body.get(key) is not None}
    chat_fields.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    llama_fields = {key: body[key] for key in LLAMA_EXTRA_PARAMETERS if body.get(key) is not None}
    try:
        options = ChatCompletionsOptions.model_validate(
            {"messages": [{"role": "user", "content": prompt}], **chat_fields}
        )
        llama = LlamaExtras.model_validate(llama_fields)
    except ValidationError as exc:
        raise validation_error(exc) from None
    check_request_bounds(options, llama, prompt_param="prompt")
    if isinstance(llama.logprobs, bool) or (llama.logprobs is not None and llama.logprobs > MAX_LOGPROBS):
        raise invalid("logprobs", f"logprobs must be an integer from 0 to {MAX_LOGPROBS} (the most likely tokens).")
    echo = _flag(body.get("echo"), "echo")
    if echo and llama.logprobs is not None:
        raise not_supported("echo", "echo with logprobs is not supported: the prompt's tokens get no logprobs.")
    options_ = generation_options(options, llama)
    request = ChatRequest([ChatMessage("user", prompt)], options_, prompt=prompt, stream=bool(options.stream))
    return ParsedCompletion(request, echo=echo)


def _flag(value: Any, name: str) -> bool:
    """A boolean field read as the chat fields are (lax: "true", 1), never Python's truthiness ("false" is true)."""
    try:
        return bool(TypeAdapter(bool | None).validate_python(value))
    except ValidationError:
        raise invalid(name, f"'{name}' must be true or false.") from None


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, str):
        return value
    if value is None:
        raise ApiError(400, "missing_required_parameter", "'prompt' is required: the text for the model to continue.",
                       "prompt")  # fmt: skip
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        raise not_supported("prompt", "Send one prompt per request (a list of several is not supported).", value)
    raise not_supported("prompt", "'prompt' must be a string (token-id prompts are not supported).", value)


def _check_not_served(body: dict[str, Any]) -> None:
    if body.get("suffix"):
        raise not_supported("suffix", "suffix (insertion) is not supported by Llama models.", body["suffix"])


# ---- the answer -------------------------------------------------------------------------------------------


def new_id() -> str:
    return "cmpl-" + uuid.uuid4().hex


def text_completion_body(result: ChatResult, model: str, echo_prompt: str | None = None) -> dict[str, Any]:
    """The non-streaming `text_completion` body (with Azure's filter annotations when the content filter ran)."""
    choices = [
        {
            "index": choice.index,
            "text": (echo_prompt or "") + choice.text,
            "logprobs": completion_logprobs(choice.logprobs),
            "finish_reason": choice.finish_reason,
            **({"content_filter_results": choice.content_filter_results} if choice.content_filter_results else {}),
        }
        for choice in result.choices
    ]
    return answer_body(new_id(), "text_completion", model, choices, result)


def completion_logprobs(logprobs: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """OpenAI's completions form: parallel `tokens`, `token_logprobs`, `top_logprobs` ({token: logprob}) and
    `text_offset` (each token's character offset in the choice's text, from `offset`)."""
    if logprobs is None:
        return None
    offsets = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{t.token: t.logprob for t in lp.top_logprobs} for lp in logprobs],
        "text_offset": offsets,
    }


@dataclass
class TextChunkRenderer:
    """The chunks of one streamed text completion (the interface of `render.ChunkRenderer`, for `chat_events`):
    no role chunk; with `echo`, each choice starts with the prompt."""

    model: str
    echo_prompt: str | None = None
    id: str = field(default_factory=new_id)
    created: int = field(default_factory=lambda: int(time.time()))
    _offsets: dict[int, int] = field(default_factory=dict)

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices}  # fmt: skip

    def role(self, index: int, prompt_filter_results: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """A choice's first chunk: its echoed prompt, if any; the content filter's `prompt_filter_results` ride
        on the first chunk (with no choice when nothing is echoed, as Azure OpenAI sends them)."""
        choices = []
        if self.echo_prompt is not None:
            self._offsets[index] = len(self.echo_prompt)
            choices = [{"index": index, "text": self.echo_prompt, "logprobs": None, "finish_reason": None}]
        if not choices and prompt_filter_results is None:
            return None
        chunk = self._chunk(choices)
        if prompt_filter_results is not None:
            chunk["prompt_filter_results"] = prompt_filter_results
        return chunk

    def delta(self, delta: ChatDelta) -> dict[str, Any]:
        offset = self._offsets.get(delta.index, 0)
        self._offsets[delta.index] = offset + len(delta.text)
        choice = {
            "index": delta.index,
            "text": delta.text,
            "logprobs": completion_logprobs(delta.logprobs, offset),
            "finish_reason": delta.finish_reason,
        }
        if delta.content_filter_results:
            choice["content_filter_results"] = delta.content_filter_results
        return self._chunk([choice])

    def usage_only(self, usage: Usage) -> dict[str, Any]:
        return {**self._chunk([]), "usage": usage_body(usage)}

    def error(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**self._chunk([]), **body}
