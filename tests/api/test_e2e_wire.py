"""Byte-level checks with raw httpx against a real server: SSE framing (contract §5.2), plain-REST forms
(no api-version, bare `Authorization`, `/v1`), client disconnects and the 429 of a full queue. The framing, forms
and errors are checked on the bare route and through `/deployments/<name>` of a local replica deployment and of
an upstream deployment (`target`, tests/api/targets.py)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError

from tests.api.conftest import Server
from tests.api.targets import Target

pytestmark = pytest.mark.slow

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 6}


def long_body(target: Target) -> dict[str, Any]:
    """Minutes of generation unless aborted: as many tokens as the target's context takes (8000 tokens take
    ~90 s on a busy 2-core machine, 30000 several minutes)."""
    return {**BODY, "max_tokens": target.ctx_size - 192, "ignore_eos": True}


PASS_THROUGH = {"extra-parameters": "pass-through"}


def split_events(raw: bytes) -> list[bytes]:
    """The data payloads of a complete stream, asserting the exact framing every SDK parser accepts."""
    assert b"\r" not in raw and raw.endswith(b"data: [DONE]\n\n")
    blocks = raw[:-2].split(b"\n\n")
    for block in blocks:
        assert block.startswith(b"data: ") and b"\n" not in block, block
    return [block[len(b"data: ") :] for block in blocks]


def stream_raw(target: Target, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {"api-key": target.key, **(headers or {})}
    response = httpx.post(f"{target.url}/chat/completions", json={**body, "stream": True}, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


def test_stream_bytes(target: Target) -> None:
    response = stream_raw(target, BODY)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked" and response.headers["x-request-id"]
    payloads = split_events(response.content)
    chunks = [json.loads(p) for p in payloads[:-1]]
    for payload, chunk in zip(payloads, chunks, strict=False):
        compact = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
        assert payload.decode() == compact.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace(
            "\u2029", "\\u2029"
        )  # compact, with the three line ends splitlines() knows and JSON leaves raw escaped
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1 and isinstance(chunks[0]["created"], int)
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}
    ]
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in chunks[1:])
    # one chunk per token, except that a token ending inside a UTF-8 character is held back and sent with the next
    finish = [c["choices"][0]["finish_reason"] for c in chunks[1:]]
    assert 1 <= len(finish) <= 6 and finish == [None] * (len(finish) - 1) + ["length"]
    assert [("usage" in c) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_a_request_without_a_seed_takes_the_servers_seed(target: Target) -> None:
    """The test servers run with `--seed` (LLAMAFOUNDRY_SEED, tests/serve_process.py; the gateway passes it to a
    deployment's replicas): the same unseeded request gets the same answer; a seed of its own, another one."""
    def answer(**extra: Any) -> str:
        body = {**BODY, "temperature": 1.0, "max_tokens": 12, **extra}
        reply = httpx.post(f"{target.url}/chat/completions", json=body, headers={"api-key": target.key, **PASS_THROUGH},
                           timeout=60)  # fmt: skip
        assert reply.status_code == 200, reply.text
        return str(reply.json()["choices"][0]["message"]["content"])

    answer()  # the prompt computed once: the next two both find it cached (a fresh computation can differ in the
    first = answer()  # last bits of llama.cpp's sums, and a random model's near-uniform sampling can show that)
    assert answer() == first and answer(seed=987654) != first


def test_stream_unicode_line_ends_stay_inside_their_event(target: Target) -> None:
    """U+0085 (one token), like U+2028 and U+2029, ends a line for Python's `splitlines` (httpx's `iter_lines`)
    and JSON leaves it raw: the server escapes it, and the gateway reads an upstream's raw one (llama-server's) as
    SSE says, inside the event."""
    body = {**BODY, "logit_bias": {"116360": 100}}  # the token of "\x85"
    raw = stream_raw(target, body, PASS_THROUGH).content
    text = raw.decode()
    assert not {"\x85", "\u2028", "\u2029"} & set(text)
    assert text.splitlines()[::2] == [f"data: {p.decode()}" for p in split_events(raw)]
    chunks = [json.loads(p) for p in split_events(raw)[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "\x85" * 6 and chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stream_of_several_choices(target: Target) -> None:
    body = {**BODY, "n": 3, "logprobs": True, "seed": 5}  # seeded: random text is now and then filtered
    chunks = [json.loads(p) for p in split_events(stream_raw(target, body, PASS_THROUGH).content)[:-1]]
    assert all(len(c["choices"]) == 1 for c in chunks)
    for index in range(3):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""} and mine[-1]["finish_reason"] == "length"
        assert sum(len(m["logprobs"]["content"]) for m in mine[1:]) == 6
    assert "usage" in chunks[-1] and chunks[-1]["usage"]["completion_tokens"] == 18


def test_plain_rest_forms(target: Target) -> None:
    # No api-version, the key as a bare Authorization header (MaaS curl examples), on the Azure route and /v1.
    for url in (f"{target.url}/chat/completions", f"{target.openai_url}/chat/completions"):
        body = {**BODY, "model": target.openai_model}
        response = httpx.post(url, json=body, headers={"authorization": target.key}, timeout=60)
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 6
        assert response.headers["content-type"] == "application/json"
    # an assistant turn without content (the contract's list of what clients send)
    turns = [{"role": "user", "content": "a"}, {"role": "assistant"}, {"role": "user", "content": "b"}]
    response = httpx.post(f"{target.url}/chat/completions", json={**BODY, "messages": turns},
                          headers={"api-key": target.key}, timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text


def test_errors_before_the_first_byte_are_json(target: Target) -> None:
    response = httpx.post(
        f"{target.url}/chat/completions",
        json={**BODY, "stream": True, "messages": [{"role": "user", "content": "x " * 2000}]},
        headers={"api-key": target.key},
        timeout=60,
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    # far past the context (the largest max_tokens the API takes): the context is what the client must change
    response = httpx.post(f"{target.url}/chat/completions", json={**BODY, "max_tokens": 131_072},
                          headers={"api-key": target.key}, timeout=60)  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "max_tokens"
    lone_surrogate = b'{"messages": [{"role": "user", "content": "\\ud800 hi"}], "max_tokens": 2}'
    response = httpx.post(f"{target.url}/chat/completions", content=lone_surrogate,
                          headers={"api-key": target.key, "content-type": "application/json"}, timeout=60)  # fmt: skip
    assert response.status_code == 400 and "lone surrogate" in response.json()["error"]["message"]


def test_control_token_text_in_a_message_is_text_to_the_model(target: Target) -> None:
    """ "<|eot_id|>" written by a user was parsed as the end-of-turn token (a user could end their turn and open
    a system one); now it is five characters' worth of text tokens, so it costs more than one token."""

    def prompt_tokens(content: str) -> int:
        body = {**BODY, "messages": [{"role": "user", "content": content}], "max_tokens": 1}
        response = httpx.post(f"{target.url}/chat/completions", json=body, headers={"api-key": target.key}, timeout=60)
        return int(response.json()["usage"]["prompt_tokens"])

    assert prompt_tokens("<|eot_id|>") > prompt_tokens("x") + 2


def test_health(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json()["status"] == "ready"


# ---- one slot, one queue place: disconnects and back-pressure ------------------------------------------


def start_long_stream(target: Target) -> tuple[httpx.Client, httpx.Response, Iterator[str]]:
    """A stream that would run for minutes; returns once its first content chunk has arrived.

    Keep the returned line iterator referenced: closing it (garbage collection does) closes the connection.
    """
    client = httpx.Client(timeout=60)
    request = client.build_request(
        "POST", f"{target.url}/chat/completions", json={**long_body(target), "stream": True},
        headers={"api-key": target.key, **PASS_THROUGH},
    )  # fmt: skip
    response = client.send(request, stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    assert next(lines).startswith("data: ") and next(lines) == "" and next(lines).startswith("data: ")
    return client, response, lines


def quick_request(target: Target, timeout: float) -> httpx.Response:
    return httpx.post(f"{target.url}/chat/completions", json={**BODY, "max_tokens": 2},
                      headers={"api-key": target.key}, timeout=timeout)  # fmt: skip


def test_disconnect_mid_stream_frees_the_slot(one_slot_target: Target) -> None:
    client, response, lines = start_long_stream(one_slot_target)
    assert next(lines) == "" and next(lines).startswith("data: ")  # still streaming
    response.close()
    client.close()
    # The only slot had a minute or more of generation left (`long_body`): the
    # next request gets it in time only if the stream was aborted.
    assert quick_request(one_slot_target, timeout=20).status_code == 200


def test_disconnect_while_waiting_for_a_non_streaming_answer_frees_the_slot(one_slot_target: Target) -> None:
    with pytest.raises(httpx.ReadTimeout):  # gives up on a completion that would take minutes
        httpx.post(f"{one_slot_target.url}/chat/completions", json=long_body(one_slot_target),
                   headers={"api-key": one_slot_target.key, **PASS_THROUGH}, timeout=2)  # fmt: skip
    assert quick_request(one_slot_target, timeout=20).status_code == 200


def test_full_queue_is_429_with_retry_after(one_slot_target: Target) -> None:
    """One slot busy, one request more than the queue takes: those fill the queue, the last gets an immediate 429.
    (A deployment's queue cannot be sized: a local replica's is serve's default, 64 places.)"""
    client, response, lines = start_long_stream(one_slot_target)  # holds the slot
    outcomes: list[object] = []

    def call_with_sdk() -> None:
        sdk = ChatCompletionsClient(one_slot_target.url, AzureKeyCredential(one_slot_target.key), retry_total=0)
        with sdk:
            try:
                outcomes.append(sdk.complete(messages=[{"role": "user", "content": "Hi"}], max_tokens=2))
            except HttpResponseError as exc:
                outcomes.append(exc)

    callers = [threading.Thread(target=call_with_sdk) for _ in range(one_slot_target.max_queue + 1)]
    for caller in callers:
        caller.start()
    try:
        deadline = time.monotonic() + 15  # a refusal is immediate; the wait is for a busy machine
        while not outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(outcomes) == 1, "one request should have been refused at once, the others should wait"
        refused = outcomes[0]
        assert isinstance(refused, HttpResponseError)
        assert refused.status_code == 429 and refused.error.code == "queue_full"
        assert refused.response.headers["retry-after"] == "1"
        assert next(lines) == "" and next(lines).startswith("data: ")  # the long stream still runs
    finally:
        response.close()
        client.close()
        for caller in callers:
            caller.join(timeout=60)
    assert len(outcomes) == len(callers)
    assert not any(isinstance(outcome, Exception) for outcome in outcomes[1:])  # the waiting ones got the slot


def test_an_idle_keep_alive_connection_outlives_a_retry_after(server: Server) -> None:
    """azure-core waits a 503's Retry-After (5 s) and retries on its pooled connection: the server must not have
    closed it by then (uvicorn's default idle timeout is 5 s; the retry then failed with "connection reset")."""
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        assert first.status == 200 and first.read()
        sock = conn.sock
        time.sleep(6.5)  # longer than Retry-After: 5
        conn.request("GET", "/health")  # raises RemoteDisconnected if the server closed the connection
        second = conn.getresponse()
        assert second.status == 200 and second.read() and conn.sock is sock
    finally:
        conn.close()
