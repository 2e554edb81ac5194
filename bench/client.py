"""The load generator: streams chat completions from any OpenAI-style or Azure-style endpoint.

Load shapes as in `vllm bench serve`: a fixed number of concurrent clients (each runs one conversation after
another), or Poisson arrivals at a request rate (optionally capped by a concurrency limit).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from bench.metrics import RequestResult, Summary, summarize
from bench.workloads import Conversation, Turn


@dataclass
class Endpoint:
    """Where and how to send requests.

    Args:
        base_url: server root, e.g. `http://127.0.0.1:8000` (Azure style may include `/models` or a deployment).
        style: `openai` (POST base/v1/chat/completions, Bearer key) or `azure` (POST base/chat/completions,
            `api-key` header, `extra-parameters: pass-through` so Llama extras such as ignore_eos apply).
        api_key: sent when set.
        model: the `model` field (some servers require one).
        extra_body: merged into every request body (e.g. `{"ignore_eos": true}`).
        extra_headers: added to every request.
    """

    base_url: str
    style: str = "openai"
    api_key: str | None = None
    model: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        root = self.base_url.rstrip("/")
        return f"{root}/v1/chat/completions" if self.style == "openai" else f"{root}/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            if self.style == "openai":
                headers["authorization"] = f"Bearer {self.api_key}"
            else:
                headers["api-key"] = self.api_key
        if self.style == "azure":
            headers["extra-parameters"] = "pass-through"
        return headers | self.extra_headers

    def body(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        if self.model:
            body["model"] = self.model
        return body | self.extra_body


async def stream_chat(
    session: aiohttp.ClientSession, endpoint: Endpoint, messages: list[dict[str, str]], max_tokens: int
) -> RequestResult:
    """Send one streaming request and time it. Never raises: failures come back with ok=False."""
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start)
    text: list[str] = []
    last = start
    finish_reason = None
    num_chunks = 0
    try:
        async with session.post(
            endpoint.url, json=endpoint.body(messages, max_tokens), headers=endpoint.headers()
        ) as r:
            if r.status != 200:
                result.error = f"HTTP {r.status}: {(await r.text())[:200]}"
                return result
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = f"stream error: {str(chunk['error'])[:200]}"
                    return result
                now = time.perf_counter()
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if num_chunks == 0:
                            result.ttft = now - start
                        else:
                            result.itl.append(now - last)
                        last = now
                        num_chunks += 1
                        text.append(content)
                    finish_reason = choice.get("finish_reason") or finish_reason
                usage = chunk.get("usage")
                if usage:
                    result.prompt_tokens = usage.get("prompt_tokens") or 0
                    result.output_tokens = usage.get("completion_tokens") or 0
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    result.e2el = time.perf_counter() - start
    if finish_reason is None:
        result.error = "the stream ended without a finish_reason (cut off)"
        return result
    if not result.output_tokens:  # no usage in the stream: with ignore_eos a "length" finish means max_tokens
        result.output_tokens = max_tokens if finish_reason == "length" else num_chunks
    if num_chunks == 0:
        result.ttft = result.e2el
    result.output_text = "".join(text)
    result.ok = True
    return result


async def _run_conversation(
    session: aiohttp.ClientSession, endpoint: Endpoint, conv: Conversation, results: list[RequestResult]
) -> None:
    for turn in conv.turns:
        result = await stream_chat(session, endpoint, conv.messages_for(turn), turn.max_tokens)
        results.append(result)
        if not result.ok:
            return
        conv.history += [
            {"role": "user", "content": turn.user_text},
            {"role": "assistant", "content": result.output_text},
        ]


async def run_level(
    endpoint: Endpoint,
    conversations: list[Conversation],
    concurrency: int,
    request_rate: float = float("inf"),
    seed: int = 0,
    timeout_s: float = 1800.0,
) -> tuple[Summary, list[RequestResult]]:
    """Run every conversation with at most `concurrency` in flight; Poisson starts when request_rate is finite.

    Returns:
        the level's summary and its per-request results.
    """
    results: list[RequestResult] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
    # A fresh connection per request: servers differ in how long they keep idle connections, and a reused one
    # that the server has just closed fails the request (loopback connects cost well under a millisecond).
    connector = aiohttp.TCPConnector(limit=max(concurrency, 1) + 4, force_close=True)
    limit = asyncio.Semaphore(max(concurrency, 1))
    rng = np.random.default_rng(seed)

    async def one(conv: Conversation) -> None:
        async with limit:
            await _run_conversation(session, endpoint, conv, results)

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        tasks = []
        for conv in conversations:
            tasks.append(asyncio.create_task(one(conv)))
            if np.isfinite(request_rate):
                await asyncio.sleep(rng.exponential(1.0 / request_rate))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    return summarize(results, duration), results


async def warm_up(endpoint: Endpoint, max_tokens: int = 4) -> RequestResult:
    """One short request, so that first-call costs (page faults of the weights, lazy init) are not measured."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        return await stream_chat(session, endpoint, [{"role": "user", "content": "Hello there."}], max_tokens)


def single_turn(text: str, max_tokens: int) -> Conversation:
    return Conversation(None, [Turn(text, max_tokens)])
