"""Server-sent events in the one form every Azure SDK parser accepts.

`encode_event` is the only code that frames SSE bytes: `data: <compact JSON>\\n\\n`, `\\n` only, no comments,
no `event:`/`id:`/`retry:` lines, one line per event (compact JSON escapes newlines inside strings). The PY
SDK rejects CRLF, comments and multi-line data; the .NET SDK needs the blank line between events. U+2028, U+2029
and U+0085, which JSON leaves raw in strings, are written as `\\u` escapes: clients that read lines with Python's
`splitlines` rules (httpx's `iter_lines`, and the libraries built on it) end a line at each of them.

The Responses API is read by OpenAI clients only, which parse full SSE: its events carry an `event:` line as
OpenAI sends them, and its keep-alives are comments (`KEEPALIVE_COMMENT`), which OpenAI's parsers skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DONE = "[DONE]"
MEDIA_TYPE = "text/event-stream; charset=utf-8"


KEEPALIVE_COMMENT = b": keep-alive\n\n"  # for the Responses API's streams only (see above)
# Line ends by Python's `splitlines` that JSON does not escape (the others are control characters, escaped)
_UNICODE_LINE_ENDS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def encode_event(data: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    """One SSE event: `data: ` + compact JSON (or the literal `[DONE]`) + a blank line; with `event`, an
    `event:` line first (the Responses API's streams only)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if "\u2028" in text or "\u2029" in text or "\x85" in text:  # rare: `translate` costs ~10 us an event
        text = text.translate(_UNICODE_LINE_ENDS)
    if "\n" in text or "\r" in text or (event is not None and ("\n" in event or "\r" in event)):
        raise ValueError("an SSE line cannot contain a line break")
    name = b"event: " + event.encode() + b"\n" if event is not None else b""
    return name + b"data: " + text.encode() + b"\n\n"


class EventStreamResponse(Response):
    """An ASGI response that sends `events` (already framed by `encode_event`) as `text/event-stream`.

    It watches the connection while streaming: when the client disconnects, the event iterator is cancelled
    and closed at once (so its `finally` can abort generation), even if no event is due for a while. This
    does not depend on the server's ASGI spec version (Starlette only watches on < 2.4).
    """

    def __init__(self, events: AsyncGenerator[bytes, None], headers: Mapping[str, str] | None = None) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.media_type = MEDIA_TYPE
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.ensure_future(self._send_all(send))
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, watcher):
                task.cancel()
            await asyncio.gather(sender, watcher, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.events.aclose()
        failure = sender.exception() if sender.done() and not sender.cancelled() else None
        if failure is not None and not isinstance(failure, OSError):  # OSError: the client went away
            raise failure

    async def _send_all(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (after the request body, `receive` yields only this)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
