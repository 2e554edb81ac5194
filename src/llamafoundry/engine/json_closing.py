"""How far a piece of JSON text goes towards closing its output: the lexer behind constrained outputs that must
end before their token budget does (`GrammarConstraint.closing_token`). Pure Python and numpy.

A string, an object, an array and a number each count as a level: a token that ends a number ("5" then "}")
closes one, so the closer ends a number at once instead of writing the longest digits a grammar allows. Between
tokens that close as much, one with a comma comes last: a comma promises another item or key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

_NUMBER_START = frozenset("-0123456789")
_NUMBER_BODY = frozenset("0123456789.eE+-")


class LexState(NamedTuple):
    """Where the text so far leaves the lexer: inside a string (after a backslash), inside a number."""

    in_string: bool = False
    escaped: bool = False
    in_number: bool = False


OUTSIDE = LexState()
START_STATES = (OUTSIDE, LexState(in_string=True), LexState(in_number=True))  # what closing_scores scores from


def json_levels_closed(text: str, state: LexState = OUTSIDE) -> tuple[int, LexState]:
    """Scan JSON text from a lexer state. Returns (levels closed minus levels opened, the state after it)."""
    depth = 0
    in_string, escaped, in_number = state
    for ch in text:
        if in_number:
            if ch in _NUMBER_BODY:
                continue
            in_number, depth = False, depth - 1  # the number ended; this character is read as usual
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string, depth = False, depth - 1
        elif ch == '"':
            in_string, depth = True, depth + 1
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch in _NUMBER_START:
            in_number, depth = True, depth + 1
    return -depth, LexState(in_string, escaped, in_number)


class ClosingScores(NamedTuple):
    """Per token, in id order: levels its text closes from each of `START_STATES`, its length in characters,
    whether it is only whitespace (a grammar allows whitespace almost everywhere; it never brings the end nearer),
    whether it has a comma, and its first character (as a code point; -1 for an empty token)."""

    closed: tuple[np.ndarray, np.ndarray, np.ndarray]
    lengths: np.ndarray
    is_blank: np.ndarray
    has_comma: np.ndarray
    first_chars: np.ndarray

    def closed_from(self, state: LexState) -> np.ndarray:
        if state.in_string:
            return self.closed[1]
        return self.closed[2] if state.in_number else self.closed[0]


def closing_scores(token_pieces: Iterable[bytes]) -> ClosingScores:
    pieces = [piece.decode("utf-8", errors="replace") for piece in token_pieces]
    closed = tuple(
        np.array([json_levels_closed(p, start)[0] for p in pieces], dtype=np.int32) for start in START_STATES
    )
    lengths = np.array([len(p) for p in pieces], dtype=np.int32)
    is_blank = np.array([not p.strip() for p in pieces], dtype=bool)
    has_comma = np.array(["," in p for p in pieces], dtype=bool)
    first_chars = np.array([ord(p[0]) if p else -1 for p in pieces], dtype=np.int32)
    return ClosingScores((closed[0], closed[1], closed[2]), lengths, is_blank, has_comma, first_chars)
