"""Azure OpenAI's routes with the clients written for them, unchanged: `openai.AzureOpenAI` on
`/openai/deployments/<name>/...?api-version=...`, and the `openai` SDK on Azure AI Foundry's `/openai/v1`; each for
the server's own model and for a deployment (a local replica), on the same keys, limits, safety and metering as
the Azure routes. Also the honest 404 of a key with an unknown `model`, and `/v1/models` listing what a key opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.api.conftest import API_KEY, Platform
from tests.api.test_content_safety_e2e import HARMFUL

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


@dataclass
class Target:
    name: str  # what the client sends as `model` (the deployment's name)
    model: str  # what answers report
    key: str


def own(platform: Platform) -> Target:
    return Target("tiny-llama", "tiny-llama", API_KEY)


def deployment(platform: Platform) -> Target:
    return Target("chat", "Meta-Llama-3.1-8B-Instruct", platform.deployment_key)


TARGETS = pytest.mark.parametrize("pick", [own, deployment], ids=["own-model", "deployment"])


def azure_client(platform: Platform, key: str, api_version: str = "2024-10-21", **kwargs: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=platform.url, api_key=key, api_version=api_version, max_retries=0,
                              **kwargs)  # fmt: skip


@TARGETS
def test_azure_openai_client_runs_unchanged(platform: Platform, pick: type) -> None:
    target = pick(platform)
    with azure_client(platform, target.key) as client:
        answer = client.chat.completions.create(
            model=target.name, messages=MESSAGES, max_tokens=3, n=2, logprobs=True, top_logprobs=2, user="u-1"
        )
        assert answer.model == target.model and [c.index for c in answer.choices] == [0, 1]
        assert answer.usage.completion_tokens == 6 and len(answer.choices[0].logprobs.content) == 3
        chunks = list(client.chat.completions.create(model=target.name, messages=MESSAGES, max_tokens=4, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage.completion_tokens == 4
        text = client.completions.create(model=target.name, prompt="Once upon a time", max_tokens=3)
        assert text.object == "text_completion" and text.usage.completion_tokens == 3
        assert [m.id for m in client.models.list()] == [target.name]


def test_an_azure_deployment_base_url_and_a_preview_version(platform: Platform) -> None:
    with azure_client(platform, platform.deployment_key, "2025-04-01-preview", azure_deployment="chat") as client:
        answer = client.chat.completions.create(model="ignored-here", messages=MESSAGES, max_completion_tokens=2)
    assert answer.model == "Meta-Llama-3.1-8B-Instruct" and answer.usage.completion_tokens == 2


@TARGETS
def test_foundry_openai_v1_endpoint(platform: Platform, pick: type) -> None:
    target = pick(platform)
    with openai.OpenAI(base_url=f"{platform.url}/openai/v1", api_key=target.key, max_retries=0) as client:
        answer = client.chat.completions.create(model=target.name, messages=MESSAGES, max_tokens=2, seed=3)
        assert answer.model == target.model and answer.usage.completion_tokens == 2
        assert [m.id for m in client.models.list()] == [target.name]
        response = client.responses.create(model=target.name, input="Hi", max_output_tokens=3)
        assert response.model == target.model and response.usage.output_tokens == 3


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/openai/deployments/chat/chat/completions", 404, "404"),  # Azure answers a missing api-version so
        ("/openai/deployments/chat/chat/completions?api-version=2019-01-01", 400, "BadRequest"),
        ("/openai/deployments/chat/chat/completions?api-version=banana", 400, "BadRequest"),
        ("/openai/deployments/chat/completions?api-version=2099-01-01-preview", 400, "BadRequest"),
        ("/openai/v1/chat/completions?api-version=2024-13-01", 400, "BadRequest"),
        ("/openai/v1/chat/completions", 200, None),
        ("/openai/v1/chat/completions?api-version=preview", 200, None),
        ("/openai/deployments/chat/chat/completions?api-version=2023-05-15", 200, None),
    ],
)
def test_api_version(platform: Platform, path: str, status: int, code: str | None) -> None:
    body = {"messages": MESSAGES, "max_tokens": 1, "model": "chat"}
    answer = httpx.post(platform.url + path, json=body, headers={"api-key": platform.deployment_key}, timeout=60)
    assert answer.status_code == status, answer.text
    if code is not None:
        assert answer.json()["error"]["code"] == code and "api-version" in answer.json()["error"]["message"]


def test_azure_openai_routes_share_limits_safety_and_metering(platform: Platform) -> None:
    with azure_client(platform, platform.deployment_key) as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=1)
        assert "x-ratelimit-remaining-requests" in raw.headers  # the deployment's limits apply
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": HARMFUL}])
        assert caught.value.code == "content_filter"
    report = httpx.get(f"{platform.url}/management/usage", params={"deployment": "chat"},
                       headers={"api-key": platform.admin_key}, timeout=30).json()  # fmt: skip
    (row,) = report["data"]
    assert row["requests"] >= 2 and row["filtered"] >= 1


def test_an_unknown_model_is_404_naming_what_the_key_opens(platform: Platform) -> None:
    body = {"messages": MESSAGES, "max_tokens": 1, "model": "chta"}
    typo = httpx.post(f"{platform.url}/v1/chat/completions", json=body, headers={"api-key": platform.deployment_key})
    assert typo.status_code == 404, typo.text
    assert "Model 'chta' not found" in typo.json()["error"]["message"] and "chat" in typo.json()["error"]["message"]
    wrong_key = httpx.post(f"{platform.url}/v1/chat/completions", json=body, headers={"api-key": "nope"})
    assert wrong_key.status_code == 401
    # the server's own key: `model` is ignored for its own model, as on a single-model endpoint
    assert httpx.post(f"{platform.url}/v1/chat/completions", json=body, headers={"api-key": API_KEY},
                      timeout=60).status_code == 200  # fmt: skip


def test_v1_models_lists_what_the_key_opens(platform: Platform) -> None:
    with openai.OpenAI(base_url=f"{platform.url}/v1", api_key=platform.deployment_key, max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["chat"]
        assert client.models.retrieve("chat").id == "chat"
    with openai.OpenAI(base_url=f"{platform.url}/v1", api_key=API_KEY, max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["tiny-llama"]
