"""Prompt-lookup speculative decoding through a real server and the real SDK: the same streamed answer as a
server with it off, several tokens per streamed update where drafts were kept, and its counters in /metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Server, module_server

pytestmark = pytest.mark.slow

COPY = "Repeat exactly: the quick brown fox jumps over the lazy dog, the quick brown fox jumps over the lazy dog."


plain_server = module_server("--ctx-size", "1024", "--speculative-tokens", "0")


def stream_answer(server: Server) -> list[str]:
    """The content of each streamed update of a greedy 64-token answer (the SDK's own stream parser)."""
    client = ChatCompletionsClient(server.url, AzureKeyCredential(server.key))
    updates = client.complete(
        messages=[UserMessage(COPY)],
        max_tokens=64,
        temperature=0,
        stream=True,
        model_extras={"ignore_eos": True},
    )
    return [u.choices[0].delta.content for u in updates if u.choices and u.choices[0].delta.content]


def speculative_counts(server: Server) -> tuple[float, float]:
    text = httpx.get(f"{server.url}/metrics", headers={"api-key": server.key}).text
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return found["llamafoundry_speculative_draft_tokens_total"], found["llamafoundry_speculative_accepted_tokens_total"]


def test_same_answer_with_drafts_kept_and_counted(server: Server, plain_server: Server) -> None:
    drafted_before, accepted_before = speculative_counts(server)
    fast = stream_answer(server)
    plain = stream_answer(plain_server)
    assert "".join(fast) == "".join(plain) and len(plain) > 40  # the tiny model's greedy answer loops
    drafted, accepted = speculative_counts(server)
    assert drafted > drafted_before and accepted > accepted_before
    assert len(fast) < len(plain)  # kept drafts arrive together: fewer, longer updates
    assert speculative_counts(plain_server) == (0, 0)


async def _stream_text(client: httpx.AsyncClient, server: Server, prompt: str, n: int, stop_after: int) -> Any:
    """The texts by choice of a greedy streamed answer, or None when the client left after `stop_after` chunks."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 48, "temperature": 0, "n": n,
            "ignore_eos": True, "stream": True}  # fmt: skip
    headers = {"api-key": server.key, "extra-parameters": "pass-through"}
    texts: dict[int, str] = {}
    async with client.stream("POST", f"{server.url}/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        num_chunks = 0
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[len("data: ") :])["choices"]:
                    texts[choice["index"]] = texts.get(choice["index"], "") + choice["delta"]["content"]
                num_chunks += 1
                if num_chunks == stop_after:
                    return None  # leaving the block closes the connection: the server aborts the request
    return texts


def test_concurrent_answers_with_disconnects_are_those_of_a_server_without_drafts(
    server: Server, plain_server: Server
) -> None:
    prompts = [f"Repeat exactly, item {i}: " + " ".join(["alpha beta gamma delta"] * (1 + i % 3)) for i in range(6)]

    async def run() -> tuple[list[Any], list[Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            jobs = [  # every 4th asks for two choices, every 3rd leaves after 3 chunks
                _stream_text(client, server, prompts[i % 6], 2 if i % 4 == 0 else 1, 3 if i % 3 == 2 else 0)
                for i in range(18)
            ]
            answers = await asyncio.gather(*jobs)
            alone = [await _stream_text(client, plain_server, prompt, 1, 0) for prompt in prompts]
        return answers, alone

    drafted_before, _ = speculative_counts(server)
    answers, alone = asyncio.run(run())
    assert speculative_counts(server)[0] > drafted_before
    completed = [(i, a) for i, a in enumerate(answers) if a is not None]
    assert len(completed) == 12
    for i, texts in completed:
        assert set(texts.values()) == {alone[i % 6][0]}, i  # each choice, alone or among the others
    assert httpx.get(f"{server.url}/health").status_code == 200
