"""SSE framing: the one form every Azure SDK parser accepts (contract §5.2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llamafoundry.api.sse import DONE, EventStreamResponse, encode_event


def test_event_is_one_compact_data_line_and_a_blank_line() -> None:
    event = encode_event({"choices": [{"delta": {"content": "a b"}}], "id": "x"})
    assert event == b'data: {"choices":[{"delta":{"content":"a b"}}],"id":"x"}\n\n'


def test_line_breaks_inside_strings_stay_escaped() -> None:
    event = encode_event({"content": "line1\nline2\r\n"})
    assert event.count(b"\n") == 2 and b"\r" not in event
    assert json.loads(event[len(b"data: ") : -2]) == {"content": "line1\nline2\r\n"}


def test_non_ascii_text_is_utf8() -> None:
    assert encode_event({"content": "héllo ✓"}) == 'data: {"content":"héllo ✓"}\n\n'.encode()


def test_done_marker() -> None:
    assert encode_event(DONE) == b"data: [DONE]\n\n"


def test_raw_text_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_event("two\nlines")


def test_a_disconnect_closes_the_event_iterator_at_once() -> None:
    """No event is due for an hour; the iterator's cleanup (which aborts generation) must still run now."""
    cleaned_up = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def events() -> AsyncIterator[bytes]:
        try:
            yield encode_event({"n": 1})
            await asyncio.sleep(3600)
            yield encode_event({"n": 2})
        finally:
            cleaned_up.set()

    async def receive() -> dict[str, Any]:
        while not any(m.get("body") for m in sent):
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await asyncio.wait_for(EventStreamResponse(events())({"type": "http"}, receive, send), timeout=5)

    asyncio.run(run())
    assert cleaned_up.is_set()
    assert [m.get("body") for m in sent[1:]] == [b'data: {"n":1}\n\n']
    assert dict(sent[0]["headers"])[b"content-type"] == b"text/event-stream; charset=utf-8"
