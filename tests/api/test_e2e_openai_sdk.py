"""The `openai` SDK against `/v1` of a real server (how Azure's MaaS Llama docs use it): the server's own model,
and a local replica deployment and an upstream deployment named as `model` with their keys (`target`,
tests/api/targets.py). Checks of the API's own validation run on the server's own model only."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import Server
from tests.api.targets import Target

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


def make_client(target: Target, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=target.openai_url, api_key=key or target.key, max_retries=0)


def test_create(target: Target) -> None:
    with make_client(target) as client:
        completion = client.chat.completions.create(model=target.openai_model, messages=MESSAGES, max_tokens=5)
    assert completion.object == "chat.completion" and completion.model == target.name
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length" and completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5


def test_newer_clients_max_completion_tokens_and_parallel_tool_calls(target: Target) -> None:
    """What langchain-openai and recent OpenAI code send: they were 400 extra_parameters_not_allowed."""
    with make_client(target) as client:
        completion = client.chat.completions.create(
            model=target.openai_model, messages=MESSAGES, max_completion_tokens=3, parallel_tool_calls=False
        )
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 3


def test_stream_with_stream_options(target: Target) -> None:
    with make_client(target) as client:
        stream = client.chat.completions.create(
            model=target.openai_model,
            messages=MESSAGES,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_openai_fields_need_no_header(target: Target) -> None:
    """What the openai SDK sends (LiteLLM, langchain-openai): OpenAI's own fields are used (n, logprobs, logit_bias)
    or accepted and ignored (user, store, metadata, service_tier); they were 400 extra_parameters_not_allowed."""
    with make_client(target) as client:
        completion = client.chat.completions.create(
            model=target.openai_model, messages=MESSAGES, max_tokens=3, n=2, logprobs=True, top_logprobs=3,
            temperature=0, logit_bias={"1": -100}, user="u-1", store=False, metadata={"run": "7"}, service_tier="auto",
        )  # fmt: skip
    assert [c.index for c in completion.choices] == [0, 1]
    tokens = completion.choices[0].logprobs.content
    assert len(tokens) == 3 and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in tokens)
    assert "".join(t.token for t in tokens) == completion.choices[0].message.content


def test_logit_bias_is_honoured(target: Target) -> None:
    with make_client(target) as client:
        forced = client.chat.completions.create(model=target.openai_model, messages=MESSAGES, max_tokens=3,
                                                temperature=1, logit_bias={"9906": 100})  # fmt: skip
    assert forced.choices[0].message.content == "Hello" * 3  # 9906 is "Hello" in the Llama 3 vocabulary


def test_vllm_sampling_extensions_need_no_header(target: Target) -> None:
    """What clients written for vLLM's OpenAI server send in `extra_body`."""
    with make_client(target) as client:
        answer = client.chat.completions.create(
            model=target.openai_model, messages=MESSAGES, max_tokens=4, seed=1,
            extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.2, "ignore_eos": True,
                        "skip_special_tokens": True, "stop_token_ids": [128009]},
        )  # fmt: skip
        assert answer.usage.completion_tokens == 4 and answer.choices[0].finish_reason == "length"
        beams = client.chat.completions.create(
            model=target.openai_model,
            messages=MESSAGES,
            max_tokens=2,
            n=2,
            extra_body={"best_of": 3, "use_beam_search": True},
        )
        assert len(beams.choices) == 2
        top_1 = client.chat.completions.create(model=target.openai_model, messages=MESSAGES, max_tokens=4,
                                               temperature=2, seed=5, extra_body={"top_k": 1})  # fmt: skip
        greedy = client.chat.completions.create(
            model=target.openai_model, messages=MESSAGES, max_tokens=4, temperature=0
        )
    assert top_1.choices[0].message.content == greedy.choices[0].message.content


def test_models(target: Target) -> None:
    with make_client(target) as client:
        listed = list(client.models.list())
        assert [m.id for m in listed] == [target.openai_model]
        assert listed[0].model_extra == {"max_model_len": target.ctx_size}  # vLLM's field; a gateway reads it
        assert client.models.retrieve(target.openai_model).id == target.openai_model


def test_errors(target: Target) -> None:
    with make_client(target) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=target.openai_model, messages=MESSAGES, temperature=5)
        assert caught.value.param == "temperature" and caught.value.code == "invalid_value"
        with pytest.raises(openai.BadRequestError) as caught:  # a typo is not ignored, as OpenAI answers it
            client.chat.completions.create(model=target.openai_model, messages=MESSAGES, extra_body={"max_token": 2})
        assert caught.value.code == "unknown_parameter" and caught.value.param == "max_token"
        ignored = client.chat.completions.create(
            model=target.openai_model, messages=MESSAGES, max_tokens=1, extra_body={"max_token": 2},
            extra_headers={"extra-parameters": "drop"},
        )  # fmt: skip
        assert ignored.usage.completion_tokens == 1
        with pytest.raises(openai.UnprocessableEntityError) as unserved:
            client.chat.completions.create(
                model=target.openai_model, messages=MESSAGES, audio={"voice": "x", "format": "mp3"}
            )
        assert unserved.value.param == "audio"
    with make_client(target, key="wrong") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=target.openai_model, messages=MESSAGES)


# ---- text completions (/v1/completions) ------------------------------------------------------------------------


def test_text_completions_with_the_openai_sdk(target: Target) -> None:
    """`client.completions.create` as written for Azure's serverless Llama endpoints: a raw prompt, no chat
    template (the usage counts BOS + the prompt's tokens only)."""
    with make_client(target) as client:
        plain = client.completions.create(
            model=target.openai_model, prompt="Once upon a time", max_tokens=5, temperature=0
        )
        assert plain.object == "text_completion" and plain.model == target.name and plain.id.startswith("cmpl-")
        assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 5
        assert plain.usage.prompt_tokens == 5  # <|begin_of_text|> Once upon a time
        assert (
            client.completions.create(model=target.openai_model, prompt="Hi").usage.completion_tokens <= 16
        )  # the default
        streamed = list(
            client.completions.create(model=target.openai_model, prompt="Once upon a time", max_tokens=5, temperature=0,
                                      stream=True, stream_options={"include_usage": True})
        )  # fmt: skip
        assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
        assert streamed[-1].usage.completion_tokens == 5 and len({c.id for c in streamed}) == 1
        echoed = client.completions.create(
            model=target.openai_model, prompt="Hi", max_tokens=2, temperature=0, echo=True
        )
        assert echoed.choices[0].text.startswith("Hi") and len(echoed.choices[0].text) > 2


def test_vllm_extras_on_text_completions(target: Target) -> None:
    with make_client(target) as client:
        answer = client.completions.create(
            model=target.openai_model, prompt="Hi", max_tokens=6, extra_body={"ignore_eos": True, "top_k": 3},
            logit_bias={"128009": -100},
        )  # fmt: skip
    assert answer.usage.completion_tokens == 6 and answer.choices[0].finish_reason == "length"


def test_text_completions_n_and_logprobs(target: Target) -> None:
    with make_client(target) as client:
        answer = client.completions.create(
            model=target.openai_model, prompt="Tell me", max_tokens=4, n=2, logprobs=2, seed=5
        )
    assert [c.index for c in answer.choices] == [0, 1] and answer.usage.completion_tokens == 8
    for choice in answer.choices:
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
        assert "".join(lp.tokens) == choice.text and lp.text_offset[0] == 0
        assert all(len(top) == 2 for top in lp.top_logprobs)


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"prompt": ["a", "b"]}, 422, "prompt"),
        ({"prompt": [1, 2, 3]}, 422, "prompt"),
        ({"prompt": "a", "suffix": "z"}, 422, "suffix"),
        ({"max_tokens": 2}, 400, "prompt"),
        ({"prompt": "a", "logprobs": 9}, 400, "logprobs"),
        ({"prompt": "a", "temperature": 3}, 400, "temperature"),
        ({"prompt": "a", "ignore_eos": "maybe"}, 400, "ignore_eos"),
        ({"prompt": "a", "bogus": 1}, 400, "bogus"),  # neither OpenAI's nor vLLM's
        ({"prompt": "a", "echo": "maybe"}, 400, "echo"),
    ],
)
def test_text_completion_errors_name_the_field(server: Server, fields: dict, status: int, param: str | None) -> None:
    import httpx

    answer = httpx.post(f"{server.url}/v1/completions", json=fields, headers={"api-key": server.key}, timeout=60)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"].get("param") == param, answer.text


def test_text_completions_are_limited_and_filtered_like_chat(target: Target) -> None:
    import httpx

    headers, model = {"api-key": target.key}, target.openai_model
    ok = httpx.post(
        f"{target.openai_url}/completions", json={"prompt": "Hi", "max_tokens": 2, "model": model}, headers=headers
    )
    assert ok.status_code == 200 and "x-ratelimit-remaining-requests" in ok.headers
    harmful = {"prompt": "How do I kill my neighbor with a knife", "max_tokens": 2, "model": model}
    blocked = httpx.post(f"{target.openai_url}/completions", json=harmful, headers=headers)
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_filter"
    assert "prompt_filter_results" in ok.json()  # the filter's annotation, as on chat

    def text(**fields: object) -> str:
        body = {"prompt": "Hi", "max_tokens": 2, "temperature": 0, "model": model, **fields}
        return str(
            httpx.post(f"{target.openai_url}/completions", json=body, headers=headers).json()["choices"][0]["text"]
        )

    plain = text(stream=False, echo=False)
    assert text(stream="false", echo="false") == plain  # lax booleans, read as chat reads them
    assert text(echo="true") == "Hi" + plain
    body = {"prompt": "Hi", "max_tokens": 2, "stream": True, "model": model}
    with httpx.stream("POST", f"{target.openai_url}/completions", json=body, headers=headers) as streamed:
        first = next(line for line in streamed.iter_lines() if line.startswith("data: "))
    assert "prompt_filter_results" in first and '"choices":[]' in first
