"""IncrementalDetokenizer: streamed deltas never split a character nor leak a stop string."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from llamafoundry.engine.detokenizer import IncrementalDetokenizer


def stream(pieces: Sequence[bytes], stop: Sequence[str] = ()) -> tuple[list[str], IncrementalDetokenizer]:
    """Push every piece, then finish unless a stop string matched. Returns the deltas and the detokenizer."""
    detok = IncrementalDetokenizer(stop)
    deltas = [detok.push(piece) for piece in pieces]
    if not detok.stopped:
        deltas.append(detok.finish())
    return deltas, detok


def single_bytes(text: str) -> list[bytes]:
    return [bytes([b]) for b in text.encode()]


# ---- UTF-8 split across tokens -------------------------------------------------------------------------------


def test_emoji_split_over_four_byte_pieces_arrives_whole() -> None:
    deltas, detok = stream(single_bytes("hi 😀!"))
    assert deltas[:3] == ["h", "i", " "]
    assert deltas[3:6] == ["", "", ""]  # the first 3 bytes of the emoji are held back
    assert deltas[6] == "😀"
    assert "".join(deltas) == detok.text == "hi 😀!"


def test_cjk_split_over_uneven_pieces_has_no_replacement_character() -> None:
    raw = "中文字".encode()  # 9 bytes, 3 per character
    pieces = [raw[:2], raw[2:4], raw[4:5], raw[5:9]]
    deltas, detok = stream(pieces)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == detok.text == "中文字"


def test_finish_turns_a_dangling_partial_character_into_a_replacement_character() -> None:
    detok = IncrementalDetokenizer()
    assert detok.push(b"ok \xe4\xb8") == "ok "
    assert detok.finish() == "\ufffd"
    assert detok.text == "ok \ufffd"


def test_invalid_bytes_in_the_middle_are_replaced_and_streaming_goes_on() -> None:
    deltas, _ = stream([b"a", b"\xff", b"b"])
    assert "".join(deltas) == "a\ufffdb"


# ---- stop strings ----------------------------------------------------------------------------------------------


def test_stop_string_split_over_three_pieces_never_leaks() -> None:
    deltas, detok = stream([b"answer: 4#", b"#", b"# trailing"], stop=["###"])
    assert detok.stopped
    assert deltas == ["answer: 4", "", ""]
    assert detok.text == "answer: 4"


def test_text_before_a_stop_in_the_same_piece_is_released_in_full() -> None:
    deltas, detok = stream([b"Hi", b" there. Hello! and more"], stop=["Hello!"])
    assert "".join(deltas) == detok.text == "Hi there. "
    assert detok.stopped


def test_false_partial_match_is_released_once_it_cannot_be_a_stop() -> None:
    detok = IncrementalDetokenizer(["Hello!"])
    assert detok.push(b"Say Hel") == "Say "  # "Hel" may start "Hello!"
    assert detok.push(b"lo") == ""  # "Hello" still may
    assert detok.push(b" world") == "Hello world"
    assert not detok.stopped


def test_held_partial_match_is_released_by_finish() -> None:
    detok = IncrementalDetokenizer(["Hello!"])
    assert detok.push(b"Say Hell") == "Say "
    assert detok.finish() == "Hell"
    assert detok.text == "Say Hell"
    assert not detok.stopped


def test_earliest_of_several_stop_strings_wins() -> None:
    deltas, detok = stream([b"hello wor", b"ld"], stop=["world", "lo w"])
    assert "".join(deltas) == "hel"
    assert detok.stopped


def test_stop_string_that_extends_another_stops_at_the_shorter() -> None:
    deltas, detok = stream([b"x", b"ab", b"c"], stop=["abc", "ab"])
    assert "".join(deltas) == detok.text == "x"


def test_nothing_is_released_after_a_stop() -> None:
    detok = IncrementalDetokenizer(["END"])
    assert detok.push(b"doneEND") == "done"
    assert detok.push(b"more text") == ""
    assert detok.finish() == ""
    assert detok.text == "done"


def test_stop_string_with_multibyte_characters_split_at_byte_level() -> None:
    deltas, detok = stream(single_bytes("答案：是的。结束了"), stop=["结束"])
    assert detok.stopped
    assert "".join(deltas) == "答案：是的。"
    assert all("\ufffd" not in d and "结" not in d for d in deltas)


def test_without_stop_strings_everything_is_released_immediately() -> None:
    detok = IncrementalDetokenizer()
    assert detok.push(b"abc") == "abc"
    assert detok.finish() == ""


# ---- property: any text, any byte split -------------------------------------------------------------------------

ALPHABET = "ab 😀é中\n"


def truncate_at_first_stop(text: str, stop: Sequence[str]) -> str:
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(found)] if found else text


def truncate_as_generated(pieces: Sequence[bytes], stop: Sequence[str]) -> str:
    """What a generation that stops as soon as a stop string appears releases.

    Generation ends after the first piece that completes any stop string, so a longer stop string that would
    have started earlier but needs later pieces never gets the chance: the cut depends on the pieces.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    for piece in pieces:
        text += decoder.decode(piece)
        if any(s in text for s in stop):
            return truncate_at_first_stop(text, stop)
    return text + decoder.decode(b"", final=True)


def split_at(raw: bytes, offsets: list[int]) -> list[bytes]:
    cuts = [0, *sorted(set(offsets)), len(raw)]
    return [raw[a:b] for a, b in pairwise(cuts)]


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(ALPHABET, max_size=40),
    stop=st.lists(st.text(ALPHABET, min_size=1, max_size=4), max_size=3),
    data=st.data(),
)
def test_deltas_equal_the_text_cut_at_the_first_stop(text: str, stop: list[str], data: st.DataObject) -> None:
    raw = text.encode()
    offsets = data.draw(st.lists(st.integers(0, len(raw)), max_size=len(raw) + 1))
    pieces = split_at(raw, offsets)
    deltas, detok = stream(pieces, stop)
    expected = truncate_as_generated(pieces, stop)
    assert "".join(deltas) == detok.text == expected
    assert detok.stopped == any(s in text for s in stop)
    assert all("\ufffd" not in d for d in deltas)
