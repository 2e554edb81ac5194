"""The wire codec's round trips: what the API defines survives a forwarding gateway.

A request parsed from a client's body (`protocol.chat.parse_chat`), written on to another server
(`protocol.forward.request_body`) and parsed there again is the same request; an answer or a stream chunk
rendered by a server (`protocol.render`) and read back by the gateway (`protocol.forward`) is the same result.
Everything goes through JSON text, as on the wire.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llamafoundry.protocol.chat import parse_chat
from llamafoundry.protocol.forward import deltas_from_chunk, request_body, result_from_body
from llamafoundry.protocol.render import ChunkRenderer, completion_body
from llamafoundry.service.types import (
    ChatChoice,
    ChatDelta,
    ChatRequest,
    ChatResult,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

# Message text without control-token text (`<|eot_id|>` is broken up on the way out, on purpose: forward.py).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="<"), max_size=40)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)


def wire(value: Any) -> Any:
    return json.loads(json.dumps(value))


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    roles = st.sampled_from(["system", "user", "assistant"])
    messages = draw(st.lists(st.fixed_dictionaries({"role": roles, "content": TEXT}), min_size=1, max_size=4))
    body: dict[str, Any] = {"messages": messages}
    optional = {
        "max_tokens": st.integers(1, 512),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0.01, 1),
        "presence_penalty": st.floats(-2, 2),
        "frequency_penalty": st.floats(-2, 2),
        "seed": st.integers(0, 2**62),
        "stop": st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
        "n": st.integers(1, 4),
        "ignore_eos": st.booleans(),
        "stop_token_ids": st.lists(st.integers(0, 128_000), max_size=3),
        "skip_special_tokens": st.booleans(),
        "top_k": st.integers(-1, 100),
        "min_p": st.floats(0, 1),
        "repetition_penalty": st.floats(0.01, 2),
        "logit_bias": st.dictionaries(st.integers(0, 128_000).map(str), st.floats(-100, 100), max_size=3),
        "stream": st.booleans(),
        "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    if draw(st.booleans()):
        body["logprobs"] = True
        body["top_logprobs"] = draw(st.integers(0, 5))
    if "n" in body and draw(st.booleans()):
        body["best_of"] = body["n"] + draw(st.integers(0, 2))
    if draw(st.booleans()):
        names = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
        parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        body["tools"] = [{"type": "function", "function": {"name": n, "parameters": parameters}} for n in names]
        named = {"type": "function", "function": {"name": draw(st.sampled_from(names))}}
        body["tool_choice"] = draw(st.sampled_from(["auto", "none", "required", named]))
    return body


def parse(body: dict[str, Any], headers: dict[str, str]) -> ChatRequest:
    return parse_chat(wire(body), headers.get("extra-parameters", "error"))


@settings(max_examples=300, deadline=None)
@given(chat_bodies())
def test_a_request_forwarded_is_the_request_received(body: dict[str, Any]) -> None:
    received = parse(body, {"extra-parameters": "pass-through"})
    forwarded_body, headers = request_body(received, "upstream-model")
    assert forwarded_body["model"] == "upstream-model"
    assert parse(forwarded_body, headers) == received


@st.composite
def logprob_lists(draw: st.DrawFn) -> list[TokenLogprob] | None:
    if draw(st.booleans()):
        return None
    token = st.text(max_size=6)
    logprob = st.floats(-50, 0)

    def top(t: str, lp: float) -> TopLogprob:
        return TopLogprob(t, lp, list(t.encode()))

    items = []
    for _ in range(draw(st.integers(0, 3))):
        t, lp = draw(token), draw(logprob)
        tops = [top(draw(token), draw(logprob)) for _ in range(draw(st.integers(0, 2)))]
        items.append(TokenLogprob(t, lp, list(t.encode()), tops))
    return items


@st.composite
def results(draw: st.DrawFn) -> ChatResult:
    choices = []
    for index in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            calls = [ToolCall(f"call_{index}_{i}", draw(NAME), json.dumps({"city": draw(TEXT)})) for i in range(2)]
            choices.append(ChatChoice(index, "", "tool_calls", draw(logprob_lists()), calls))
        else:
            reason = draw(st.sampled_from(["stop", "length"]))
            choices.append(ChatChoice(index, draw(st.text(max_size=40)), reason, draw(logprob_lists())))
    return ChatResult(choices, Usage(draw(st.integers(0, 10_000)), draw(st.integers(0, 10_000))))


@settings(max_examples=300, deadline=None)
@given(results())
def test_an_answer_read_back_is_the_answer_rendered(result: ChatResult) -> None:
    assert result_from_body(wire(completion_body(result, "m"))) == result


@st.composite
def deltas(draw: st.DrawFn) -> ChatDelta:
    calls = None
    if draw(st.booleans()):
        first = draw(st.booleans())
        calls = [
            ToolCallDelta(i, draw(st.text(max_size=10)), f"call_{i}" if first else None, draw(NAME) if first else None)
            for i in range(draw(st.integers(1, 2)))
        ]
    reason = draw(st.sampled_from([None, "stop", "length", "tool_calls"]))
    return ChatDelta(draw(st.integers(0, 3)), draw(st.text(max_size=20)), reason, draw(logprob_lists()), calls)


@settings(max_examples=300, deadline=None)
@given(deltas())
def test_a_chunk_read_back_is_the_delta_rendered(delta: ChatDelta) -> None:
    assert deltas_from_chunk(wire(ChunkRenderer("m").delta(delta))) == [delta]
