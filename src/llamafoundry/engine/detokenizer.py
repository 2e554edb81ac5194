"""Incremental detokenization: token bytes in, streamable text deltas out, stop strings cut off."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class IncrementalDetokenizer:
    """Turns generated tokens into text deltas that are safe to stream.

    A delta never ends inside a UTF-8 character (incomplete byte sequences wait for the next token) and never
    holds any part of a stop string: the longest tail of the unreleased text that could begin a stop string is
    held back until the next piece shows whether it does. The engine calls `push` once per generated token,
    then `finish` once when generation ends without a stop string matching.
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        """Start an empty stream.

        Args:
            stop: strings that end the generation; the first to appear is cut off with everything after it.
        """
        self._stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text not yet released: a tail that may start a stop string
        self._released: list[str] = []
        self._stopped = False

    def push(self, piece: bytes) -> str:
        """Add the bytes of the next token.

        Returns:
            the text that may be released now ("" once a stop string has matched).
        """
        if self._stopped:
            return ""
        return self._release(self._decoder.decode(piece), final=False)

    def finish(self) -> str:
        """Release whatever is held back; a dangling incomplete UTF-8 sequence becomes U+FFFD.

        Returns:
            the last delta ("" if a stop string has matched).
        """
        if self._stopped:
            return ""
        return self._release(self._decoder.decode(b"", final=True), final=True)

    @property
    def stopped(self) -> bool:
        """A stop string matched: the text before it has been released, nothing after it ever will be."""
        return self._stopped

    @property
    def text(self) -> str:
        """All text released so far."""
        return "".join(self._released)

    def _release(self, new_text: str, final: bool) -> str:
        pending = self._held + new_text
        stop_at = first_stop_index(pending, self._stop)
        if stop_at is not None:
            self._stopped = True
            delta, self._held = pending[:stop_at], ""
        else:
            num_held = 0 if final else len_stop_prefix_suffix(pending, self._stop)
            delta, self._held = pending[: len(pending) - num_held], pending[len(pending) - num_held :]
        if delta:
            self._released.append(delta)
        return delta


def first_stop_index(text: str, stop: Sequence[str]) -> int | None:
    """Index in `text` where the earliest occurrence of any stop string starts, or None."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


def len_stop_prefix_suffix(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string (0 if none)."""
    longest = max((len(s) for s in stop), default=1) - 1
    for length in range(min(longest, len(text)), 0, -1):
        tail = text[-length:]
        if any(s.startswith(tail) for s in stop):
            return length
    return 0
