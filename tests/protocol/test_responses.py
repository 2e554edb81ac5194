"""The Responses API's body -> ChatRequest, and a result or a stream -> the response object and its events."""

from __future__ import annotations

from typing import Any

import pytest

from llamafoundry.protocol.errors import ApiError
from llamafoundry.protocol.responses import parse_response
from llamafoundry.protocol.responses_render import ResponseEvents, ResponseShape, response_body
from llamafoundry.service.types import ChatChoice, ChatDelta, ChatResult, ToolCall, ToolCallDelta, Usage

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def refused(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_response(body, "error")
    return caught.value


def test_text_input_and_instructions() -> None:
    request = parse_response({"input": "Hi", "instructions": "Be brief", "max_output_tokens": 9}, "error").request
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief"), ("user", "Hi")]
    assert request.options.max_tokens == 9


def test_items_become_the_conversation_a_tool_loop_sends() -> None:
    body = {
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}", "id": "fc_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}, "verbosity": "low"},
        "store": True, "metadata": {"a": "b"}, "reasoning": {"effort": "low"}, "include": [], "truncation": "auto",
    }  # fmt: skip
    request = parse_response(body, "error").request
    roles = [(m.role, m.content, m.tool_call_id) for m in request.messages]
    assert roles == [("system", "Use tools.", None), ("user", "Weather?", None), ("assistant", None, None),
                     ("tool", "sunny", "call_1"), ("assistant", "It is sunny.", None)]  # fmt: skip
    assert request.messages[2].tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ]
    function = {"name": "get_weather", "parameters": TOOL["parameters"]}
    assert request.tools == [{"type": "function", "function": function}]
    assert request.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert request.response_format is not None and request.response_format["type"] == "json_schema"


@pytest.mark.parametrize("field", ["previous_response_id", "conversation", "prompt"])
def test_stateful_fields_are_a_clear_400(field: str) -> None:
    error = refused({"input": "Hi", field: "resp_123"})
    assert (error.status, error.param) == (400, field) and "keeps no responses" in error.message


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "input"),
        ({"input": "Hi", "temperature": 3}, 400, "temperature"),
        ({"input": "Hi", "max_output_tokens": 0}, 400, "max_output_tokens"),
        ({"input": "Hi", "bogus": 1}, 400, "bogus"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, 400, "input[0].call_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input[0]"),
        ({"input": [{"type": "web_search_call"}]}, 422, "input[0].type"),
        ({"input": "Hi", "tools": [{"type": "web_search"}]}, 422, "tools[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, 422,
         "input[0].content[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:x"}]}]}, 422,
         "input[0].content[0]"),
    ],
)  # fmt: skip
def test_errors_name_the_field_as_the_responses_api_does(body: dict[str, Any], status: int, param: str) -> None:
    error = refused(body)
    assert (error.status, error.param) == (status, param), error.message


def test_an_error_in_a_message_names_its_input_item() -> None:
    body = {"instructions": "Be brief", "input": [{"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}  # fmt: skip
    error = refused(body)
    assert (error.status, error.param) == (422, "input[1].content[0]")


def shape() -> ResponseShape:
    return ResponseShape("tiny", parse_response({"input": "Hi", "tools": [TOOL]}, "error").echo)


def test_a_result_is_a_response_object() -> None:
    text = response_body(ChatResult([ChatChoice(0, "Hello", "stop")], Usage(5, 2)), shape())
    assert (text["object"], text["status"], text["incomplete_details"]) == ("response", "completed", None)
    assert text["output"][0]["content"][0]["text"] == "Hello" and text["usage"]["total_tokens"] == 7
    cut = response_body(ChatResult([ChatChoice(0, "Hel", "length")], Usage(5, 2)), shape())
    assert (cut["status"], cut["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    call = ToolCall("call_9", "get_weather", '{"city": "Oslo"}')
    called = response_body(ChatResult([ChatChoice(0, "", "tool_calls", tool_calls=[call])], Usage(5, 9)), shape())
    (item,) = called["output"]
    assert (item["type"], item["call_id"], item["name"], item["arguments"]) == (
        "function_call", "call_9", "get_weather", '{"city": "Oslo"}'
    )  # fmt: skip


def test_stream_events_come_in_the_order_the_sdks_read_them() -> None:
    events = ResponseEvents(shape())
    out = events.start()
    out += events.delta(ChatDelta(0, "Hel"))
    out += events.delta(ChatDelta(0, "lo", finish_reason=None))
    out += events.delta(ChatDelta(0, "", tool_calls=[ToolCallDelta(0, "", id="call_1", name="get_weather")]))
    out += events.delta(ChatDelta(0, "", finish_reason="tool_calls", tool_calls=[ToolCallDelta(0, "{}")]))
    out += events.finish(Usage(3, 4))
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    final = out[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello" and final["output"][1]["arguments"] == "{}"
    assert final["usage"]["output_tokens"] == 4 and final["status"] == "completed"


def test_a_stream_cut_by_max_output_tokens_ends_incomplete() -> None:
    events = ResponseEvents(shape())
    out = events.start() + events.delta(ChatDelta(0, "Hi", finish_reason="length")) + events.finish(Usage(1, 1))
    assert out[-1]["type"] == "response.incomplete"
    assert out[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
