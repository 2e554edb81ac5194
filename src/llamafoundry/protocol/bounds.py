"""Bounded work per request: every limit a request must keep, named in one place and checked before any work is
done (tokenizing, compiling a grammar, generating), identically on every route (bare, `/models`,
`/deployments/<name>`, `/v1`, text completions), so that one caller's odd or hostile body cannot take what the
others need. docs/api.md ("Limits") lists the numbers; keep them in step.

Field-level limits (counts, lengths, numeric ranges) are pydantic constraints in `schemas.py` that read these
names, so their 400s name the field like every other validation error. The rest is checked here: the body's
size and nesting (`read_body`, `check_nesting`), and what spans fields (`check_request_bounds`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llamafoundry.protocol.errors import ApiError
from llamafoundry.service.structured import MAX_SCHEMA_DEPTH  # the service's: one limit, checked first here

if TYPE_CHECKING:
    from llamafoundry.protocol.schemas import ChatCompletionsOptions, LlamaExtras

MAX_BODY_BYTES = 8 * 2**20  # 413: the request body
MAX_JSON_DEPTH = 128  # nesting of arrays and objects anywhere in the body
MAX_MESSAGES = 2048  # OpenAI's and Azure OpenAI's limit
MAX_PROMPT_CHARS = 1_048_576  # messages' text, names and tool-call arguments, tool definitions: ~8x a 128k context
MAX_TOOLS = 128  # OpenAI's limit
MAX_SCHEMA_CHARS = 65_536  # one JSON schema (response_format's, or a tool's parameters), as compact JSON
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 512  # one stop sequence (the detokenizer holds back text that could start one)
MAX_STOP_TOKEN_IDS = 256
MAX_LOGIT_BIAS = 1024  # tokens in one logit_bias (OpenAI allows 300)
MAX_TOKEN_ID = 2**31 - 1  # a stop token id (the model's vocabulary is the tighter limit, checked by the engine)
MAX_TOKENS = 131_072  # max_tokens: the longest Llama context
MAX_CHOICES = 128  # n and best_of (the server's --parallel is the tighter limit for local models)
MAX_GENERATED_TOKENS = 262_144  # best_of (or n) x max_tokens: the tokens one request may ask to generate
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1  # int64 or uint64, as the OpenAI and vLLM seeds


def too_large(what: str, limit: str, advice: str, param: str | None = None, code: str = "limit_exceeded") -> ApiError:
    """The 400 of a request over one of the limits above: what, the limit, and what to do."""
    return ApiError(400, code, f"{what}; the limit is {limit}. {advice}", param)


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels in `value`."""
    return too_deep_at(value, limit) is not None


def too_deep_at(value: Any, limit: int) -> tuple[str | int, ...] | None:
    """The path to a container nested more than `limit` levels deep in `value`, or None (walked without
    recursion, so any depth is safe to measure)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) >= limit:
            return path
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        stack.extend((child, (*path, key)) for key, child in pairs if isinstance(child, dict | list))
    return None


def check_nesting(body: dict[str, Any]) -> None:
    """400 for a body nested deeper than MAX_JSON_DEPTH, naming the top-level field: nothing a request means
    nests so deep, and deeper values reach recursion limits in the code that reads them."""
    path = too_deep_at(body, MAX_JSON_DEPTH)
    if path is not None:
        field = str(path[0])
        raise too_large(
            f"'{field}' nests arrays and objects more than {MAX_JSON_DEPTH} levels deep",
            f"{MAX_JSON_DEPTH} levels ({MAX_SCHEMA_DEPTH} in a JSON schema)",
            "Flatten the data you send.",
            field,
            code="nesting_too_deep",
        )


def check_schema(schema: Any, what: str) -> None:
    """Raise ValueError (a pydantic validator's way to refuse) for a JSON schema over the size or depth limits."""
    if depth_exceeds(schema, MAX_SCHEMA_DEPTH):
        raise ValueError(
            f"{what} nests more than {MAX_SCHEMA_DEPTH} levels deep, the limit. Define repeated parts once under "
            "$defs and refer to them with $ref (Pydantic does)"
        )
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    if size > MAX_SCHEMA_CHARS:
        raise ValueError(f"{what} is {size} characters as JSON; the limit is {MAX_SCHEMA_CHARS}. Send a smaller schema")


def check_request_bounds(options: ChatCompletionsOptions, llama: LlamaExtras, prompt_param: str = "messages") -> None:
    """The limits that span fields: the prompt's characters and the tokens the request may generate.

    Args:
        prompt_param: the field holding the prompt: `messages`, or a text completion's `prompt`.
    """
    num_chars = prompt_chars(options)
    if num_chars > MAX_PROMPT_CHARS:
        holder = "messages and tools hold" if prompt_param == "messages" else "prompt holds"
        raise too_large(
            f"The {holder} {num_chars:,} characters",
            f"{MAX_PROMPT_CHARS:,} characters, more than any Llama context holds",
            "Send a shorter prompt.",
            prompt_param,
            code="string_above_max_length",
        )
    num_candidates = llama.best_of or llama.n or 1
    if options.max_tokens is not None and num_candidates * options.max_tokens > MAX_GENERATED_TOKENS:
        param = "best_of" if llama.best_of else "n"
        raise too_large(
            f"{param}={num_candidates} sequences of max_tokens={options.max_tokens} ask for "
            f"{num_candidates * options.max_tokens:,} generated tokens",
            f"{MAX_GENERATED_TOKENS:,} tokens per request",
            f"Lower {param} or max_tokens.",
            param,
        )


def prompt_chars(options: ChatCompletionsOptions) -> int:
    """Characters of what becomes the prompt: message text and names, tool calls, tool definitions."""
    total = 0
    for message in options.messages:
        content = message.content
        if isinstance(content, str):
            total += len(content)
        elif content is not None:
            total += sum(len(getattr(part, "text", "")) for part in content)  # image parts: the body limit
        total += len(getattr(message, "name", None) or "")
        for call in getattr(message, "tool_calls", None) or ():
            total += len(call.function.name) + len(call.function.arguments)
    for tool in options.tools or ():
        total += len(json.dumps(tool.model_dump(exclude_none=True), ensure_ascii=False))
    return total
