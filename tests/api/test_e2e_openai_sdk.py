"""The `openai` SDK against `/v1` of a real server (how Azure's MaaS Llama docs use it)."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import Server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


def make_client(server: Server, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or server.key, max_retries=0)


def test_create(server: Server) -> None:
    with make_client(server) as client:
        completion = client.chat.completions.create(model="azureai", messages=MESSAGES, max_tokens=5)
    assert completion.object == "chat.completion" and completion.model == server.name
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length" and completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5


def test_newer_clients_max_completion_tokens_and_parallel_tool_calls(server: Server) -> None:
    """What langchain-openai and recent OpenAI code send: they were 400 extra_parameters_not_allowed."""
    with make_client(server) as client:
        completion = client.chat.completions.create(
            model="azureai", messages=MESSAGES, max_completion_tokens=3, parallel_tool_calls=False
        )
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 3


def test_stream_with_stream_options(server: Server) -> None:
    with make_client(server) as client:
        stream = client.chat.completions.create(
            model="azureai", messages=MESSAGES, max_tokens=5, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_n_and_logprobs_with_the_pass_through_header(server: Server) -> None:
    with make_client(server) as client:
        completion = client.chat.completions.create(
            model="azureai",
            messages=MESSAGES,
            max_tokens=3,
            n=2,
            logprobs=True,
            top_logprobs=3,
            extra_headers={"extra-parameters": "pass-through"},
        )
    assert [c.index for c in completion.choices] == [0, 1]
    tokens = completion.choices[0].logprobs.content
    assert len(tokens) == 3 and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in tokens)
    assert "".join(t.token for t in tokens) == completion.choices[0].message.content


def test_models(server: Server) -> None:
    with make_client(server) as client:
        assert [m.id for m in client.models.list()] == [server.name]
        assert client.models.retrieve(server.name).id == server.name


def test_errors(server: Server) -> None:
    with make_client(server) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="azureai", messages=MESSAGES, temperature=5)
        assert caught.value.param == "temperature" and caught.value.code == "invalid_value"
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="azureai", messages=MESSAGES, n=2)  # no pass-through header
        assert caught.value.code == "extra_parameters_not_allowed"
    with make_client(server, key="wrong") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="azureai", messages=MESSAGES)
