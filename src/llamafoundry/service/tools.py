"""Tool calling for Llama 3.x: what the prompt shows, and model output -> tool calls (the grammar of a forced call
is `structured.py`'s).

The prompt is the model's own chat template with the request's `tools` (Meta's Llama 3.1/3.2/3.3 templates ask
for a JSON call, `{"name": ..., "parameters": {...}}`). Output is read in every form Llama 3 writes calls:

- JSON calls (Llama 3.1/3.3, and 3.2 under its template), optionally after `<|python_tag|>`, several separated
  by `;`: `{"name": "get_weather", "parameters": {"city": "Paris"}}`;
- pythonic calls (Llama 3.2 1B/3B): `[get_weather(city="Paris"), get_time(zone="CET")]`;
- built-in tool calls (Llama 3.1/3.3): `<|python_tag|>brave_search.call(query="...")`, and raw code after
  `<|python_tag|>` for `code_interpreter` (visible only with `skip_special_tokens: false`).

A call is only taken when it names a function of the request; anything else stays plain content.
`tool_choice: "required"` or a named function constrains decoding to a JSON call whose `parameters` follow the
function's schema, so the call always parses and validates.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

from llamafoundry.service.types import (
    CONTENT_FILTER,
    ChatChoice,
    ChatDelta,
    ChatRequest,
    ChatStream,
    ChatUpdate,
    ToolCall,
    ToolCallDelta,
)

PYTHON_TAG = "<|python_tag|>"
END_TAGS = ("<|eom_id|>", "<|eot_id|>")
BUILTIN_TOOLS = frozenset({"brave_search", "wolfram_alpha", "code_interpreter"})
# how a grammar-forced call starts: {"name": "<function>", "parameters": (the arguments follow)
_FORCED_CALL_START = re.compile(r'\s*\{\s*"name"\s*:\s*"([^"\\]+)"\s*,\s*"parameters"\s*:\s*')


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


# ---- the request: prompt tools, parsing, grammar ---------------------------------------------------------


def function_names(request: ChatRequest) -> frozenset[str]:
    """Names of the functions the model may call in this request (none with `tool_choice: "none"`)."""
    if not request.tools or request.tool_choice == "none":
        return frozenset()
    return frozenset(t["function"]["name"] for t in request.tools if isinstance(t.get("function"), dict))


def prompt_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """The tool definitions the prompt shows: none with `tool_choice: "none"`, so the model answers in text."""
    return request.tools if function_names(request) else None


def forced_function(request: ChatRequest) -> str | None:
    """`"*"` for `tool_choice: "required"`, the function's name for a named tool_choice, else None."""
    choice = request.tool_choice
    if not function_names(request):
        return None
    if choice == "required":
        return "*"
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name"))
    return None


# ---- parsing ---------------------------------------------------------------------------------------------


def parse_tool_calls(text: str, names: Collection[str]) -> list[ToolCall] | None:
    """The tool calls in a model's answer, or None when it is not (only) calls of functions in `names`."""
    body = text.strip()
    tagged = body.startswith(PYTHON_TAG)
    body = body.removeprefix(PYTHON_TAG).strip()
    for tag in END_TAGS:
        body = body.removesuffix(tag).strip()
    if not body or not names:
        return None
    calls = _json_calls(body) or _pythonic_calls(body)
    if calls is None and tagged and "code_interpreter" in names:
        calls = [("code_interpreter", {"code": body})]
    if not calls or any(name not in names for name, _ in calls):
        return None
    try:
        return [ToolCall(new_call_id(), name, json.dumps(args, ensure_ascii=False)) for name, args in calls]
    except (TypeError, ValueError):  # a pythonic literal JSON cannot hold (a set, bytes)
        return None


def _json_calls(body: str) -> list[tuple[str, dict[str, Any]]] | None:
    """`{"name": f, "parameters": {...}}` objects, alone, in a list, or separated by `;` (Llama 3.1 does that)."""
    if body[0] not in "{[":
        return None
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    try:
        while pos < len(body):
            value, pos = decoder.raw_decode(body, pos)
            values.extend(value if isinstance(value, list) else [value])
            while pos < len(body) and body[pos] in " \t\r\n;,":
                pos += 1
    except ValueError:
        return None
    calls = [_json_call(v) for v in values]
    return None if not calls or any(c is None for c in calls) else [c for c in calls if c is not None]


def _json_call(value: Any) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if not isinstance(name, str) and isinstance(value.get("function"), dict):
        return _json_call(value["function"])  # an OpenAI-shaped call echoed back
    args = value.get("parameters", value.get("arguments", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    return name, args


def _pythonic_calls(body: str) -> list[tuple[str, dict[str, Any]]] | None:
    """`[f(a=1, b="x"), g()]`, a single `f(a=1)`, or a built-in `brave_search.call(query="x")`."""
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    nodes = tree.elts if isinstance(tree, ast.List) else [tree]
    calls = [_pythonic_call(node) for node in nodes]
    return None if not calls or any(c is None for c in calls) else [c for c in calls if c is not None]


def _pythonic_call(node: ast.expr) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(node, ast.Call) or node.args:
        return None
    func = node.func
    if isinstance(func, ast.Name):
        name = func.id
    elif isinstance(func, ast.Attribute) and func.attr == "call" and isinstance(func.value, ast.Name):
        name = func.value.id  # brave_search.call(...)
    else:
        return None
    args: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            return None
        try:
            args[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None
    return name, args


def with_tool_calls(choice: ChatChoice, names: Collection[str]) -> ChatChoice:
    """A finished choice with its text read as tool calls when it is one (finish_reason `tool_calls`)."""
    if not names or choice.finish_reason == CONTENT_FILTER:
        return choice
    calls = parse_tool_calls(choice.text, names)
    if calls is None:
        return choice
    return dataclasses.replace(choice, text="", finish_reason="tool_calls", tool_calls=calls)


# ---- streaming -------------------------------------------------------------------------------------------


@dataclass
class _Choice:
    """One choice's text held back while it may still be a tool call."""

    held: str = ""
    logprobs: list[Any] | None = None
    is_content: bool = False
    call_id: str | None = None  # forced calls: set once the name is out
    args_start: int = 0  # where the arguments begin in `held`
    num_sent: int = 0  # argument characters already sent


class ToolCallStream:
    """A ChatStream whose choices are read as tool calls: satisfies `service.types.ChatStream`.

    A choice's text streams as content as soon as it cannot be a call (it does not start like one). While it
    may be one it is held back; at its end it becomes tool-call deltas (the first one of each call with its
    id and name, then its arguments) and finish_reason `tool_calls`, or, if it does not parse, the held text.

    With `forced` (a grammar makes the output one JSON call), the call streams as it is generated: its id and
    name as soon as the name is complete, then the arguments piece by piece, holding back only from the last
    `}` on (it may be the call's own closing brace).
    """

    def __init__(self, stream: ChatStream, names: Collection[str], forced: bool = False) -> None:
        self._stream = stream
        self._names = frozenset(names)
        self._forced = forced
        self._choices: dict[int, _Choice] = {}

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._updates()

    def abort(self) -> None:
        self._stream.abort()

    async def _updates(self) -> AsyncIterator[ChatUpdate]:
        async for update in self._stream:
            deltas = [out for delta in update.deltas for out in self._feed(delta)]
            yield ChatUpdate(deltas=deltas, usage=update.usage, finished=update.finished)

    def _feed(self, delta: ChatDelta) -> list[ChatDelta]:
        choice = self._choices.setdefault(delta.index, _Choice())
        if choice.is_content:
            return [delta]
        choice.held += delta.text
        if delta.logprobs:
            choice.logprobs = (choice.logprobs or []) + delta.logprobs
        if self._forced:
            started = self._start_forced(delta.index, choice)
            if choice.call_id is not None:
                return started + self._forced_arguments(delta, choice)
        if delta.finish_reason is None:
            if self._may_be_call(choice.held):
                return []
            choice.is_content = True
            return [ChatDelta(delta.index, choice.held, None, choice.logprobs)]
        calls = parse_tool_calls(choice.held, self._names) if delta.finish_reason != CONTENT_FILTER else None
        if calls is None:
            return [ChatDelta(delta.index, choice.held, delta.finish_reason, choice.logprobs)]
        return tool_call_deltas(delta.index, calls, choice.logprobs)

    def _start_forced(self, index: int, choice: _Choice) -> list[ChatDelta]:
        if choice.call_id is not None:
            return []
        match = _FORCED_CALL_START.match(choice.held)
        if match is None or match.group(1) not in self._names:
            return []
        choice.call_id, choice.args_start = new_call_id(), match.end()
        return [ChatDelta(index, "", tool_calls=[ToolCallDelta(0, "", choice.call_id, match.group(1))])]

    def _forced_arguments(self, delta: ChatDelta, choice: _Choice) -> list[ChatDelta]:
        # from the arguments' opening brace: the space after "parameters": is no part of them (a non-streamed
        # call's arguments start with "{" too)
        body = choice.held[choice.args_start :].lstrip()
        reason = delta.finish_reason
        if reason is None:
            end = body.rfind("}")
            upto = end if end >= 0 else len(body)
        else:
            body = body.rstrip()
            if reason == "stop" and body.endswith("}"):  # the call's own closing brace
                body, reason = body[:-1].rstrip(), "tool_calls"
            upto = len(body)
        out = []
        if upto > choice.num_sent:
            out.append(ChatDelta(delta.index, "", tool_calls=[ToolCallDelta(0, body[choice.num_sent : upto])]))
            choice.num_sent = upto
        if reason is not None:
            out.append(ChatDelta(delta.index, "", reason, choice.logprobs))
        return out

    def _may_be_call(self, text: str) -> bool:
        start = text.lstrip()
        if not start:
            return True
        openings = ["{", "[", PYTHON_TAG, *(f"{n}(" for n in self._names), *(f"{n}.call(" for n in BUILTIN_TOOLS)]
        return any(start.startswith(o) or o.startswith(start) for o in openings)


def tool_call_deltas(index: int, calls: list[ToolCall], logprobs: list[Any] | None = None) -> list[ChatDelta]:
    """The streamed form of a choice's calls: per call its id and name (arguments ""), then its arguments;
    the last delta finishes the choice with `tool_calls`."""
    deltas = []
    for i, call in enumerate(calls):
        deltas.append(ChatDelta(index, "", tool_calls=[ToolCallDelta(i, "", call.id, call.name)]))
        deltas.append(ChatDelta(index, "", tool_calls=[ToolCallDelta(i, call.arguments)]))
    deltas.append(ChatDelta(index, "", "tool_calls", logprobs))
    return deltas
