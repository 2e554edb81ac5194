"""The real `azure-ai-inference` SDK (1.0.0b9) against a real `llamafoundry serve` process on loopback: its bare
route, and `/deployments/<name>` of a local replica deployment and of an upstream deployment (`target`,
tests/api/targets.py). Checks of the API's own validation, which no target changes, run on the bare route only.

The checks re-implement the SDK's own test oracles (`_validate_chat_completions_result`,
`_validate_chat_completions_streaming_result`, `_validate_model_info_result`; contract §5, §6). The model has
random weights: assert shapes, counts and framing, never content.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from azure.ai.inference import ChatCompletionsClient, EmbeddingsClient, load_client
from azure.ai.inference.aio import ChatCompletionsClient as AsyncChatCompletionsClient
from azure.ai.inference.models import (
    AssistantMessage,
    ChatCompletions,
    ChatCompletionsToolCall,
    ChatCompletionsToolDefinition,
    DeveloperMessage,
    FunctionCall,
    FunctionDefinition,
    ImageContentItem,
    ImageUrl,
    StreamingChatCompletionsUpdate,
    SystemMessage,
    TextContentItem,
    ToolMessage,
    UserMessage,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from tests.api.conftest import Server
from tests.api.targets import Target

pytestmark = pytest.mark.slow

ID = re.compile(r"^[0-9a-f]{32}$")
MESSAGES = [SystemMessage("You are a helpful assistant."), UserMessage("How many feet are in a mile?")]


def make_client(target: Target | Server, path: str = "", **kwargs: Any) -> ChatCompletionsClient:
    return ChatCompletionsClient(target.url + path, AzureKeyCredential(target.key), retry_total=0, **kwargs)


def validate_result(result: ChatCompletions, target: Target | Server, num_choices: int = 1) -> None:
    assert ID.match(result.id) and isinstance(result.as_dict()["created"], int) and result.model == target.name
    assert [c.index for c in result.choices] == list(range(num_choices))
    for choice in result.choices:
        assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
        assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    usage = result.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def validate_stream(updates: list[StreamingChatCompletionsUpdate], target: Target | Server) -> str:
    assert len(updates) > 2
    assert len({(u.id, u.model) for u in updates}) == 1 and updates[0].model == target.name
    assert updates[0].choices[0].delta.role == "assistant" and updates[0].choices[0].delta.content == ""
    for update in updates[1:]:
        assert len(update.choices) == 1 and update.choices[0].index == 0
        assert update.choices[0].delta.role is None and update.choices[0].delta.content is not None
        assert update.choices[0].delta.tool_calls is None
    assert [u.choices[0].finish_reason is not None for u in updates] == [False] * (len(updates) - 1) + [True]
    # A length finish rides the last token's update (Azure's shape), never an empty update of its own after it
    # (the count below misses that extra update whenever a token ends inside a UTF-8 character).
    assert updates[-1].choices[0].finish_reason != "length" or updates[-1].choices[0].delta.content
    assert all(u.usage is None for u in updates[:-1])
    usage = updates[-1].usage
    # one update per token (a stop may end with an empty one), except that a token ending inside a UTF-8
    # character is sent with the next one
    assert len(updates) - 1 <= usage.completion_tokens or updates[-1].choices[0].finish_reason == "stop"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    return "".join(u.choices[0].delta.content for u in updates)


# ---- chat --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "/"])
def test_complete(target: Target, path: str) -> None:
    with make_client(target, path) as client:
        result = client.complete(messages=MESSAGES, max_tokens=8, seed=1)
    validate_result(result, target)
    assert result.usage.completion_tokens == 8 and result.choices[0].finish_reason == "length"


@pytest.mark.parametrize("path", ["/models", "/deployments/tiny-llama"])
def test_complete_at_the_servers_other_prefixes(server: Server, path: str) -> None:
    with make_client(server, path) as client:
        validate_result(client.complete(messages=MESSAGES, max_tokens=2), server)


def test_complete_until_a_stop_sequence_reports_stop(target: Target) -> None:
    with make_client(target) as client:
        text = client.complete(messages=MESSAGES, max_tokens=16, temperature=0).choices[0].message.content
        stop = text[4:9] if len(text) >= 9 else text  # some text greedy decoding is certain to produce
        result = client.complete(messages=MESSAGES, max_tokens=16, temperature=0, stop=[stop])
    validate_result(result, target)
    assert result.choices[0].finish_reason == "stop" and stop not in result.choices[0].message.content


def test_stream(target: Target) -> None:
    with make_client(target) as client:
        response = client.complete(messages=MESSAGES, max_tokens=6, stream=True)
        updates = list(response)
        response.close()
    validate_stream(updates, target)
    assert updates[-1].usage.completion_tokens == 6


def test_stream_and_complete_agree_when_greedy(target: Target) -> None:
    with make_client(target) as client:
        text = client.complete(messages=MESSAGES, max_tokens=10, temperature=0).choices[0].message.content
        with client.complete(messages=MESSAGES, max_tokens=10, temperature=0, stream=True) as response:
            streamed = validate_stream(list(response), target)
    assert streamed == text


def test_constructor_defaults_apply_to_every_call(target: Target) -> None:
    with make_client(target, temperature=0, max_tokens=3) as client:
        first = client.complete(messages=MESSAGES)
        second = client.complete(messages=MESSAGES)
    assert first.usage.completion_tokens == 3 and first.choices[0].message.content == second.choices[0].message.content


def test_developer_role_history_and_tool_echo(target: Target) -> None:
    tool = ChatCompletionsToolDefinition(
        function=FunctionDefinition(
            name="get_flight_info",
            description="Returns flight information.",
            parameters={"type": "object", "properties": {"origin": {"type": "string"}}, "required": ["origin"]},
        )
    )
    call = ChatCompletionsToolCall(
        id="call_1", function=FunctionCall(name="get_flight_info", arguments='{"origin": "SEA"}')
    )
    messages = [
        DeveloperMessage("Answer in one word."),
        UserMessage(content=[TextContentItem(text="When is the next flight"), TextContentItem(text="from Seattle?")]),
        AssistantMessage(tool_calls=[call]),
        ToolMessage(content='{"departure": "10:00"}', tool_call_id="call_1"),
    ]
    with make_client(target) as client:
        result = client.complete(messages=messages, tools=[tool], max_tokens=4)
    validate_result(result, target)


def test_model_extras_are_passed_through(target: Target) -> None:
    with make_client(target) as client:
        result = client.complete(
            messages=MESSAGES, max_tokens=3, model_extras={"n": 2, "logprobs": True, "top_logprobs": 2, "key1": "v"}
        )
    validate_result(result, target, num_choices=2)
    logprobs = result.choices[1]["logprobs"]["content"]
    assert len(logprobs) == 3 and all(len(t["top_logprobs"]) == 2 for t in logprobs)


def test_several_choices_without_max_tokens_reserve_the_engines_context(target: Target) -> None:
    """With no max_tokens, each choice reserves the rest of the context against the tokens-per-minute limit: the
    context of the engine that answers. An upstream deployment reserved its catalog model's (2 x 131K tokens for
    Llama 3.1 70B, over the 200K limit: a 400) until the gateway read the upstream's own from its /v1/models."""
    eot = {"128009": 100}  # <|eot_id|>: every choice ends at once, so the case costs no generation
    with make_client(target) as client:
        result = client.complete(messages=MESSAGES, model_extras={"n": 2, "logit_bias": eot})
    assert [c.finish_reason for c in result.choices] == ["stop", "stop"]


def test_raw_dict_body_gets_no_header_so_extras_are_refused(server: Server) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "n": 1}
    with make_client(server) as client:
        with pytest.raises(HttpResponseError) as caught:
            client.complete(body)
        assert caught.value.status_code == 400 and caught.value.error.code == "extra_parameters_not_allowed"
        assert "Extra parameters ['n'] are not allowed" in caught.value.message
        result = client.complete(body, headers={"extra-parameters": "drop"})
        validate_result(result, server)
        result = client.complete(json.dumps(body).encode(), headers={"extra-parameters": "pass-through"})
        validate_result(result, server)


def test_request_ids_come_back(target: Target) -> None:
    seen: dict[str, str] = {}

    def hook(response: Any) -> None:
        seen.update(response.http_response.headers)

    headers = {"x-ms-client-request-id": "my-id-1", "azureml-model-deployment": target.name}
    with make_client(target, user_agent="my-app/1.0") as client:
        client.complete(messages=MESSAGES, max_tokens=1, headers=headers, raw_response_hook=hook)
    assert seen["x-ms-client-request-id"] == "my-id-1" and seen["x-request-id"]


def test_a_deployment_header_from_azure_settings_is_ignored_by_a_single_model_server(server: Server) -> None:
    """The SDK samples send azureml-model-deployment whenever AZURE_AI_CHAT_DEPLOYMENT_NAME is set; ported code
    names its Azure deployment, which this server does not have (it was a 404)."""
    headers = {"azureml-model-deployment": "my-azure-llama-deployment"}
    with make_client(server) as client:
        response = client.complete(messages=MESSAGES, max_tokens=1, headers=headers)
        assert response.model == server.name
        assert client.get_model_info(headers=headers).model_name == server.name


# ---- model info --------------------------------------------------------------------------------------


def test_get_model_info(target: Target) -> None:
    with make_client(target) as client:
        info = client.get_model_info()
        assert client.get_model_info() is info  # cached by the SDK after the first 200
    assert (info.model_name, info.model_type, info.model_provider_name) == (target.name, "chat-completions", "Meta")


def test_load_client_picks_a_chat_client(target: Target) -> None:
    client = load_client(target.url, AzureKeyCredential(target.key))
    try:
        assert isinstance(client, ChatCompletionsClient)
        validate_result(client.complete(messages=MESSAGES, max_tokens=2), target)
    finally:
        client.close()


# ---- errors ------------------------------------------------------------------------------------------


def test_wrong_key_is_client_authentication_error(target: Target) -> None:
    client = ChatCompletionsClient(target.url, AzureKeyCredential("not-the-key"), retry_total=0)
    with client, pytest.raises(ClientAuthenticationError) as caught:
        client.complete(messages=MESSAGES)
    assert caught.value.status_code == 401 and "auth token validation failed" in caught.value.message.lower()


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "param"),
    [
        ({"temperature": 8.976}, 400, "invalid_value", "temperature"),
        ({"top_p": 9.876}, 400, "invalid_value", "top_p"),
        ({"presence_penalty": 4.567}, 400, "invalid_value", "presence_penalty"),
        ({"max_tokens": 0}, 400, "invalid_value", "max_tokens"),
        ({"model_extras": {"n": 2, "best_of": 1}}, 400, "invalid_value", "best_of"),
        ({"model_extras": {"best_of": 2}, "stream": True}, 400, "invalid_value", "best_of"),
    ],
)
def test_errors_carry_code_and_param(
    server: Server, kwargs: dict[str, Any], status: int, code: str, param: str
) -> None:
    assert_error(server, kwargs, status, code, param)


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "param"),
    [
        ({"max_tokens": 5000}, 400, "context_length_exceeded", "max_tokens"),  # the serving engine's context
        # and its slots (max_tokens keeps n x max_tokens under the tokens-per-minute limit, which an upstream
        # deployment, sized by its catalog model's 128K context, meets first with the default max_tokens)
        ({"model_extras": {"n": 64}, "max_tokens": 4}, 400, "too_many_sequences", "n"),
    ],
)
def test_the_serving_engines_limits_are_errors_with_code_and_param(
    target: Target, kwargs: dict[str, Any], status: int, code: str, param: str
) -> None:
    assert_error(target, kwargs, status, code, param)


def assert_error(target: Target | Server, kwargs: dict[str, Any], status: int, code: str, param: str) -> None:
    with make_client(target) as client, pytest.raises(HttpResponseError) as caught:
        client.complete(messages=MESSAGES, **kwargs)
    assert caught.value.status_code == status
    assert caught.value.error.code == code and f"({code})" in caught.value.message
    assert json.loads(caught.value.response.text())["error"]["param"] == param


def test_empty_messages_is_400(server: Server) -> None:
    with make_client(server) as client, pytest.raises(HttpResponseError) as caught:
        client.complete(messages=[])
    assert caught.value.status_code == 400 and caught.value.error.code == "invalid_value"


def test_image_content_is_422(target: Target) -> None:
    content = [
        TextContentItem(text="What is this?"),
        ImageContentItem(image_url=ImageUrl(url="https://example.com/a.png")),
    ]
    with make_client(target) as client, pytest.raises(HttpResponseError) as caught:
        client.complete(messages=[UserMessage(content=content)])
    assert caught.value.status_code == 422 and "images" in caught.value.error.message


def test_unknown_api_version_is_400(server: Server) -> None:
    with make_client(server, api_version="2023-01-01") as client, pytest.raises(HttpResponseError) as caught:
        client.complete(messages=MESSAGES)
    assert caught.value.status_code == 400 and caught.value.error.code == "BadRequest"


def test_ga_api_version_works(target: Target) -> None:
    with make_client(target, api_version="2025-04-01") as client:
        validate_result(client.complete(messages=MESSAGES, max_tokens=2), target)


def test_embeddings_on_a_chat_endpoint_is_not_found(target: Target) -> None:
    with EmbeddingsClient(target.url, AzureKeyCredential(target.key), retry_total=0) as client:
        with pytest.raises(ResourceNotFoundError) as caught:
            client.embed(input=["first phrase"])
    assert caught.value.status_code == 404 and "not found" in caught.value.message.lower()


# ---- async client over aiohttp -----------------------------------------------------------------------


def test_async_client_complete_and_stream(target: Target) -> None:
    async def run() -> tuple[ChatCompletions, list[StreamingChatCompletionsUpdate]]:
        async with AsyncChatCompletionsClient(target.url, AzureKeyCredential(target.key), retry_total=0) as client:
            result = await client.complete(messages=MESSAGES, max_tokens=4)
            response = await client.complete(messages=MESSAGES, max_tokens=4, stream=True)
            updates = [update async for update in response]
            await response.aclose()
            return result, updates

    result, updates = asyncio.run(run())
    validate_result(result, target)
    validate_stream(updates, target)
