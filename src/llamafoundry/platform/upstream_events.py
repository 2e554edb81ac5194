"""Reading an upstream's answers: its event stream's chunks, and the errors it sends (in a body or mid-stream).

Split from upstream_client.py, which picks the server and sends the request; this module only reads what came
back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

import httpx
import httpx_sse


class UpstreamError(Exception):
    """The upstream answered with an error, or could not be reached (`status` None).

    Attributes:
        status: the upstream's HTTP status, or None when no answer came.
        message: the upstream's own error message when it sent one.
        param: the request field the upstream blamed, if it said.
        is_unsent: the request never reached the server (no connection).
        is_unanswered: no byte of an answer came (no connection, or one closed or reset first): the request may
            go to another server.
    """

    def __init__(
        self,
        status: int | None,
        message: str,
        param: str | None = None,
        is_unsent: bool = False,
        code: str | None = None,
        is_unanswered: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.is_unsent = is_unsent  # no connection was made
        self.is_unanswered = is_unanswered or is_unsent  # nothing came back: another server may take the request
        self.code = code  # the upstream's own error code (`generation_failed`, `context_length_exceeded`, ...)


async def event_chunks(response: httpx.Response, on_end: Callable[[], None]) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON chunks of an upstream's event stream, read as SSE says: lines end only at CR, LF or CRLF.
    (httpx's `aiter_lines` also splits at U+2028, U+2029 and U+0085, which JSON strings carry unescaped: model
    text with one of them broke the chunk in two.) `on_end` is called once the stream is over, however it ended
    (the balancer's count of requests in flight)."""
    try:
        async for event in httpx_sse.EventSource(response).aiter_sse():
            if not event.data:
                continue  # comments (keep-alives), event: or id: lines alone
            if event.data.strip() == "[DONE]":
                return
            yield _chunk_of(event.data)
    except httpx_sse.SSEError as exc:  # before TransportError, which it subclasses
        raise UpstreamError(502, f"The upstream server did not answer with an event stream: {exc}") from None
    except httpx.TransportError as exc:
        raise UpstreamError(None, f"the upstream connection broke during the stream ({exc})") from None
    finally:
        on_end()
        with contextlib.suppress(Exception):
            await response.aclose()


def says_something(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries any of the answer (text, a tool call, a finish, usage), not just the role."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if choice.get("text") or choice.get("finish_reason") or any(v for k, v in delta.items() if k != "role"):
            return True
    return bool(chunk.get("usage"))


def _chunk_of(data: str) -> dict[str, Any]:
    """One event's JSON: a chunk, or the error object a server sends in place of one."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        message = f"The upstream server sent an event that is not JSON ({exc}): {data[:200]!r}"
        raise UpstreamError(502, message) from None
    if not isinstance(chunk, dict):
        raise UpstreamError(502, f"The upstream server sent an event that is not a JSON object: {data[:200]!r}")
    if chunk.get("error") and not chunk.get("choices"):
        raise _stream_error(chunk["error"])
    return chunk


def _stream_error(error: Any) -> UpstreamError:
    """An error event in the stream: a server that says it is unavailable (503: shutting down, restarting) keeps
    that status; any other failure is the upstream's (502)."""
    message = error.get("message", "") if isinstance(error, dict) else str(error)
    status = error.get("status") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) and isinstance(error.get("code"), str) else None
    if status == 503:
        return UpstreamError(503, f"The upstream server became unavailable during the stream: {message}", code=code)
    return UpstreamError(502, f"The upstream server failed during the stream: {message}", code=code)


def error_from(status: int, content: bytes) -> UpstreamError:
    """The upstream's own message from an OpenAI, Azure or MaaS error body, when it has one."""
    message, param, code = content.decode(errors="replace")[:500], None, None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = json.loads(content)
        error = body.get("error", body)
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            param, code = error.get("param"), error.get("code")
        elif isinstance(error, str):
            message = error
    param = param if isinstance(param, str) else None
    return UpstreamError(status, message, param, code=code if isinstance(code, str) else None)
