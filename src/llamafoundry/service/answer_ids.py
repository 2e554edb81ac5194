"""The token ids this server generated for its recent answers, by their text: so that a conversation that comes
back with an answer in its history is prompted with the ids the KV cache holds for it, not a re-tokenization.

Prefix caching matches on tokens. A chat client sends the answer back as text, and tokenizing that text need not
give the ids the model generated: a model may write a word in pieces that the tokenizer would merge (a random
or lightly trained model often does), so the cached history would stop matching at the first such piece and the
rest of the conversation would be computed again. The ids are kept beside the text here; `ChatService` puts them
in place of the message's tokens when the text is one it answered. Both decode to the same text.

Templates that trim a message (Llama 3 writes `content | trim`) are served by a second key: the text without
its leading and trailing whitespace, when whole whitespace-only tokens make that difference.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

MAX_ANSWERS = 4096  # a few MB of text and ids; an answer older than this many is tokenized as text again


class AnswerIds:
    """Recent answers' token ids by text, least recently used forgotten first.

    Args:
        detokenize: the text of token ids as the engine streams it (control tokens as nothing).
        max_answers: answers remembered.
    """

    def __init__(self, detokenize: Callable[[list[int]], str], max_answers: int = MAX_ANSWERS) -> None:
        self._detokenize = detokenize
        self._max = max_answers
        self._ids: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()  # prompts are tokenized on worker threads while answers are recorded

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, text: str) -> list[int] | None:
        with self._lock:
            ids = self._ids.get(text)
            if ids is not None:
                self._ids.move_to_end(text)
            return ids

    def record(self, text: str, token_ids: list[int]) -> None:
        """Remember the ids of an answer whose streamed text is `text`: unless they decode to exactly that text
        (stop strings cut text the ids still hold; a filter may have changed it), nothing is kept."""
        ids = list(token_ids)
        while ids and not self._detokenize(ids[-1:]):  # the end-of-turn token: the template writes its own
            ids.pop()
        if not text or not ids or self._detokenize(ids) != text:
            return
        self._put(text, ids)
        trimmed = self._trimmed(text.strip(), ids)
        if trimmed is not None and trimmed != ids:
            self._put(text.strip(), trimmed)

    def _trimmed(self, stripped: str, ids: list[int]) -> list[int] | None:
        """The ids of the answer without its leading and trailing whitespace-only tokens, if they decode to
        `stripped` (a space inside a word's token cannot be taken off that token)."""
        start, end = 0, len(ids)
        while start < end and not self._detokenize(ids[start : start + 1]).strip():
            start += 1
        while end > start and not self._detokenize(ids[end - 1 : end]).strip():
            end -= 1
        kept = ids[start:end]
        return kept if kept and self._detokenize(kept) == stripped else None

    def _put(self, text: str, ids: list[int]) -> None:
        with self._lock:
            self._ids[text] = ids
            self._ids.move_to_end(text)
            while len(self._ids) > self._max:
                self._ids.popitem(last=False)
