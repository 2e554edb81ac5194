"""SSE framing: the one form every Azure SDK parser accepts (contract §5.2)."""

from __future__ import annotations

import json

import pytest

from llamafoundry.api.sse import DONE, encode_event


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
