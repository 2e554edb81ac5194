"""How the gateway reads an upstream's event stream (`RemoteChatClient.stream`), against real HTTP servers on
loopback that send chosen bytes: SSE's own line ends only (JSON strings carry U+2028, U+2029 and U+0085 raw, and
llama-server and vLLM write them so), CRLF and comments, clear errors for what is not an event stream, and a
server that dies after its headers (and a role chunk) but before any of the answer: the request goes to another."""

from __future__ import annotations

import asyncio
import json
import socket
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from llamafoundry.platform.upstream_client import RemoteChatClient, UpstreamError
from tests.platform.test_upstream_pools import http_server

TEXT = "line\u2028separator\u2029paragraph\x85next line"


def chunk(content: str) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


def sending(body: bytes, content_type: str = "text/event-stream") -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def read_stream(body: bytes, content_type: str = "text/event-stream") -> list[dict[str, Any]]:
    async def run(url: str) -> list[dict[str, Any]]:
        client = RemoteChatClient([url])
        try:
            chunks = await client.stream({"model": "m", "messages": []})
            return [c async for c in chunks]
        finally:
            await client.aclose()

    with http_server(sending(body, content_type)) as url:
        return asyncio.run(run(url))


def test_unicode_line_separators_inside_json_stay_in_their_event() -> None:
    body = b"data: " + chunk(TEXT) + b"\n\ndata: " + chunk("!") + b"\n\ndata: [DONE]\n\n"
    chunks = read_stream(body)
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == [TEXT, "!"]


def test_crlf_line_ends_comments_and_event_names_are_read_as_sse() -> None:
    body = b": keep-alive\r\n\r\nevent: message\r\ndata: " + chunk("a") + b"\r\n\r\ndata: [DONE]\r\n\r\n"
    assert [c["choices"][0]["delta"]["content"] for c in read_stream(body)] == ["a"]


def test_an_answer_that_is_not_an_event_stream_is_a_clear_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="did not answer with an event stream") as caught:
        read_stream(chunk("a"), content_type="application/json")
    assert caught.value.status == 502


def test_an_event_that_is_not_json_is_a_clear_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="not JSON") as caught:
        read_stream(b'data: {"choices": [\n\n')
    assert caught.value.status == 502


ROLE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}  # fmt: skip


def dying_after(events: list[bytes]) -> type[BaseHTTPRequestHandler]:
    """Answers 200 with a chunked event stream, sends `events`, then drops the connection (a killed server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in events:
                data = b"data: " + event + b"\n\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # no last chunk: the body is cut short

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def stream_over_two(first: type[BaseHTTPRequestHandler]) -> tuple[list[str], list[int]]:
    """The contents a stream yields when the first server (picked first: both idle) is `first` and the second
    answers; and each server's count of requests passed on to another."""
    answer = b"data: " + json.dumps(ROLE).encode() + b"\n\ndata: " + chunk("hello") + b"\n\ndata: [DONE]\n\n"

    async def run(urls: list[str]) -> tuple[list[str], list[int]]:
        client = RemoteChatClient(urls)
        try:
            chunks = await client.stream({"model": "m", "messages": []})
            contents = [c["choices"][0]["delta"].get("content") async for c in chunks]
            return contents, [u.num_retries for u in client.upstreams]
        finally:
            await client.aclose()

    with http_server(first) as dying, http_server(sending(answer)) as answering:
        return asyncio.run(run([dying, answering]))


def test_a_server_that_dies_before_any_of_the_answer_passes_the_stream_to_another() -> None:
    contents, retries = stream_over_two(dying_after([json.dumps(ROLE).encode()]))
    assert contents == ["", "hello"] and retries == [1, 0]  # one role chunk: the second server's


def test_a_server_that_dies_after_some_of_the_answer_ends_the_stream_with_an_error() -> None:
    with pytest.raises(UpstreamError, match="connection broke during the stream") as caught:
        stream_over_two(dying_after([json.dumps(ROLE).encode(), chunk("partial")]))
    assert caught.value.status is None  # the gateway says the answer is incomplete (503, retry)
