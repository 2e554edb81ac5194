"""Tool calling and structured output through the real `azure-ai-inference` SDK against a real server process.

The tests follow the SDK's tool samples (`sample_chat_completions_with_tools.py`,
`sample_chat_completions_streaming_with_tools.py`): a flight-information function, the call, the function's
result sent back as a tool message, and the model's next answer. The model has random weights, so only
constrained decoding (a named or required tool_choice, a JSON response_format) makes its output a call or JSON:
those outputs must always parse and validate against their schemas. Every case runs on the bare route and through
`/deployments/<name>` of a local replica deployment and of an upstream deployment (`target`, tests/api/targets.py).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from azure.ai.inference.models import (
    AssistantMessage,
    ChatCompletionsNamedToolChoice,
    ChatCompletionsNamedToolChoiceFunction,
    ChatCompletionsToolCall,
    ChatCompletionsToolChoicePreset,
    ChatCompletionsToolDefinition,
    FunctionCall,
    FunctionDefinition,
    JsonSchemaFormat,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from azure.core.exceptions import HttpResponseError

from tests.api.targets import Target
from tests.api.test_e2e_azure_sdk import make_client

pytestmark = pytest.mark.slow

FLIGHT_PARAMETERS = {
    "type": "object",
    "properties": {
        "origin_city": {"type": "string", "description": "The name of the city where the flight originates"},
        "destination_city": {"type": "string", "description": "The flight destination city"},
    },
    "required": ["origin_city", "destination_city"],
}
FLIGHT_INFO = ChatCompletionsToolDefinition(
    function=FunctionDefinition(
        name="get_flight_info",
        description="Returns information about the next flight between two cities.",
        parameters=FLIGHT_PARAMETERS,
    )
)
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
WEATHER = ChatCompletionsToolDefinition(
    function=FunctionDefinition(name="get_weather", description="Current weather.", parameters=WEATHER_PARAMETERS)
)
SCHEMAS = {"get_flight_info": FLIGHT_PARAMETERS, "get_weather": WEATHER_PARAMETERS}
FORCE_FLIGHT = ChatCompletionsNamedToolChoice(function=ChatCompletionsNamedToolChoiceFunction(name="get_flight_info"))
LIMITS: dict[str, Any] = {"max_tokens": 60, "seed": 7}


def get_flight_info(origin_city: str, destination_city: str) -> str:
    return json.dumps({"airline": "Delta", "flight_number": "DL123", "from": origin_city, "to": destination_city})


def question() -> list[Any]:
    return [
        SystemMessage("You an assistant that helps users find flight information."),
        UserMessage("What is the next flights from Seattle to Miami?"),
    ]


def test_a_named_tool_choice_returns_a_call_that_validates_then_the_tool_result_round_trips(target: Target) -> None:
    messages = question()
    with make_client(target) as client:
        response = client.complete(messages=messages, tools=[FLIGHT_INFO], tool_choice=FORCE_FLIGHT, **LIMITS)
        choice = response.choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_flight_info"
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, FLIGHT_PARAMETERS)

        messages.append(AssistantMessage(tool_calls=[call]))
        messages.append(ToolMessage(get_flight_info(**arguments), tool_call_id=call.id))
        answer = client.complete(messages=messages, tools=[FLIGHT_INFO], max_tokens=16, seed=7)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert answer.usage.prompt_tokens > response.usage.prompt_tokens  # the call and its result are in the prompt


def test_streamed_tool_call_deltas_read_the_way_the_sdk_sample_reads_them(target: Target) -> None:
    messages = question()
    with make_client(target) as client:
        response = client.complete(
            messages=messages, tools=[FLIGHT_INFO], tool_choice=FORCE_FLIGHT, stream=True, **LIMITS
        )
        tool_call_id, function_name, function_args = "", "", ""
        updates = list(response)
        for update in updates:  # the sample's loop, verbatim in substance
            if update.choices[0].delta.tool_calls is not None:
                if update.choices[0].delta.tool_calls[0].function.name is not None:
                    function_name = update.choices[0].delta.tool_calls[0].function.name
                if update.choices[0].delta.tool_calls[0].id is not None:
                    tool_call_id = update.choices[0].delta.tool_calls[0].id
                function_args += update.choices[0].delta.tool_calls[0].function.arguments or ""
        assert updates[-1].choices[0].finish_reason == "tool_calls" and updates[-1].usage is not None
        assert [u.choices[0].finish_reason for u in updates[:-1]] == [None] * (len(updates) - 1)
        assert function_name == "get_flight_info" and tool_call_id.startswith("call_")
        assert sum(1 for u in updates if u.choices[0].delta.tool_calls) >= 3  # arguments stream as they are made
        arguments = json.loads(function_args)
        jsonschema.validate(arguments, FLIGHT_PARAMETERS)

        messages.append(
            AssistantMessage(
                tool_calls=[
                    ChatCompletionsToolCall(
                        id=tool_call_id, function=FunctionCall(name=function_name, arguments=function_args)
                    )
                ]
            )
        )
        messages.append(ToolMessage(get_flight_info(**arguments), tool_call_id=tool_call_id))
        answer = client.complete(messages=messages, tools=[FLIGHT_INFO], stream=True, max_tokens=16, seed=7)
        finals = [u.choices[0].finish_reason for u in answer if u.choices and u.choices[0].finish_reason]
    assert finals and finals[-1] in ("stop", "length", "tool_calls")


def test_required_tool_choice_gives_every_choice_a_valid_call(target: Target) -> None:
    with make_client(target) as client:
        response = client.complete(
            messages=question(),
            tools=[FLIGHT_INFO, WEATHER],
            tool_choice=ChatCompletionsToolChoicePreset.REQUIRED,
            temperature=1.0,
            model_extras={"n": 3},
            **LIMITS,
        )
    assert len(response.choices) == 3
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_tool_choice_none_answers_in_text(target: Target) -> None:
    with make_client(target) as client:
        response = client.complete(
            messages=question(), tools=[FLIGHT_INFO], tool_choice=ChatCompletionsToolChoicePreset.NONE, **LIMITS
        )
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    assert isinstance(choice.message.content, str)


def test_json_object_content_always_parses(target: Target) -> None:
    with make_client(target) as client:
        response = client.complete(
            messages=[UserMessage("Describe Paris as JSON.")],
            response_format="json_object",
            temperature=1.0,
            model_extras={"n": 2},
            **LIMITS,
        )
    for choice in response.choices:
        assert choice.finish_reason == "stop"
        assert isinstance(json.loads(choice.message.content), dict)


CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "country": {"type": "string"},
        "population": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["old", "big", "coastal"]}, "maxItems": 3},
        "capital": {"type": ["boolean", "null"]},
    },
    "required": ["name", "country", "population"],
    "additionalProperties": False,
}


def test_streamed_json_schema_content_validates(target: Target) -> None:
    fmt = JsonSchemaFormat(name="city", schema=CITY, strict=True)
    with make_client(target) as client:
        updates = list(
            client.complete(
                messages=[UserMessage("Describe Paris.")],
                response_format=fmt,
                stream=True,
                temperature=0.9,
                top_p=0.95,
                **LIMITS,
            )
        )
    content = "".join(u.choices[0].delta.content or "" for u in updates if u.choices)
    assert updates[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(content), CITY)


def test_a_schema_keyword_the_grammar_cannot_enforce_is_422_naming_it(target: Target) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "not": {"const": 3}}}}
    fmt = JsonSchemaFormat(name="n", schema=schema)
    with make_client(target) as client, pytest.raises(HttpResponseError) as caught:
        client.complete(messages=[UserMessage("Pick a number.")], response_format=fmt)
    assert caught.value.status_code == 422 and "'not'" in caught.value.error.message
    assert caught.value.error.code == "parameter_not_supported"
