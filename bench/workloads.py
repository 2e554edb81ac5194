"""Synthetic chat workloads in the manner of vLLM's random and prefix-repetition datasets.

A workload is a list of conversations; a conversation is a list of user turns sent one after another, each with
the history so far (earlier user turns and the server's own replies). Single-request workloads have one turn.

Prompt text is built from whole-word tokens of the model's own tokenizer (" word" pieces), so a text of `n`
words tokenizes to about `n` tokens on every server; the chat template adds its headers on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WORKLOADS = ("random", "shared-prefix", "chat")


@dataclass
class Turn:
    user_text: str
    max_tokens: int


@dataclass
class Conversation:
    system_text: str | None
    turns: list[Turn]
    history: list[dict[str, str]] = field(default_factory=list)  # filled in as replies arrive

    def messages_for(self, turn: Turn) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_text}] if self.system_text else []
        return system + self.history + [{"role": "user", "content": turn.user_text}]


class WordSource:
    """Random text of a given length in tokens, from a tokenizer's single-token lowercase words."""

    def __init__(self, words: list[str], seed: int) -> None:
        if len(words) < 100:
            raise ValueError("the tokenizer has too few plain-word tokens to build prompts from")
        self._words = np.asarray(words, dtype=object)
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_gguf(cls, path: str | Path, seed: int = 0) -> WordSource:
        from llamafoundry.model.llamacpp import LlamaCppVocab

        vocab = LlamaCppVocab(path, vocab_only=True)
        try:
            pattern = re.compile(rb"^ [a-z]{3,12}$")
            words = [
                piece.decode()
                for t in range(min(vocab.vocab_size, 100_000))
                if pattern.match(piece := vocab.token_bytes(t, False))
            ]
        finally:
            vocab.close()
        return cls(words, seed)

    def reseeded(self, seed: int) -> WordSource:
        """The same words with a fresh generator: equal seeds give every server the same prompts."""
        return WordSource(list(self._words), seed)

    def text(self, num_tokens: int) -> str:
        picks = self._rng.choice(self._words, size=max(1, num_tokens))
        return "".join(picks).strip()


def build_workload(
    kind: str,
    words: WordSource,
    num_conversations: int,
    input_len: int,
    output_len: int,
    prefix_len: int = 1000,
    num_turns: int = 3,
) -> list[Conversation]:
    """Conversations for one load level.

    Args:
        kind: `random` (one turn of `input_len` tokens), `shared-prefix` (the same `prefix_len`-token system
            prompt before every request, distinct user turns of `input_len`), or `chat` (`num_turns` turns of
            `input_len` each, the history growing with the server's replies).
        words: the prompt-text source (seeded: the same arguments give the same workload).
        num_conversations: conversations to run (requests = conversations x turns).
        output_len: max_tokens of every request (with ignore_eos every request generates exactly this many).
    """
    if kind not in WORKLOADS:
        raise ValueError(f"unknown workload {kind!r}; choose one of {', '.join(WORKLOADS)}")
    system = words.text(prefix_len) if kind == "shared-prefix" else None
    turns_each = num_turns if kind == "chat" else 1
    return [
        Conversation(system, [Turn(words.text(input_len), output_len) for _ in range(turns_each)])
        for _ in range(num_conversations)
    ]
