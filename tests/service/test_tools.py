"""Tool calling in the service: model output -> tool calls, the streamed form, and the grammar of forced calls.

The outputs below are written in the formats Meta's Llama 3.1/3.2/3.3 prompt formats and chat templates use
(`../shared/models/chat-templates/`), as the models write them (with `skip_special_tokens: false` where a
special token is part of the call).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import llguidance
import pytest

from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.errors import InvalidSamplingParams
from llamafoundry.service import structured, tools
from llamafoundry.service.structured import SchemaNotSupportedError
from llamafoundry.service.types import ChatChoice, ChatDelta, ChatMessage, ChatRequest, ChatUpdate, Usage

NAMES = {"get_weather", "get_current_conditions", "brave_search", "wolfram_alpha", "code_interpreter"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "metric": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}

RECORDED = [
    # Llama 3.1 8B, custom tool in the user message (the template's JSON format)
    (
        '{"name": "get_current_conditions", "parameters": {"location": "San Francisco, CA", "unit": "Fahrenheit"}}',
        [("get_current_conditions", {"location": "San Francisco, CA", "unit": "Fahrenheit"})],
    ),
    # Llama 3.1 70B: the same call after <|python_tag|>, ended by <|eom_id|> (ipython environment)
    (
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
        [("get_weather", {"city": "Paris"})],
    ),
    # Llama 3.3 70B: two calls in one answer, separated by a semicolon
    (
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_weather", "parameters": {"city": '
        '"Rome"}}',
        [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})],
    ),
    # Llama 3.2 3B, pythonic list of calls
    (
        "[get_weather(city='San Francisco', metric='celsius'), get_weather(city='Seattle', metric='celsius')]",
        [
            ("get_weather", {"city": "San Francisco", "metric": "celsius"}),
            ("get_weather", {"city": "Seattle", "metric": "celsius"}),
        ],
    ),
    # Llama 3.2 1B, one pythonic call with numbers, booleans and None
    (
        '[get_weather(city="Paris", days=3, hourly=True, zone=None)]',
        [("get_weather", {"city": "Paris", "days": 3, "hourly": True, "zone": None})],
    ),
    # Llama 3.1 built-in tools
    (
        '<|python_tag|>brave_search.call(query="current weather in Menlo Park, California")<|eom_id|>',
        [("brave_search", {"query": "current weather in Menlo Park, California"})],
    ),
    (
        'wolfram_alpha.call(query="solve x^3 - 4x^2 + 6x - 24 = 0")',
        [("wolfram_alpha", {"query": "solve x^3 - 4x^2 + 6x - 24 = 0"})],
    ),
    (
        "<|python_tag|>import math\nprint(math.sqrt(2))<|eom_id|>",
        [("code_interpreter", {"code": "import math\nprint(math.sqrt(2))"})],
    ),
    # "arguments" instead of "parameters", as Llama 3.2 sometimes writes, with arguments as a JSON string
    ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}', [("get_weather", {"city": "Oslo"})]),
]

NOT_CALLS = [
    "The weather in Paris is sunny.",
    '{"name": "get_weather", "parameters": {"city": "Paris"',  # cut by max_tokens
    '{"name": "book_flight", "parameters": {"to": "Rome"}}',  # not a function of the request
    'I will call get_weather(city="Paris") for you.',
    "[get_weather(city=unknown_variable)]",  # not a literal
    "[get_weather('Paris')]",  # positional: Meta's format names every argument
    '{"city": "Paris"}',  # JSON, but not a call
    "[1, 2, 3]",
    "print('hello')",  # code without <|python_tag|> is just text
    "",
]


@pytest.mark.parametrize(("text", "expected"), RECORDED)
def test_recorded_llama_calls_parse(text: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    calls = tools.parse_tool_calls(text, NAMES)
    assert calls is not None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == expected
    assert all(c.id.startswith("call_") for c in calls) and len({c.id for c in calls}) == len(calls)


@pytest.mark.parametrize("text", NOT_CALLS)
def test_anything_else_is_not_a_call(text: str) -> None:
    assert tools.parse_tool_calls(text, NAMES) is None


def test_no_functions_means_no_calls() -> None:
    assert tools.parse_tool_calls('{"name": "get_weather", "parameters": {}}', set()) is None


def test_a_finished_choice_becomes_tool_calls_or_stays_content() -> None:
    call = tools.with_tool_calls(
        ChatChoice(0, '{"name": "get_weather", "parameters": {"city": "Oslo"}}', "stop"), NAMES
    )
    assert call.finish_reason == "tool_calls" and call.text == "" and call.tool_calls is not None
    assert json.loads(call.tool_calls[0].arguments) == {"city": "Oslo"}
    text = tools.with_tool_calls(ChatChoice(0, '{"name": "get_weather", "parameters"', "length"), NAMES)
    assert (text.finish_reason, text.text, text.tool_calls) == ("length", '{"name": "get_weather", "parameters"', None)


def request_with(**kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage("user", "Weather in Paris?")], tools=[WEATHER_TOOL], **kwargs)


def test_tool_choice_decides_what_the_prompt_shows_and_what_is_parsed() -> None:
    assert tools.prompt_tools(request_with()) == [WEATHER_TOOL]
    assert tools.function_names(request_with(tool_choice="auto")) == {"get_weather"}
    assert tools.prompt_tools(request_with(tool_choice="none")) is None
    assert tools.function_names(request_with(tool_choice="none")) == frozenset()


def matches(grammar: str, text: str) -> bool:
    """Whether llguidance lets `grammar` write exactly `text` (tokens of a byte-level vocabulary: one per byte)."""
    matcher = llguidance.LLMatcher(BYTES, grammar, log_level=0)
    return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()


BYTES = llguidance.LLTokenizer("byte")


@pytest.mark.parametrize(
    ("tool_choice", "forced"),
    [("required", "*"), ({"type": "function", "function": {"name": "get_weather"}}, "get_weather"), ("auto", None)],
)
def test_required_and_named_tool_choices_get_a_grammar(tool_choice: Any, forced: str | None) -> None:
    request = request_with(tool_choice=tool_choice)
    params = structured.with_grammar(request, SamplingParams())
    assert tools.forced_function(request) == forced
    assert (params.grammar is not None) == (forced is not None)
    if params.grammar is not None:
        assert params.grammar_param == "tool_choice"
        assert matches(params.grammar, '{"name": "get_weather", "parameters": {"city": "Paris"}}')
        assert not matches(params.grammar, '{"name": "get_time", "parameters": {"city": "Paris"}}')
        assert not matches(params.grammar, '{"name": "get_weather", "parameters": {"metric": "celsius"}}')
        # the call's skeleton, {"name": "get_weather", "parameters": {<its required keys>}}, fits the closing window
        assert params.closing_tokens >= 6 + len("get_weather") // 3 + 2


def test_a_response_schema_sets_the_closing_window_to_its_shortest_match() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}  # fmt: skip
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    request = ChatRequest([ChatMessage("user", "Go")], response_format=response_format)
    assert structured.with_grammar(request, SamplingParams()).closing_tokens == 2 + (3 + 2) + (3 + 1)
    plain = structured.with_grammar(ChatRequest([ChatMessage("user", "Go")]), SamplingParams())
    assert plain.closing_tokens == 0  # plain text


def test_a_forced_call_wins_over_response_format() -> None:
    request = request_with(tool_choice="required", response_format={"type": "json_object"})
    assert structured.with_grammar(request, SamplingParams()).grammar_param == "tool_choice"


def test_a_function_schema_the_grammar_cannot_enforce_is_refused_naming_the_tool() -> None:
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}
    request = ChatRequest(messages=[ChatMessage("user", "hi")], tools=[WEATHER_TOOL, bad], tool_choice="required")
    with pytest.raises(SchemaNotSupportedError) as caught:
        structured.with_grammar(request, SamplingParams())
    assert caught.value.param == "tools[1].function.parameters" and caught.value.keyword == "not"


def test_each_function_resolves_its_own_local_refs() -> None:
    """Two functions with a `$defs` entry of the same name: each call's arguments follow its own."""
    def tool(name: str, place: dict[str, Any]) -> dict[str, Any]:
        parameters = {"type": "object", "properties": {"where": {"$ref": "#/$defs/Place"}}, "required": ["where"],
                      "$defs": {"Place": place}}  # fmt: skip
        return {"type": "function", "function": {"name": name, "parameters": parameters}}

    grammar = structured.call_grammar([tool("f", {"enum": ["x"]}), tool("g", {"type": "integer"})])
    assert matches(grammar, '{"name": "f", "parameters": {"where": "x"}}')
    assert matches(grammar, '{"name": "g", "parameters": {"where": 3}}')
    assert not matches(grammar, '{"name": "f", "parameters": {"where": 3}}')


def test_a_forced_call_and_ignore_eos_are_refused_together() -> None:
    with pytest.raises(InvalidSamplingParams) as caught:
        structured.with_grammar(request_with(tool_choice="required"), SamplingParams(ignore_eos=True))
    assert caught.value.param == "ignore_eos" and "tool_choice" in caught.value.message


def test_numeric_bounds_of_a_forced_call_are_enforced() -> None:
    """Pydantic tool schemas carry `minimum`/`maximum` (Field(ge=..)): llama.cpp's grammar could not enforce them,
    so a forced call was decoded without them (or a 422 with strict). The call now keeps to them."""
    parameters = {
        "type": "object",
        "properties": {"days": {"type": "integer", "minimum": 1, "maximum": 14}, "minimum": {"type": "number"}},
        "required": ["days", "minimum"],
    }
    for strict in (False, True):
        tool = {"type": "function", "function": {"name": "forecast", "parameters": parameters, "strict": strict}}
        grammar = structured.call_grammar([tool])
        assert matches(grammar, '{"name": "forecast", "parameters": {"days": 14, "minimum": 0.5}}')
        assert not matches(grammar, '{"name": "forecast", "parameters": {"days": 15, "minimum": 0.5}}')
        assert not matches(grammar, '{"name": "forecast", "parameters": {"days": 0, "minimum": 0.5}}')


# ---- streaming -------------------------------------------------------------------------------------------


class ScriptedStream:
    def __init__(self, pieces: list[list[ChatDelta]]) -> None:
        self.pieces = pieces
        self.aborted = False

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._updates()

    async def _updates(self) -> AsyncIterator[ChatUpdate]:
        for i, deltas in enumerate(self.pieces):
            yield ChatUpdate(deltas, Usage(5, i + 1), finished=i == len(self.pieces) - 1)

    def abort(self) -> None:
        self.aborted = True


def stream_of(texts: list[str], finish: str = "stop", index: int = 0) -> list[list[ChatDelta]]:
    deltas = [[ChatDelta(index, t)] for t in texts]
    deltas[-1][0].finish_reason = finish
    return deltas


def run(pieces: list[list[ChatDelta]]) -> list[ChatDelta]:
    async def main() -> list[ChatDelta]:
        return [d async for u in tools.ToolCallStream(ScriptedStream(pieces), NAMES) for d in u.deltas]

    return asyncio.run(main())


def test_a_streamed_call_becomes_name_then_arguments_then_tool_calls() -> None:
    out = run(stream_of(['{"name": "get_', 'weather", "parameters": ', '{"city": "Paris"}', "}"]))
    assert [d.text for d in out] == ["", "", ""]
    first, args, last = out
    assert first.tool_calls is not None and first.tool_calls[0].name == "get_weather"
    assert first.tool_calls[0].id is not None and first.tool_calls[0].arguments == ""
    assert args.tool_calls is not None and json.loads(args.tool_calls[0].arguments) == {"city": "Paris"}
    assert args.tool_calls[0].id is None and args.tool_calls[0].name is None
    assert last.finish_reason == "tool_calls" and last.tool_calls is None


def test_streamed_text_that_cannot_be_a_call_flows_at_once() -> None:
    out = run(stream_of(["  The", " weather", " is fine."]))
    assert [(d.text, d.finish_reason) for d in out] == [("  The", None), (" weather", None), (" is fine.", "stop")]


def test_held_text_that_does_not_parse_comes_out_as_content() -> None:
    out = run(stream_of(["{", "not json", "}"], finish="length"))
    assert [(d.text, d.finish_reason, d.tool_calls) for d in out] == [("{not json}", "length", None)]


def test_each_choice_is_read_on_its_own() -> None:
    call = stream_of(['[get_weather(city="Oslo")]'], index=0)[0]
    text = stream_of(["Sunny."], index=1)[0]
    out = run([call + text])
    assert [d.finish_reason for d in out if d.index == 0] == [None, None, "tool_calls"]
    assert [(d.text, d.finish_reason) for d in out if d.index == 1] == [("Sunny.", "stop")]


def test_a_forced_call_streams_its_arguments_as_they_are_generated() -> None:
    pieces = stream_of(
        ['{"name": "get_weather", ', '"parameters": {"city": "Pa', 'ris", "metric": "celsius"', "}", "} "]
    )

    async def main() -> list[ChatDelta]:
        stream = tools.ToolCallStream(ScriptedStream(pieces), NAMES, forced=True)
        return [d async for u in stream for d in u.deltas]

    out = asyncio.run(main())
    calls = [d.tool_calls[0] for d in out if d.tool_calls]
    assert calls[0].name == "get_weather" and calls[0].id is not None and calls[0].arguments == ""
    arguments = [c.arguments for c in calls[1:]]
    assert len(arguments) >= 3  # sent while generating, not at the end
    assert json.loads("".join(arguments)) == {"city": "Paris", "metric": "celsius"}
    assert [d.finish_reason for d in out][-1] == "tool_calls"


def test_forced_arguments_start_at_their_brace_as_non_streamed_ones_do() -> None:
    """The space generated after "parameters": came out as the arguments' first character (' {"city"...')."""
    out = run_forced(stream_of(['{"name": "get_weather", "parameters":', ' {"city": "Oslo"', "}}"]))
    arguments = "".join(d.tool_calls[0].arguments for d in out if d.tool_calls)
    assert arguments == '{"city": "Oslo"}' and out[-1].finish_reason == "tool_calls"


def test_a_forced_call_cut_by_the_budget_ends_with_length() -> None:
    out = run_forced(stream_of(['{"name": "get_weather", "parameters": {"city": "Pa'], finish="length"))
    assert out[-1].finish_reason == "length"
    assert "".join(d.tool_calls[0].arguments for d in out if d.tool_calls) == '{"city": "Pa'


def run_forced(pieces: list[list[ChatDelta]]) -> list[ChatDelta]:
    async def main() -> list[ChatDelta]:
        return [d async for u in tools.ToolCallStream(ScriptedStream(pieces), NAMES, forced=True) for d in u.deltas]

    return asyncio.run(main())
