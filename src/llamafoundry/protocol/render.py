"""Service results -> response bodies and stream chunks, in the shapes the Azure and OpenAI SDKs parse.

Plain dicts, so that the exact key set is visible: `created` is an integer (the .NET SDK requires it), `role`
is omitted (never null) after a choice's first chunk, `content` is always a string in chunks, and `logprobs`
is OpenAI's `{"content": [...]}` or null.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from llamafoundry.engine.outputs import TokenLogprob
from llamafoundry.service.types import ChatChoice, ChatDelta, ChatResult, Usage


def new_completion_id() -> str:
    return uuid.uuid4().hex  # 32 lowercase hex, as MaaS Llama ids are


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def logprobs_body(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if logprobs is None:
        return None
    return {"content": [_token_logprob(lp) for lp in logprobs]}


def _token_logprob(lp: TokenLogprob) -> dict[str, Any]:
    top = [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in lp.top_logprobs]
    return {"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes, "top_logprobs": top}


def completion_body(result: ChatResult, model: str) -> dict[str, Any]:
    """The non-streaming `chat.completion` body; with Azure's `prompt_filter_results` and per-choice
    `content_filter_results` when the content filter ran."""
    choices = [
        {
            "index": choice.index,
            "message": _message(choice),
            "finish_reason": choice.finish_reason,
            "logprobs": logprobs_body(choice.logprobs),
            **_choice_annotations(choice.content_filter_results),
        }
        for choice in result.choices
    ]
    return answer_body(new_completion_id(), "chat.completion", model, choices, result)


def answer_body(
    answer_id: str, kind: str, model: str, choices: list[dict[str, Any]], result: ChatResult
) -> dict[str, Any]:
    """A non-streaming answer around its rendered `choices` (chat or text completion): usage, and Azure's
    `prompt_filter_results` when the content filter ran."""
    body = {
        "id": answer_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_body(result.usage),
    }
    if result.prompt_filter_results is not None:
        body["prompt_filter_results"] = result.prompt_filter_results
    return body


def _choice_annotations(results: dict[str, Any] | None) -> dict[str, Any]:
    return {} if results is None else {"content_filter_results": results}


def _message(choice: ChatChoice) -> dict[str, Any]:
    """A choice's message; with tool calls, `content` is null and `tool_calls` holds them (arguments a string)."""
    if not choice.tool_calls:
        return {"role": "assistant", "content": choice.text, "tool_calls": None}
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in choice.tool_calls
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def _delta_body(delta: ChatDelta) -> dict[str, Any]:
    """`{"content": text}`, plus `tool_calls` pieces: each with `index` and a `function` object (the SDK samples
    read `function.name` and `function.arguments` on every tool-call update); `id` and `type` on a call's first."""
    if not delta.tool_calls:
        return {"content": delta.text}
    pieces = []
    for piece in delta.tool_calls:
        function: dict[str, Any] = {"arguments": piece.arguments}
        body: dict[str, Any] = {"index": piece.index}
        if piece.id is not None:
            body.update(id=piece.id, type="function")
        if piece.name is not None:
            function = {"name": piece.name, **function}
        pieces.append({**body, "function": function})
    return {"content": delta.text, "tool_calls": pieces}


@dataclass
class ChunkRenderer:
    """Builds the `chat.completion.chunk` objects of one stream: the same id, created and model in each."""

    model: str
    id: str = field(default_factory=new_completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def role(self, index: int, prompt_filter_results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A choice's first chunk: `{"role": "assistant", "content": ""}`.

        Azure OpenAI sends `prompt_filter_results` in a chunk of its own with `"choices": []`. Here they ride on
        the first role chunk instead: an empty-choices chunk breaks the canonical stream (exactly one choice per
        chunk, contract §5.2): .NET inflates it to an update without a role, and the PY-TEST validator and the
        SDK samples index `choices[0]` of every update. Every SDK keeps the extra top-level key.
        """
        choice = {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
            "logprobs": None,
        }
        chunk = self._chunk([choice])
        if prompt_filter_results is not None:
            chunk["prompt_filter_results"] = prompt_filter_results
        return chunk

    def delta(self, delta: ChatDelta) -> dict[str, Any]:
        choice = {
            "index": delta.index,
            "delta": _delta_body(delta),
            "finish_reason": delta.finish_reason,
            "logprobs": logprobs_body(delta.logprobs),
            **_choice_annotations(delta.content_filter_results),
        }
        if delta.content_filter_offsets is not None:
            choice["content_filter_offsets"] = delta.content_filter_offsets
        return self._chunk([choice])

    def usage_only(self, usage: Usage) -> dict[str, Any]:
        """A last chunk with usage and no choice: only when the stream ended without a final delta."""
        return {**self._chunk([]), "usage": usage_body(usage)}

    def error(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chunk carrying an error envelope, for failures after the first byte (OpenAI clients raise on it)."""
        return {**self._chunk([]), **body}
