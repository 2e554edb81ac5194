"""`deploy create --upstream` against llama.cpp's own `llama-server` (a real upstream, not another llamafoundry):
what the API defines holds through `/deployments/<name>` with real SDK clients, and a pool of two llama-servers
keeps answering when one is killed under load."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential

from tests.api.deployment_fixtures import Gateway, cli_json, start_gateway, wait_for
from tests.api.llama_server_fixtures import LlamaServer, start_llama_server
from tests.serve_process import free_port

pytestmark = pytest.mark.slow

MODEL = "Meta-Llama-3.1-8B-Instruct"
PASS_THROUGH = {"extra-parameters": "pass-through"}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather.", "parameters": CITY}}
# A forced call as llama-server takes it: "required" (it ignores a named tool_choice object, with a warning). Its
# grammar lets text come before the call; a bias towards "{" (token 90) starts the random-weights model on it.
FORCED: dict[str, Any] = {"tool_choice": "required", "logit_bias": {"90": 10}, "temperature": 0}


@dataclass
class Setup:
    gateway: Gateway
    keys: dict[str, str]
    single: LlamaServer
    pool: list[LlamaServer] = field(default_factory=list)


@pytest.fixture(scope="module")
def setup(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    logs = tmp_path_factory.mktemp("llama-servers")
    servers: list[LlamaServer] = []
    try:
        servers += [start_llama_server(tiny_model_path, logs) for _ in range(3)]
        home = tmp_path_factory.mktemp("llama-upstream-home")
        dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]  # nothing listens there
        specs = {
            "llama": ["--model", MODEL, "--upstream", servers[0].url],
            "pool": ["--model", "Llama-3.2-1B-Instruct", "--type", "managed", "--upstream", servers[1].url,
                     "--upstream", servers[2].url],
            "down": ["--model", "Llama-3.2-3B-Instruct", "--type", "managed", "--upstream", ",".join(dead)],
        }  # fmt: skip
        keys = {name: cli_json(home, "deploy", "create", name, *args)["primary_key"] for name, args in specs.items()}
        gateway = start_gateway(home, tiny_model_path, "--no-default")
        yield Setup(gateway, keys, servers[0], servers[1:])
        gateway.stop()
    finally:  # a failed setup leaves no server behind
        for server in servers:
            server.stop()


def sdk(setup: Setup, name: str = "llama") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{setup.gateway.url}/deployments/{name}", api_key=setup.keys[name], max_retries=0,
                         default_headers=PASS_THROUGH)  # fmt: skip


def test_chat_and_usage_match_llama_server(setup: Setup) -> None:
    azure = ChatCompletionsClient(f"{setup.gateway.url}/deployments/llama", AzureKeyCredential(setup.keys["llama"]))
    response = azure.complete(messages=[UserMessage("Hi!")], max_tokens=8, model_extras={"ignore_eos": True})
    assert response.model == MODEL and response.choices[0].finish_reason == "length"
    assert isinstance(response.choices[0].message.content, str)
    direct = httpx.post(f"{setup.single.url}/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8, "ignore_eos": True}).json()  # fmt: skip
    assert response.usage.prompt_tokens == direct["usage"]["prompt_tokens"]  # llama-server's count, not ours
    assert response.usage.completion_tokens == 8 and response.usage.total_tokens == direct["usage"]["total_tokens"]


def test_streaming_with_usage(setup: Setup) -> None:
    chunks = list(sdk(setup).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi!"}], max_tokens=12, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text and len(finals) == 1 and finals[0].choices[0].finish_reason == "length"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens == 12 and usage[-1].prompt_tokens > 0


# llama-server's JSON grammar allows whitespace between tokens: a random model writes `{ "city":` on some CPUs
STARTS_WITH_CITY = re.compile(r'\{\s*"city"\s*:')


def test_forced_tool_call(setup: Setup) -> None:
    response = sdk(setup).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "The weather in Paris?"}], tools=[WEATHER],  # type: ignore[list-item]
        max_tokens=40, **FORCED)  # fmt: skip
    calls = response.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather" and calls[0].id  # type: ignore[union-attr]
    assert STARTS_WITH_CITY.match(calls[0].function.arguments)  # type: ignore[union-attr]


def test_forced_tool_call_streamed(setup: Setup) -> None:
    chunks = list(sdk(setup).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "The weather in Paris?"}], tools=[WEATHER],  # type: ignore[list-item]
        max_tokens=40, stream=True, **FORCED))  # fmt: skip
    deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    names = [d.function.name for d in deltas if d.function and d.function.name]
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert names == ["get_weather"] and STARTS_WITH_CITY.match(arguments)
    assert any(d.id for d in deltas)


def test_json_schema_and_json_object(setup: Setup) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}  # fmt: skip
    answer = sdk(setup).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is it ok?"}], max_tokens=100,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})  # fmt: skip
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content or "")["ok"], bool)  # llama-server's grammar
    free = sdk(setup).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "JSON please"}], max_tokens=30,
        response_format={"type": "json_object"})  # fmt: skip
    assert (free.choices[0].message.content or "").lstrip().startswith("{")  # random weights: may stop at length


def test_logprobs(setup: Setup) -> None:
    answer = sdk(setup).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=4, logprobs=True, top_logprobs=2)  # fmt: skip
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == answer.usage.completion_tokens  # type: ignore[union-attr]
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert "".join(t.token for t in content) == answer.choices[0].message.content


def test_no_upstream_up_is_a_503_naming_each(setup: Setup) -> None:
    url = f"{setup.gateway.url}/deployments/down/chat/completions"
    answer = httpx.post(url, headers={"api-key": setup.keys["down"]}, timeout=60,
                        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})  # fmt: skip
    assert answer.status_code == 503, answer.text
    message = answer.json()["error"]["message"]
    dead = cli_json(setup.gateway.home, "deploy", "show", "down")["upstream"]
    assert "None of the upstream servers of deployment 'down'" in message and all(url in message for url in dead)


def test_management_api_changes_the_servers_of_a_deployment(setup: Setup) -> None:
    admin = cli_json(setup.gateway.home, "deploy", "admin-key", "--regenerate")["admin_key"]
    url = f"{setup.gateway.url}/management/deployments/down"
    wrong = httpx.patch(url, headers={"api-key": admin}, json={"upstream": [1]}, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "upstream"
    changed = httpx.patch(url, headers={"api-key": admin}, json={"upstream": [setup.single.url]}, timeout=10)
    assert changed.status_code == 200 and changed.json()["upstream"] == setup.single.url
    chat = f"{setup.gateway.url}/deployments/down/chat/completions"

    def answers() -> bool:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        return httpx.post(chat, headers={"api-key": setup.keys["down"]}, json=body, timeout=60).status_code == 200

    wait_for(answers, 10, "the deployment forwarding to its new upstream")


def metric(setup: Setup, name: str, upstream: LlamaServer) -> float:
    text = httpx.get(f"{setup.gateway.url}/metrics", timeout=10).text
    found = re.search(rf'^llamafoundry_{name}{{deployment="pool",upstream="{re.escape(upstream.url)}"}} (\S+)$', text,
                      re.MULTILINE)  # fmt: skip
    assert found is not None, f"no {name} of {upstream.url} in /metrics"
    return float(found.group(1))


@dataclass
class Outcome:
    stream: bool
    completed: bool
    content_chunks: int = 0  # streams: chunks with text the client had before it ended
    error: str | None = None


async def one_request(setup: Setup, client: httpx.AsyncClient, stream: bool) -> Outcome:
    body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 300, "ignore_eos": True,
            "stream": stream}  # fmt: skip
    headers = {"api-key": setup.keys["pool"], **PASS_THROUGH}
    url = f"{setup.gateway.url}/deployments/pool/chat/completions"
    if not stream:
        answer = await client.post(url, json=body, headers=headers)
        ok = answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 300
        return Outcome(False, ok, error=None if ok else f"{answer.status_code}: {answer.text[:300]}")
    outcome = Outcome(True, False)
    async with client.stream("POST", url, json=body, headers=headers) as answer:
        if answer.status_code != 200:
            outcome.error = f"{answer.status_code}: {(await answer.aread())[:300]!r}"
            return outcome
        async for line in answer.aiter_lines():
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                outcome.completed = outcome.error is None
            if not line.startswith("data: ") or data == "[DONE]":
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                outcome.error = chunk["error"]["message"]
            elif any(c["delta"].get("content") for c in chunk.get("choices") or []):
                outcome.content_chunks += 1
    return outcome


def test_pool_health_in_metrics_and_deploy_show(setup: Setup) -> None:
    first, second = setup.pool
    wait_for(lambda: metric(setup, "upstream_up", first) == 1 and metric(setup, "upstream_up", second) == 1, 10,
             "both upstreams reported up")  # fmt: skip
    wait_for(lambda: bool(_upstreams(setup)), 10, "the pool's runtime report")
    assert [u["url"] for u in _upstreams(setup)] == [first.url, second.url]
    assert all(u["up"] and u["last_error"] is None for u in _upstreams(setup))


def _upstreams(setup: Setup) -> list[dict[str, Any]]:
    runtime = cli_json(setup.gateway.home, "deploy", "show", "pool")["runtime"]
    return runtime[0].get("upstreams") or [] if runtime else []


def test_pool_survives_an_upstream_killed_under_load(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    """16 requests (half streamed) over two llama-servers; one is killed while both are busy. Every request it had
    not begun answering goes to the other server; only a stream that had begun ends with an error."""
    doomed, survivor = setup.pool
    num_requests = 16

    async def run() -> list[Outcome]:
        async with httpx.AsyncClient(timeout=120) as client:
            tasks = [asyncio.create_task(one_request(setup, client, stream=i % 2 == 1)) for i in range(num_requests)]
            deadline = asyncio.get_running_loop().time() + 60
            while await asyncio.to_thread(metric, setup, "upstream_in_flight", doomed) < 4:  # busy, some queued
                assert asyncio.get_running_loop().time() < deadline, "the load never reached the doomed server"
                await asyncio.sleep(0.02)
            doomed.kill()
            return await asyncio.gather(*tasks)

    outcomes = asyncio.run(run())
    completed = [o for o in outcomes if o.completed]
    failed = [o for o in outcomes if not o.completed]
    retries = metric(setup, "upstream_retries_total", doomed)
    with capsys.disabled():
        print(f"\npool kill: sent {num_requests}, completed {len(completed)}, failed {len(failed)} (streams that had "
              f"begun: {sum(1 for o in failed if o.stream and o.content_chunks)}), retried {retries:.0f}")  # fmt: skip
    assert len(completed) + len(failed) == num_requests
    assert all(not o.stream for o in outcomes[::2]) and all(o.completed for o in outcomes if not o.stream), failed
    for outcome in failed:  # only streams that had already sent text, ending with the clear broken-stream error
        assert outcome.stream and outcome.content_chunks > 0, outcome
        assert "stopped answering during the stream" in (outcome.error or ""), outcome
    assert retries >= 1  # the requests queued on the killed server went to the other one
    assert len(failed) <= 2  # at most the streams in the killed server's 2 slots
    wait_for(lambda: metric(setup, "upstream_up", doomed) == 0, 10, "the killed upstream reported down")
    assert metric(setup, "upstream_up", survivor) == 1
    after = httpx.post(f"{setup.gateway.url}/deployments/pool/chat/completions", timeout=60,
                       headers={"api-key": setup.keys["pool"]},
                       json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})  # fmt: skip
    assert after.status_code == 200, after.text
    wait_for(lambda: any(not u["up"] for u in _upstreams(setup)), 10, "deploy show reporting the killed upstream")
    shown = {u["url"]: u for u in _upstreams(setup)}
    assert not shown[doomed.url]["up"] and shown[doomed.url]["last_error"] and shown[survivor.url]["up"]
