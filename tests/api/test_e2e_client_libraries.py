"""The client libraries of docs/api.md's table beyond the SDKs, run unchanged against a real server: langchain-openai
(`AzureChatOpenAI` on `/openai/deployments/<name>` and `/openai/responses`, `ChatOpenAI` on Foundry's `/openai/v1`),
langchain-azure-ai (`AzureAIChatCompletionsModel` given the server as its endpoint, which is langchain-openai's
`ChatOpenAI` on the Azure route `/chat/completions`), LiteLLM (`azure/`, `azure_ai/`) and pydantic-ai (`AzureProvider`
with its chat and Responses models, `OpenAIProvider` on `/v1`). Each: a plain chat, a streamed one (same text at
temperature 0, same usage), and a tool call forced with `tool_choice` (the model has random weights; a forced call is
constrained to the tool's schema). Most Azure clients go through the deployment `chat` (a local replica); the others
to the server's own model.

The libraries are imported inside the tests: importing them costs 2-11 s, which every test run would pay at
collection.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.api.conftest import API_KEY, Platform

pytestmark = pytest.mark.slow

API_VERSION = "2024-10-21"
DEPLOYED = "Meta-Llama-3.1-8B-Instruct"  # what the deployment `chat` reports as its model
PROMPT = "Name a colour."
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },  # fmt: skip
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


class Colour(BaseModel):
    name: str = Field(max_length=10)


# ---- langchain-openai and langchain-azure-ai ----------------------------------------------------------------


def azure_chat_openai(platform: Platform, max_tokens: int, api_version: str = API_VERSION, **options: Any) -> Any:
    from langchain_openai import AzureChatOpenAI

    return AzureChatOpenAI(azure_endpoint=platform.url, azure_deployment="chat", api_version=api_version,
                           api_key=platform.deployment_key, max_tokens=max_tokens, temperature=0, max_retries=0,
                           **options)  # fmt: skip


def chat_openai_on_foundry_v1(platform: Platform, max_tokens: int, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=f"{platform.url}/openai/v1", api_key=API_KEY, model="tiny-llama",
                      max_tokens=max_tokens, temperature=0, max_retries=0, **options)  # fmt: skip


def langchain_azure_ai(platform: Platform, max_tokens: int, **options: Any) -> Any:
    from langchain_azure_ai.chat_models import AzureAIChatCompletionsModel

    return AzureAIChatCompletionsModel(endpoint=platform.url, credential=API_KEY, model="tiny-llama",
                                       max_tokens=max_tokens, temperature=0, **options)  # fmt: skip


def langchain_azure_ai_deployment(platform: Platform, max_tokens: int, **options: Any) -> Any:
    from langchain_azure_ai.chat_models import AzureAIChatCompletionsModel

    return AzureAIChatCompletionsModel(endpoint=f"{platform.url}/deployments/chat", model="chat",
                                       credential=platform.deployment_key, max_tokens=max_tokens, temperature=0,
                                       **options)  # fmt: skip


LANGCHAIN = pytest.mark.parametrize(
    ("make", "model"),
    [
        (azure_chat_openai, DEPLOYED),
        (chat_openai_on_foundry_v1, "tiny-llama"),
        (langchain_azure_ai, "tiny-llama"),
        (langchain_azure_ai_deployment, DEPLOYED),
    ],  # fmt: skip
    ids=["AzureChatOpenAI-deployment", "ChatOpenAI-openai-v1", "langchain-azure-ai", "langchain-azure-ai-deployment"],
)


@LANGCHAIN
def test_langchain_chat_stream_and_tool_call(platform: Platform, make: Any, model: str) -> None:
    llm = make(platform, 4)
    answer = llm.invoke(PROMPT)
    assert answer.response_metadata["model_name"] == model and answer.usage_metadata["output_tokens"] <= 4
    assert answer.response_metadata["finish_reason"] in ("stop", "length") and isinstance(answer.content, str)
    chunks = list(llm.stream(PROMPT))
    assert "".join(str(c.content) for c in chunks) == answer.content
    assert sum(chunks[1:], chunks[0]).usage_metadata == answer.usage_metadata
    called = make(platform, 48).bind_tools([WEATHER], tool_choice="get_weather").invoke("Weather in Paris?")
    (call,) = called.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]


@LANGCHAIN
def test_langchain_structured_output_a_tool_result_and_stream_usage(platform: Platform, make: Any, model: str) -> None:
    """What langchain sends beyond a plain chat: `parallel_tool_calls: false` (structured output by function calling,
    as `create_agent(response_format=...)` does), `stream_options` (`stream_usage=True`), a JSON schema, and a tool's
    result sent back. langchain-azure-ai sends them to the Azure inference route."""
    from langchain_core.messages import HumanMessage, ToolMessage

    llm = make(platform, 48)
    for method in ("function_calling", "json_schema"):
        assert isinstance(llm.with_structured_output(Colour, method=method).invoke("A colour?"), Colour), method
    chunks = list(make(platform, 4, stream_usage=True).stream(PROMPT))
    assert 0 < sum(chunks[1:], chunks[0]).usage_metadata["output_tokens"] <= 4
    question = HumanMessage("Weather in Paris?")
    asked = llm.bind_tools([WEATHER], tool_choice="get_weather").invoke([question])
    result = ToolMessage("Sunny, 21 C", tool_call_id=asked.tool_calls[0]["id"])
    answer = make(platform, 4).bind_tools([WEATHER]).invoke([question, asked, result])
    assert answer.response_metadata["finish_reason"] in ("stop", "length", "tool_calls")


@pytest.mark.parametrize(
    ("make", "model", "options"),
    [
        (azure_chat_openai, DEPLOYED, {"api_version": "2025-04-01-preview"}),
        (chat_openai_on_foundry_v1, "tiny-llama", {}),
    ],
    ids=["AzureChatOpenAI-openai-responses", "ChatOpenAI-openai-v1-responses"],
)
def test_langchain_on_the_responses_api(platform: Platform, make: Any, model: str, options: dict[str, str]) -> None:
    """`use_responses_api=True` (langchain-azure-ai's default with a Foundry project): `/openai/responses` with an
    api-version (a deployment), and `/openai/v1/responses`."""
    llm = make(platform, 16, use_responses_api=True, **options)
    answer = llm.invoke(PROMPT)
    assert answer.response_metadata["model_name"] == model and 0 < answer.usage_metadata["output_tokens"] <= 16
    chunks = list(llm.stream(PROMPT))
    assert sum(chunks[1:], chunks[0]).usage_metadata["output_tokens"] == answer.usage_metadata["output_tokens"]
    tools = make(platform, 48, use_responses_api=True, **options).bind_tools([WEATHER], tool_choice="get_weather")
    called = tools.invoke("Weather in Paris?")
    assert [call["name"] for call in called.tool_calls] == ["get_weather"]
    assert isinstance(llm.with_structured_output(Colour).invoke("A colour?"), Colour)


# ---- LiteLLM --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled price list, not one from GitHub
    import litellm

    return litellm


def litellm_azure(platform: Platform) -> dict[str, Any]:
    return {"model": "azure/chat", "api_base": platform.url, "api_version": API_VERSION,
            "api_key": platform.deployment_key}  # fmt: skip


def litellm_azure_ai(platform: Platform) -> dict[str, Any]:
    return {"model": "azure_ai/tiny-llama", "api_base": platform.url, "api_key": API_KEY}


@pytest.mark.parametrize(
    ("target", "model"), [(litellm_azure, DEPLOYED), (litellm_azure_ai, "tiny-llama")], ids=["azure", "azure_ai"]
)
def test_litellm_chat_stream_and_tool_call(platform: Platform, litellm: Any, target: Any, model: str) -> None:
    where = target(platform)
    messages = [{"role": "user", "content": PROMPT}]
    answer = litellm.completion(**where, messages=messages, max_tokens=4, temperature=0, num_retries=0)
    assert answer.usage.completion_tokens <= 4 and answer.choices[0].finish_reason in ("stop", "length")
    assert model in answer.model
    chunks = list(litellm.completion(**where, messages=messages, max_tokens=4, temperature=0, stream=True,
                                     stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # the usage chunk has none
    assert text == answer.choices[0].message.content and chunks[-1].usage.total_tokens == answer.usage.total_tokens
    called = litellm.completion(**where, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                tools=[WEATHER], tool_choice=FORCE_WEATHER, max_tokens=48,
                                # LiteLLM's own check refuses `tool_choice` for an azure_ai model it does not list
                                allowed_openai_params=["tool_choice"])  # fmt: skip
    (call,) = called.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and called.choices[0].finish_reason == "tool_calls"


# ---- pydantic-ai ----------------------------------------------------------------------------------------------


class City(BaseModel):
    name: str = Field(max_length=12)


def pydantic_ai_azure(platform: Platform) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.azure import AzureProvider

    provider = AzureProvider(azure_endpoint=platform.url, api_version=API_VERSION, api_key=platform.deployment_key)
    return OpenAIChatModel("chat", provider=provider)


def pydantic_ai_azure_responses(platform: Platform) -> Any:
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.azure import AzureProvider

    provider = AzureProvider(azure_endpoint=platform.url, api_version="2025-04-01-preview", api_key=API_KEY)
    return OpenAIResponsesModel("tiny-llama", provider=provider)


def pydantic_ai_openai_v1(platform: Platform) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("tiny-llama", provider=OpenAIProvider(base_url=f"{platform.url}/v1", api_key=API_KEY))


@pytest.mark.parametrize(
    "make",
    [pydantic_ai_azure, pydantic_ai_azure_responses, pydantic_ai_openai_v1],
    ids=["AzureProvider", "AzureProvider-responses", "OpenAIProvider"],
)
def test_pydantic_ai_agent_text_stream_and_tool_output(platform: Platform, make: Any) -> None:
    from pydantic_ai import Agent

    agent = Agent(make(platform), model_settings={"max_tokens": 4, "temperature": 0})
    result = agent.run_sync(PROMPT)
    assert isinstance(result.output, str) and 0 < result.usage.output_tokens <= 4
    streamed = agent.run_stream_sync(PROMPT)
    assert "".join(streamed.stream_text(delta=True)) == result.output
    assert streamed.usage.output_tokens == result.usage.output_tokens
    # a structured output is a tool the model must call (`tool_choice: required`): the agent's tool-call path
    typed = Agent(make(platform), output_type=City, model_settings={"max_tokens": 32, "temperature": 0})
    city = typed.run_sync("Which city is the capital of France?").output
    assert isinstance(city, City) and len(city.name) <= 12
