"""Our answers and stream chunks read the way the .NET SDK (`Azure.AI.Inference`) reads them.

No .NET runtime is reachable here, so its deserializers are restated below from their public source
(github.com/Azure/azure-sdk-for-net, sdk/ai/Azure.AI.Inference/src): `ChatCompletions.DeserializeChatCompletions`,
`ChatChoice.DeserializeChatChoice`, `ChatResponseMessage.DeserializeChatResponseMessage`,
`ChatCompletionsToolCall` / `FunctionCall`, `CompletionsUsage.DeserializeCompletionsUsage` (src/Generated) and the
custom streaming reader `StreamingChatCompletionsUpdate.DeserializeStreamingChatCompletionsUpdates` with
`StreamingToolCallUpdate` / `StreamingFunctionToolCallUpdate` (src/Customized). Each check raises where
System.Text.Json would throw: `GetString()` on a value that is neither a string nor null, `GetInt32()`/`GetInt64()`
on anything but an integer in range, `EnumerateArray()`/`EnumerateObject()` on the wrong kind, and the
`ChatRole`/`CompletionsFinishReason` constructors on null. The enums' known values are checked too (an unknown
string would parse, and no C# `switch` over the SDK's constants would match it). docs/api.md lists what is checked.

The answers come from real servers: the server's own model and a deployment (a local replica).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api.conftest import Platform, Server

pytestmark = pytest.mark.slow

ROLES = {"system", "user", "assistant", "tool", "developer"}  # ChatRole's values
FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls"}  # CompletionsFinishReason's values
INT32 = (-(2**31), 2**31 - 1)


class DotNetWouldThrow(AssertionError):
    pass


def get_string(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DotNetWouldThrow(f"{where}: GetString() on {type(value).__name__}")
    return value


def get_int(value: Any, where: str, bits: int = 32) -> int:
    low, high = INT32 if bits == 32 else (-(2**63), 2**63 - 1)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DotNetWouldThrow(f"{where}: GetInt{bits}() on {value!r}")
    return value


def array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise DotNetWouldThrow(f"{where}: EnumerateArray() on {type(value).__name__}")
    return value


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DotNetWouldThrow(f"{where}: EnumerateObject() on {type(value).__name__}")
    return value


def enum_value(value: Any, known: set[str], where: str) -> str:
    text = get_string(value, where)
    if text is None:
        raise DotNetWouldThrow(f"{where}: the extensible enum's constructor throws ArgumentNullException on null")
    assert text in known, f"{where}: {text!r} is none of the SDK's values {sorted(known)}"
    return text


def read_usage(value: Any, where: str, streaming: bool = False) -> None:
    if value is None or (streaming and not isinstance(value, dict)):
        return  # DeserializeCompletionsUsage returns null; the stream reader ignores a non-object
    for name in ("completion_tokens", "prompt_tokens", "total_tokens"):
        assert name in obj(value, where), f"{where}.{name} is missing (it would read as 0)"
        get_int(value[name], f"{where}.{name}")


def read_tool_call(call: Any, where: str) -> None:
    """ChatCompletionsToolCall: the `type` discriminator "function", then id, function.name, function.arguments."""
    call = obj(call, where)
    assert get_string(call.get("type"), f"{where}.type") == "function", f"{where}: an UnknownChatCompletionsToolCall"
    assert get_string(call.get("id"), f"{where}.id"), f"{where}.id is required"
    function = obj(call.get("function"), f"{where}.function")
    assert get_string(function.get("name"), f"{where}.function.name")
    assert get_string(function.get("arguments"), f"{where}.function.arguments") is not None


def read_chat_completions(body: Any) -> None:
    """`DeserializeChatCompletions` and what it calls; `choices`, `usage` and `created` are required fields."""
    body = obj(body, "body")
    get_string(body.get("id"), "id")
    get_string(body.get("model"), "model")
    get_int(body.get("created"), "created", bits=64)  # DateTimeOffset.FromUnixTimeSeconds(GetInt64())
    read_usage(body.get("usage"), "usage")
    assert body.get("usage") is not None, "usage is required (ChatCompletions.Usage)"
    for i, choice in enumerate(array(body.get("choices"), "choices")):
        where = f"choices[{i}]"
        choice = obj(choice, where)
        get_int(choice.get("index"), f"{where}.index")
        if choice.get("finish_reason") is not None:
            enum_value(choice["finish_reason"], FINISH_REASONS, f"{where}.finish_reason")
        message = obj(choice.get("message"), f"{where}.message")
        enum_value(message.get("role"), ROLES, f"{where}.message.role")
        get_string(message.get("content"), f"{where}.message.content")
        if message.get("tool_calls") is not None:
            for j, call in enumerate(array(message["tool_calls"], f"{where}.message.tool_calls")):
                read_tool_call(call, f"{where}.message.tool_calls[{j}]")


def read_stream_chunk(chunk: Any, where: str) -> None:
    """`DeserializeStreamingChatCompletionsUpdates`: the chunk, its choices' deltas and their tool-call updates."""
    chunk = obj(chunk, where)
    get_string(chunk.get("id"), f"{where}.id")
    get_string(chunk.get("model"), f"{where}.model")
    get_int(chunk.get("created"), f"{where}.created", bits=64)
    read_usage(chunk.get("usage"), f"{where}.usage", streaming=True)
    for i, choice in enumerate(array(chunk.get("choices"), f"{where}.choices")):
        at = f"{where}.choices[{i}]"
        choice = obj(choice, at)
        get_int(choice.get("index"), f"{at}.index")
        if choice.get("finish_reason") is not None:
            enum_value(choice["finish_reason"], FINISH_REASONS, f"{at}.finish_reason")
        delta = obj(choice.get("delta"), f"{at}.delta")
        if "role" in delta:  # ChatRole's implicit conversion from string: null throws
            enum_value(delta["role"], ROLES, f"{at}.delta.role")
        get_string(delta.get("name"), f"{at}.delta.name")
        get_string(delta.get("content"), f"{at}.delta.content")
        if "tool_calls" in delta:  # EnumerateArray(): a null list throws here
            for j, update in enumerate(array(delta["tool_calls"], f"{at}.delta.tool_calls")):
                _read_tool_call_update(update, f"{at}.delta.tool_calls[{j}]")


def _read_tool_call_update(update: Any, where: str) -> None:
    update = obj(update, where)
    assert update.get("type") == "function" or "function" in update, f"{where}: read as no update at all (null)"
    get_string(update.get("id"), f"{where}.id")
    get_int(update.get("index"), f"{where}.index")
    function = obj(update.get("function"), f"{where}.function")
    get_string(function.get("name"), f"{where}.function.name")
    get_string(function.get("arguments"), f"{where}.function.arguments")


# ---- the checks restated above refuse what .NET refuses ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"id": "a", "created": 1.5, "model": "m", "choices": [], "usage": {}},
        {"id": "a", "created": 1, "model": "m", "choices": None,
         "usage": {"completion_tokens": 0, "prompt_tokens": 0, "total_tokens": 0}},
        {"id": 7, "created": 1, "model": "m", "choices": [], "usage": None},
    ],
)
def test_the_restated_reader_refuses_what_dotnet_refuses(body: dict[str, Any]) -> None:
    with pytest.raises(DotNetWouldThrow):
        read_chat_completions(body)
    with pytest.raises(DotNetWouldThrow):
        read_stream_chunk({"id": "a", "created": 1, "choices": [{"index": 0, "delta": {"role": None}}]}, "chunk")


# ---- real answers ----------------------------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}}}  # fmt: skip
BODIES = {
    "text": {"max_tokens": 4, "logprobs": True, "top_logprobs": 2, "n": 2},
    "forced_tool_call": {"max_tokens": 40, "tools": [WEATHER],
                         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},  # fmt: skip
    "json": {"max_tokens": 40, "response_format": {"type": "json_object"}},
}


def endpoints(server: Server, platform: Platform) -> list[tuple[str, str]]:
    return [
        (f"{server.url}/chat/completions", server.key),
        (f"{platform.url}/deployments/chat/chat/completions", platform.deployment_key),
        (f"{platform.url}/openai/deployments/chat/chat/completions?api-version=2024-10-21", platform.deployment_key),
    ]


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_answers_deserialize_in_dotnet(server: Server, platform: Platform, kind: str) -> None:
    for url, key in endpoints(server, platform):
        body = {"messages": [{"role": "user", "content": "Weather in Oslo?"}], **BODIES[kind]}
        answer = httpx.post(url, json=body, timeout=120,
                            headers={"api-key": key, "extra-parameters": "pass-through"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        read_chat_completions(answer.json())


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_stream_chunks_deserialize_in_dotnet(server: Server, platform: Platform, kind: str) -> None:
    for url, key in endpoints(server, platform):
        body = {"messages": [{"role": "user", "content": "Weather in Oslo?"}], **BODIES[kind], "stream": True}
        headers = {"api-key": key, "extra-parameters": "pass-through"}
        with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as answer:
            raw = answer.read().decode()
        assert answer.status_code == 200, raw
        assert "\r" not in raw and raw.endswith("data: [DONE]\n\n")  # the SSE reader splits events on blank lines
        events = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
        assert all(block.startswith("data: ") for block in raw.split("\n\n") if block)
        for i, event in enumerate(events[:-1]):
            read_stream_chunk(json.loads(event), f"chunk {i}")

