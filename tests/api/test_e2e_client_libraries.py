"""The client libraries of docs/api.md's table that are not the SDKs themselves, run unchanged against a real
server: langchain-openai (`AzureChatOpenAI` on `/openai/deployments/<name>`, `ChatOpenAI` on Foundry's
`/openai/v1`), langchain-azure-ai (`AzureAIChatCompletionsModel` pointed at the server, as its docs say),
LiteLLM (`azure/` and `azure_ai/`) and pydantic-ai (`AzureProvider`, `OpenAIProvider` on `/v1`). Each: a plain chat,
a streamed chat, and a tool call forced with `tool_choice` (the model has random weights; a forced call is
constrained to the tool's schema). The Azure clients go through the deployment `chat` (a local replica); the others
to the server's own model.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.api.conftest import API_KEY, Platform

pytestmark = pytest.mark.slow

API_VERSION = "2024-10-21"
PROMPT = "Name a colour."
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                       "required": ["city"]},  # fmt: skip
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


def own_v1(platform: Platform) -> str:
    return f"{platform.url}/openai/v1"


# ---- langchain-openai ---------------------------------------------------------------------------------------


def azure_chat_openai(platform: Platform, max_tokens: int) -> Any:
    from langchain_openai import AzureChatOpenAI

    return AzureChatOpenAI(azure_endpoint=platform.url, azure_deployment="chat", api_version=API_VERSION,
                           api_key=platform.deployment_key, max_tokens=max_tokens, temperature=0, max_retries=0)  # fmt: skip


def chat_openai_on_foundry_v1(platform: Platform, max_tokens: int) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=own_v1(platform), api_key=API_KEY, model="tiny-llama", max_tokens=max_tokens,
                      temperature=0, max_retries=0)  # fmt: skip


def langchain_azure_ai(platform: Platform, max_tokens: int) -> Any:
    from langchain_azure_ai.chat_models import AzureAIChatCompletionsModel

    return AzureAIChatCompletionsModel(endpoint=platform.url, credential=API_KEY, model="tiny-llama",
                                       max_tokens=max_tokens, temperature=0)  # fmt: skip


LANGCHAIN = pytest.mark.parametrize(
    ("make", "model"),
    [(azure_chat_openai, "Meta-Llama-3.1-8B-Instruct"), (chat_openai_on_foundry_v1, "tiny-llama"),
     (langchain_azure_ai, "tiny-llama")],  # fmt: skip
    ids=["AzureChatOpenAI-deployment", "ChatOpenAI-openai-v1", "langchain-azure-ai"],
)


@LANGCHAIN
def test_langchain_chat_stream_and_tool_call(platform: Platform, make: Any, model: str) -> None:
    llm = make(platform, 4)
    answer = llm.invoke(PROMPT)
    assert answer.response_metadata["model_name"] == model and answer.usage_metadata["output_tokens"] <= 4
    assert answer.response_metadata["finish_reason"] in ("stop", "length") and isinstance(answer.content, str)
    chunks = list(llm.stream(PROMPT))
    assert "".join(str(c.content) for c in chunks) == answer.content  # temperature 0: the same text
    streamed = sum(chunks[1:], chunks[0])
    assert streamed.usage_metadata == answer.usage_metadata, type(llm).__name__
    tools = make(platform, 48).bind_tools([WEATHER], tool_choice="get_weather")
    called = tools.invoke("Weather in Paris?")
    (call,) = called.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]


# ---- LiteLLM --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list from GitHub
    import litellm

    return litellm


def litellm_azure(platform: Platform) -> dict[str, Any]:
    return {"model": "azure/chat", "api_base": platform.url, "api_version": API_VERSION,
            "api_key": platform.deployment_key}  # fmt: skip


def litellm_azure_ai(platform: Platform) -> dict[str, Any]:
    return {"model": "azure_ai/tiny-llama", "api_base": platform.url, "api_key": API_KEY}


@pytest.mark.parametrize(("target", "model"), [(litellm_azure, "Meta-Llama-3.1-8B-Instruct"),
                                               (litellm_azure_ai, "tiny-llama")], ids=["azure", "azure_ai"])  # fmt: skip
def test_litellm_chat_stream_and_tool_call(platform: Platform, litellm: Any, target: Any, model: str) -> None:
    where = target(platform)
    messages = [{"role": "user", "content": PROMPT}]
    answer = litellm.completion(**where, messages=messages, max_tokens=4, temperature=0, num_retries=0)
    assert answer.usage.completion_tokens <= 4 and answer.choices[0].finish_reason in ("stop", "length")
    assert model in answer.model
    chunks = list(litellm.completion(**where, messages=messages, max_tokens=4, temperature=0, stream=True,
                                     stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content and chunks[-1].usage.total_tokens == answer.usage.total_tokens
    called = litellm.completion(**where, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                tools=[WEATHER], tool_choice=FORCE_WEATHER, max_tokens=48,
                                # LiteLLM itself refuses `tool_choice` for a model missing from its price list
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


def pydantic_ai_openai_v1(platform: Platform) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("tiny-llama", provider=OpenAIProvider(base_url=f"{platform.url}/v1", api_key=API_KEY))


@pytest.mark.parametrize("make", [pydantic_ai_azure, pydantic_ai_openai_v1], ids=["AzureProvider", "OpenAIProvider"])
def test_pydantic_ai_agent_text_stream_and_tool_output(platform: Platform, make: Any) -> None:
    from pydantic_ai import Agent

    settings = {"max_tokens": 4, "temperature": 0}
    agent = Agent(make(platform), model_settings=settings)
    result = agent.run_sync(PROMPT)
    assert isinstance(result.output, str) and 0 < result.usage.output_tokens <= 4
    streamed = agent.run_stream_sync(PROMPT)
    assert "".join(streamed.stream_text(delta=True)) == result.output
    assert streamed.usage.output_tokens == result.usage.output_tokens
    # a structured output is a tool the model must call (`tool_choice: required`): the agent's tool-call path
    typed = Agent(make(platform), output_type=City, model_settings={"max_tokens": 32, "temperature": 0})
    city = typed.run_sync("Which city is the capital of France?").output
    assert isinstance(city, City) and len(city.name) <= 12
