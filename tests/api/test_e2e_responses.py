"""OpenAI's Responses API with the clients that speak it, unchanged: the `openai` SDK's `responses.create` and
`responses.stream`, and the OpenAI Agents SDK running a tool-calling agent; on `/v1` and Azure's `/openai/v1` and
`/openai/responses`, for the server's own model and for a deployment (a local replica).

The model has random weights: tool calls are forced (`tool_choice`), and an answer that must end before
`max_output_tokens` is constrained to JSON (`text.format`), which ends where its JSON does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import openai
import pytest
from pydantic import BaseModel, Field

from tests.api.conftest import API_KEY, Platform

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]},
}


@dataclass
class Target:
    name: str
    model: str
    key: str


def own(platform: Platform) -> Target:
    return Target("tiny-llama", "tiny-llama", API_KEY)


def deployment(platform: Platform) -> Target:
    return Target("chat", "Meta-Llama-3.1-8B-Instruct", platform.deployment_key)


TARGETS = pytest.mark.parametrize("pick", [own, deployment], ids=["own-model", "deployment"])


def client(platform: Platform, target: Target, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=platform.url + base, api_key=target.key, max_retries=0)


@TARGETS
def test_create_with_text_and_messages(platform: Platform, pick: type) -> None:
    target = pick(platform)
    with client(platform, target) as sdk:
        response = sdk.responses.create(model=target.name, input="Say hi", instructions="Be brief", max_output_tokens=4)
        assert (response.object, response.model, response.status) == ("response", target.model, "incomplete")
        assert response.incomplete_details.reason == "max_output_tokens" and response.usage.output_tokens == 4
        assert response.output_text == response.output[0].content[0].text and response.id.startswith("resp_")
        messages = [{"role": "system", "content": "Terse."}, {"role": "user", "content": [{"type": "input_text",
                                                                                               "text": "Hi"}]}]
        shaped = sdk.responses.create(model=target.name, input=messages, max_output_tokens=64, temperature=0.5,
                                      text={"format": {"type": "json_object"}}, store=False, metadata={"t": "1"})
        assert shaped.status == "completed" and shaped.output_text.startswith("{")
        assert shaped.usage.total_tokens == shaped.usage.input_tokens + shaped.usage.output_tokens


@TARGETS
def test_stream_events(platform: Platform, pick: type) -> None:
    target = pick(platform)
    with client(platform, target, "/openai/v1") as sdk:
        with sdk.responses.stream(model=target.name, input="Hi", max_output_tokens=64,
                                  text={"format": {"type": "json_object"}}) as stream:  # fmt: skip
            events = list(stream)
            final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]  # fmt: skip
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]  # fmt: skip
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == deltas and final.usage.output_tokens > 0 and final.model == target.model


@TARGETS
def test_function_tools_and_their_outputs(platform: Platform, pick: type) -> None:
    target = pick(platform)
    forced = {"type": "function", "name": "get_weather"}
    with client(platform, target) as sdk:
        first = sdk.responses.create(model=target.name, input="Weather in Oslo?", tools=[WEATHER], tool_choice=forced,
                                     max_output_tokens=48)  # fmt: skip
        (call,) = first.output
        assert (first.status, call.type, call.name) == ("completed", "function_call", "get_weather")
        assert isinstance(call.call_id, str) and call.arguments.startswith('{"city": ')
        history = ["Weather in Oslo?", call, {"type": "function_call_output", "call_id": call.call_id,
                                              "output": "sunny"}]  # fmt: skip
        answer = sdk.responses.create(model=target.name, input=[{"role": "user", "content": history[0]},
                                      call.model_dump(), history[2]], tools=[WEATHER], max_output_tokens=3)
        assert answer.output[0].type == "message" and answer.usage.input_tokens > first.usage.input_tokens
        with sdk.responses.stream(model=target.name, input="Weather?", tools=[WEATHER], tool_choice="required",
                                  max_output_tokens=48) as stream:  # fmt: skip
            kinds = [e.type for e in stream]
            streamed = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert streamed.output[0].type == "function_call" and streamed.output[0].arguments.startswith('{"city": ')


def test_azure_openai_client_responses(platform: Platform) -> None:
    """`AzureOpenAI(...).responses` posts to /openai/responses?api-version=..."""
    with openai.AzureOpenAI(azure_endpoint=platform.url, api_key=platform.deployment_key,
                            api_version="2025-04-01-preview", max_retries=0) as sdk:  # fmt: skip
        response = sdk.responses.create(model="chat", input="Hi", max_output_tokens=2)
    assert response.model == "Meta-Llama-3.1-8B-Instruct" and response.usage.output_tokens == 2


def test_stateful_requests_are_a_clear_400(platform: Platform) -> None:
    with client(platform, own(platform)) as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="tiny-llama", input="Hi", previous_response_id="resp_abc")
    assert caught.value.param == "previous_response_id" and "keeps no responses" in caught.value.message


class Report(BaseModel):
    summary: str = Field(max_length=12)


@TARGETS
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_the_agents_sdk_runs_a_tool_calling_agent(platform: Platform, pick: type, streamed: bool) -> None:
    """The Agents SDK's default model (the Responses API): a forced call, the tool run, its output sent back; the
    final answer is structured output, which ends as its JSON does."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    target = pick(platform)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    async def run() -> Report:
        set_tracing_disabled(True)
        sdk = openai.AsyncOpenAI(base_url=f"{platform.url}/v1", api_key=target.key, max_retries=0)
        agent = Agent(name="forecaster", instructions="Answer with the weather.", tools=[get_weather],
                      output_type=Report, model=OpenAIResponsesModel(target.name, sdk),
                      model_settings=ModelSettings(tool_choice="get_weather", max_tokens=48))  # fmt: skip
        if not streamed:
            return (await Runner.run(agent, "Weather in Oslo?", max_turns=3)).final_output  # type: ignore[no-any-return]
        run = Runner.run_streamed(agent, "Weather in Oslo?", max_turns=3)
        async for _ in run.stream_events():
            pass
        return run.final_output  # type: ignore[no-any-return]

    report = asyncio.run(run())
    assert len(calls) == 1 and isinstance(report, Report)
