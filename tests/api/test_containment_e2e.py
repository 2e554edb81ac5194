"""One request cannot end anyone else's, on a real server: a denormal temperature (which overflowed the sampler,
and the engine then failed every running request) beside a stream that must finish normally; and, on a server
whose sampler has a fault injected for one seed, that request's own clear error beside the same stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.slow

PASS_THROUGH = {"extra-parameters": "pass-through"}
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


async def read_stream(client: httpx.AsyncClient, server: Server, started: asyncio.Event) -> tuple[list[Any], float]:
    """A long stream's events (the text of the last one, [DONE], kept as is) and when it ended."""
    body = {"messages": MESSAGES, "max_tokens": 600, "ignore_eos": True, "stream": True, "temperature": 0.8}
    events: list[Any] = []
    async with client.stream("POST", "/chat/completions", json=body, headers=PASS_THROUGH) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
                started.set()
    return events, time.monotonic()


FAULTY_SEED = 666
# Loaded by the server process (PYTHONPATH): its sampler raises at the third token of requests seeded FAULTY_SEED.
SAMPLER_FAULT = f"""
import llamafoundry.engine.sampler as sampler

_init, _sample = sampler.TokenSampler.__init__, sampler.TokenSampler.sample


def __init__(self, params, seed, *args, **kwargs):
    _init(self, params, seed, *args, **kwargs)
    self.is_faulty = params.seed == {FAULTY_SEED}


def sample(self, logits):
    if self.is_faulty and self._num_generated >= 2:
        raise IndexError("injected sampler fault")
    return _sample(self, logits)


sampler.TokenSampler.__init__, sampler.TokenSampler.sample = __init__, sample
"""


@pytest.fixture(scope="module")
def faulty_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(SAMPLER_FAULT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(site))
        running = start_server(tiny_model_path, site, "--ctx-size", "1024", "--parallel", "4")
    yield running
    stop_server(running)


async def denormal_requests(client: httpx.AsyncClient, started: asyncio.Event) -> tuple[list[httpx.Response], float]:
    await started.wait()
    answers = []
    for path, body in [
        ("/chat/completions", {"messages": MESSAGES, "max_tokens": 8, "temperature": 1e-320}),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 8, "temperature": 5e-324, "top_p": 0.5}),
        ("/v1/completions", {"prompt": "Once upon", "max_tokens": 8, "temperature": 1e-39}),
        ("/chat/completions", {"messages": MESSAGES, "max_tokens": 8, "temperature": 0}),
    ]:
        answers.append(await client.post(path, json=body))
    stream = {"messages": MESSAGES, "max_tokens": 8, "temperature": 1e-320, "stream": True}
    answers.append(await client.post("/chat/completions", json=stream))
    return answers, time.monotonic()


async def faulty_requests(client: httpx.AsyncClient, started: asyncio.Event) -> tuple[list[httpx.Response], float]:
    await started.wait()
    body = {"messages": MESSAGES, "max_tokens": 8, "seed": FAULTY_SEED}
    answers = [await client.post("/chat/completions", json=body)]
    answers.append(await client.post("/chat/completions", json={**body, "stream": True}))
    answers.append(await client.post("/chat/completions", json={**body, "seed": 1}))
    return answers, time.monotonic()


def beside_a_stream(server: Server, requests: Any) -> tuple[list[httpx.Response], float]:
    """Run `requests(client, started)` while a long stream runs; check that the stream finished normally after
    them. Returns their answers."""

    async def scenario() -> tuple[list[Any], float, list[httpx.Response], float]:
        headers = {"api-key": server.key}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
            started = asyncio.Event()
            (events, stream_end), (answers, end) = await asyncio.gather(
                read_stream(client, server, started), requests(client, started)
            )
        return events, stream_end, answers, end

    events, stream_end, answers, end = asyncio.run(scenario())
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1]), events[-1]
    assert events[-2]["choices"][0]["finish_reason"] == "length" and events[-2]["usage"]["completion_tokens"] == 600
    assert end < stream_end, "the stream ended before the other requests ran beside it"
    return answers, end


def test_a_denormal_temperature_is_greedy_and_a_concurrent_stream_finishes(server: Server) -> None:
    answers, _ = beside_a_stream(server, denormal_requests)
    for answer in answers:
        assert answer.status_code == 200, answer.text
    greedy = answers[3].json()["choices"][0]["message"]["content"]
    assert answers[0].json()["choices"][0]["message"]["content"] == greedy  # below 1e-5 a temperature is greedy
    assert answers[-1].text.rstrip().endswith("data: [DONE]")


def test_a_request_whose_sampling_fails_gets_its_own_error_and_a_concurrent_stream_finishes(
    faulty_server: Server,
) -> None:
    (failed, failed_stream, other), _ = beside_a_stream(faulty_server, faulty_requests)
    error = failed.json()["error"]
    assert failed.status_code == 500 and error["code"] == "generation_failed"
    assert "IndexError: injected sampler fault" in error["message"]
    assert failed_stream.status_code == 200 and "[DONE]" not in failed_stream.text
    last = json.loads(failed_stream.text.strip().split("\n\n")[-1][len("data: ") :])
    assert last["error"]["code"] == "generation_failed" and "injected sampler fault" in last["error"]["message"]
    assert other.status_code == 200 and other.json()["usage"]["completion_tokens"] == 8
