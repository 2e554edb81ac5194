"""Stream keep-alives: a stream with no output for `--stream-keepalive` seconds (a long prompt, a wait for a free
slot) gets empty-content chunks, which every SDK parser takes, instead of going silent until proxies drop it."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential

from llamafoundry.api.streaming import chat_events
from llamafoundry.protocol.render import ChunkRenderer
from llamafoundry.service.types import ChatRequest, GenerationOptions
from tests.api.conftest import Server, module_server
from tests.api.fakes import FakeChatService

KEEPALIVE = {"index": 0, "delta": {"content": ""}, "finish_reason": None, "logprobs": None}


def stream_chunks(delay_s: float, keepalive_s: float | None) -> list[Any]:
    """The parsed events of a fake five-word stream whose every update comes `delay_s` after the last."""

    async def run() -> list[bytes]:
        service = FakeChatService(delay_s=delay_s)
        request = ChatRequest(messages=[], options=GenerationOptions(max_tokens=5))
        stream = await service.stream(await service.prepare(request))
        renderer = ChunkRenderer("fake-llama")
        return [event async for event in chat_events(stream, renderer, 1, keepalive_s=keepalive_s)]

    events = asyncio.run(run())
    assert events[-1] == b"data: [DONE]\n\n"
    return [json.loads(e[len(b"data: ") :]) for e in events[:-1]]


def test_a_silent_stream_gets_empty_chunks_and_loses_nothing() -> None:
    chunks = stream_chunks(delay_s=0.25, keepalive_s=0.05)
    choices = [c["choices"][0] for c in chunks]
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
    keepalives = [i for i, choice in enumerate(choices) if choice == KEEPALIVE]
    assert len(keepalives) >= 5 and keepalives[0] == 1  # several before the first word, more between words
    assert "".join(choice["delta"]["content"] for choice in choices) == "Hello there, friend."
    assert choices[-1]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 5
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1


def test_no_empty_chunks_while_output_flows_or_when_turned_off() -> None:
    for keepalive_s in (10.0, None):
        chunks = stream_chunks(delay_s=0.01, keepalive_s=keepalive_s)
        assert KEEPALIVE not in [c["choices"][0] for c in chunks[1:-1]]


# ---- a real server and the real SDK --------------------------------------------------------------


one_slot_server = module_server("--parallel", "1", "--ctx-size", "8192", "--stream-keepalive", "0.2")


def wait_behind_a_held_slot(server: Server) -> tuple[list[Any], bytes | None]:
    """The Azure SDK's updates of a stream that waits for the one slot while another stream holds it, and the last
    bytes of the holding stream if it ended before the waiting one had three empty chunks (None: it held)."""
    busy, release = threading.Event(), threading.Event()
    ended_early: list[bytes] = []

    def hold_the_slot() -> None:  # a long answer, given up once the waiting stream has had its keep-alives
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8000, "stream": True,
                "ignore_eos": True}  # fmt: skip
        headers = {"api-key": server.key, "extra-parameters": "pass-through"}
        last = b""
        with httpx.stream("POST", f"{server.url}/chat/completions", json=body, headers=headers, timeout=60) as r:
            for chunk in r.iter_bytes():
                last = chunk
                busy.set()
                if release.wait(0):
                    return
        busy.set()
        ended_early.append(last[-300:])

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    assert busy.wait(30)
    client = ChatCompletionsClient(server.url, AzureKeyCredential(server.key))
    # The slot is held until three empty chunks have come (or 20 s have passed, then the caller's count fails):
    # the test waits on what it checks, not on how fast this machine decodes.
    timer = threading.Timer(20.0, release.set)
    timer.start()
    updates = []
    try:
        for update in client.complete(messages=[UserMessage("Hello")], max_tokens=8, stream=True):
            updates.append(update)
            if sum(1 for u in updates[1:] if u.choices and u.choices[0].delta.content == "") >= 3:
                release.set()
    finally:
        release.set()
        timer.cancel()
        holder.join()
    return updates, ended_early[0] if ended_early else None


@pytest.mark.slow
def test_a_request_waiting_for_a_slot_streams_keepalives_the_sdk_reads(one_slot_server: Server) -> None:
    # The holding stream must hold: one that ended by itself (it never should; a CI run once saw the waiting
    # stream get its slot after two empty chunks) would make the count below measure the wrong thing, so the
    # scene is played again and the holder's last bytes are kept for the failure message.
    holder_ends = []
    for _ in range(3):
        updates, holder_end = wait_behind_a_held_slot(one_slot_server)
        if holder_end is None:
            break
        holder_ends.append(holder_end)
    assert holder_end is None, f"the holding stream ended by itself each time: {holder_ends}"
    assert updates[0].choices[0].delta.role == "assistant"
    later = [u.choices[0].delta for u in updates[1:]]
    assert all(d.role is None and d.content is not None for d in later)  # what the SDK's own tests check
    empty_before_text = next(i for i, d in enumerate(later) if d.content)
    assert empty_before_text >= 3  # the wait for the slot, one empty chunk per 0.2 s
    assert updates[-1].choices[0].finish_reason in ("stop", "length") and updates[-1].usage.completion_tokens > 0
