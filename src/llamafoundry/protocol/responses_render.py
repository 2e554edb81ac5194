"""Results and stream updates -> OpenAI's Responses API: the `response` object and its stream events.

A response's `output` is a list of items: a `message` (its text as one `output_text` part) and/or `function_call`
items (one per call). Streamed, the events are those the openai SDK and the Agents SDK read: `response.created`,
`response.in_progress`, then per item `response.output_item.added`, for a message `response.content_part.added`,
`response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`; for a call
`response.function_call_arguments.delta`..., `.done`; then `response.output_item.done`; last
`response.completed` (or `response.incomplete` when `max_output_tokens` or the content filter cut the output, or
`response.failed`), with usage. Every event has `type` and a growing `sequence_number`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from llamafoundry.service.types import CONTENT_FILTER, ChatDelta, ChatResult, TokenLogprob, Usage

Event = dict[str, Any]
_INCOMPLETE = {"length": "max_output_tokens", CONTENT_FILTER: "content_filter"}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _logprobs(logprobs: list[TokenLogprob] | None) -> list[dict[str, Any]]:
    return [
        {"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes,
         "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in lp.top_logprobs]}
        for lp in logprobs or []
    ]  # fmt: skip


def _text_part(text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _message(item_id: str, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def _function_call(item_id: str, status: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}  # fmt: skip


@dataclass
class ResponseShape:
    """What every form of one response shares: its id, creation time, model and the request's echo."""

    model: str
    echo: dict[str, Any]
    id: str = field(default_factory=lambda: _new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self, status: str, output: list[dict[str, Any]], usage: Usage | None = None, finish_reason: str | None = None
    ) -> dict[str, Any]:
        """The `response` object; `finish_reason` (of a finished one) decides completed or incomplete."""
        reason = _INCOMPLETE.get(finish_reason or "")
        if status == "completed" and reason is not None:
            status = "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "model": self.model,
            "output": output,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "usage": usage_body(usage) if usage is not None else None,
            **self.echo,
        }


def response_body(result: ChatResult, shape: ResponseShape) -> dict[str, Any]:
    """The non-streaming answer: the first choice's text and calls as output items."""
    choice = result.choices[0]
    finished = "incomplete" if choice.finish_reason in _INCOMPLETE else "completed"
    output: list[dict[str, Any]] = []
    if choice.text or not choice.tool_calls:
        part = _text_part(choice.text, _logprobs(choice.logprobs))
        output.append(_message(_new_id("msg"), finished, [part]))
    for call in choice.tool_calls or []:
        output.append(_function_call(_new_id("fc"), "completed", call.id, call.name, call.arguments))
    return shape.response("completed", output, result.usage, choice.finish_reason)


@dataclass
class _OpenItem:
    """An output item being streamed: a message's text so far, or a call's arguments so far."""

    output_index: int
    item: dict[str, Any]
    text: str = ""
    logprobs: list[dict[str, Any]] = field(default_factory=list)


class ResponseEvents:
    """The events of one streamed response, fed the first choice's deltas (`start`, `delta`..., `finish`)."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}  # a call's index in the choice -> its item
        self._finish_reason: str | None = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[Event]:
        response = self.shape.response("in_progress", [])
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]  # fmt: skip

    def delta(self, delta: ChatDelta) -> list[Event]:
        if delta.index != 0:
            return []  # a response has one choice
        events: list[Event] = []
        if delta.text or delta.logprobs:
            events += self._text(delta.text, _logprobs(delta.logprobs))
        for piece in delta.tool_calls or []:
            events += self._call(piece.index, piece.arguments, piece.id, piece.name)
        if delta.finish_reason is not None:
            self._finish_reason = delta.finish_reason
        return events

    def _text(self, text: str, logprobs: list[dict[str, Any]]) -> list[Event]:
        events: list[Event] = []
        current = self._open
        if current is None or current.item["type"] != "message":
            events += self._close()
            current = self._open = _OpenItem(len(self._output), _message(_new_id("msg"), "in_progress", []))
            self._output.append(current.item)
            events.append(self._event("response.output_item.added", output_index=current.output_index,
                                      item={**current.item, "content": []}))  # fmt: skip
            events.append(self._event("response.content_part.added", item_id=current.item["id"],
                                      output_index=current.output_index, content_index=0,
                                      part=_text_part("", [])))  # fmt: skip
        current.text += text
        current.logprobs += logprobs
        events.append(self._event("response.output_text.delta", item_id=current.item["id"],
                                  output_index=current.output_index, content_index=0, delta=text,
                                  logprobs=logprobs))  # fmt: skip
        return events

    def _call(self, index: int, arguments: str, call_id: str | None, name: str | None) -> list[Event]:
        events: list[Event] = []
        current = self._calls.get(index)
        if current is None:
            events += self._close()
            item = _function_call(_new_id("fc"), "in_progress", call_id or _new_id("call"), name or "", "")
            current = self._open = self._calls[index] = _OpenItem(len(self._output), item)
            self._output.append(item)
            events.append(self._event("response.output_item.added", output_index=current.output_index,
                                      item=dict(item)))  # fmt: skip
        if arguments:
            current.text += arguments
            events.append(self._event("response.function_call_arguments.delta", item_id=current.item["id"],
                                      output_index=current.output_index, delta=arguments))  # fmt: skip
        return events

    def _close(self) -> list[Event]:
        """Finish the item being streamed, if any: its `.done` events."""
        current, self._open = self._open, None
        if current is None:
            return []
        item, events = current.item, []
        if item["type"] == "message":
            item["status"] = "incomplete" if self._finish_reason in _INCOMPLETE else "completed"
            part = _text_part(current.text, current.logprobs)
            item["content"] = [part]
            common = {"item_id": item["id"], "output_index": current.output_index, "content_index": 0}
            events.append(self._event("response.output_text.done", **common, text=current.text,
                                      logprobs=current.logprobs))  # fmt: skip
            events.append(self._event("response.content_part.done", **common, part=part))
        else:
            item.update(status="completed", arguments=current.text)
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=current.output_index, name=item["name"],
                                      arguments=current.text))  # fmt: skip
        events.append(self._event("response.output_item.done", output_index=current.output_index, item=item))
        return events

    def finish(self, usage: Usage | None) -> list[Event]:
        """The end of the stream: open items closed, then `response.completed` (or `.incomplete`) with usage."""
        events = self._close()
        if not self._output:  # nothing was generated: still one (empty) message, as the non-streaming answer has
            events += self._text("", []) + self._close()
        response = self.shape.response("completed", self._output, usage, self._finish_reason)
        return [*events, self._event(f"response.{response['status']}", response=response)]

    def failed(self, error: dict[str, Any]) -> list[Event]:
        """After a failure once the stream began: `response.failed` with the error's code and message."""
        response = self.shape.response("failed", self._output)
        response["error"] = {"code": error.get("code"), "message": error.get("message")}
        return [self._event("response.failed", response=response)]
