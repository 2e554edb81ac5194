"""How far a piece of JSON text goes towards closing its output: the lexer behind constrained outputs that must
end before their token budget does (`LlamaCppGrammar.closing_token`). Pure Python and numpy, no llama.cpp."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def json_levels_closed(text: str, in_string: bool, escaped: bool = False) -> tuple[int, bool, bool]:
    """Scan JSON text from a lexer state. Returns (levels closed minus levels opened, in_string, escaped) after it;
    a string counts as a level, like an object or an array."""
    depth = 0
    for ch in text:
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
    return -depth, in_string, escaped


def closing_scores(token_pieces: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token (its bytes, in id order): JSON nesting levels (strings included) its text closes when it starts
    outside a string, the same when it starts inside one, and its length in characters."""
    pieces = [piece.decode("utf-8", errors="replace") for piece in token_pieces]
    outside = np.array([json_levels_closed(p, False)[0] for p in pieces], dtype=np.int32)
    inside = np.array([json_levels_closed(p, True)[0] for p in pieces], dtype=np.int32)
    lengths = np.array([len(p) for p in pieces], dtype=np.int32)
    return outside, inside, lengths
