"""A ModelRunner stand-in for testing scheduling logic in isolation (no llama.cpp).

It checks the engine's KV bookkeeping as llama.cpp would need it: every token must be added at the next
position of each of its sequences, and a sequence's cache is what was added, copied or removed. Its logits
are a deterministic function of the sequence's cached tokens, so a wrong fork or copy changes the output.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from llamafoundry.engine.engine import LLMEngine

Token = tuple[int, int, tuple[int, ...], bool]  # (token id, position, sequence ids, wants logits), as batch_add got it

VOCAB = 40
EOG = 39


class FakeRunner:
    vocab_size = VOCAB
    eog_token_ids = frozenset({EOG})
    state_fingerprint = "fake"

    def __init__(self, max_seqs: int = 4, max_batch_tokens: int = 16, ctx_size: int = 64, eog_after: int = 0) -> None:
        self.max_seqs = max_seqs
        self.max_batch_tokens = max_batch_tokens
        self.kv_size = ctx_size * max_seqs
        self.eog_after = eog_after  # >0: prefer EOG once a sequence holds this many tokens
        self.kv: dict[int, list[int]] = {}
        self.batches: list[list[tuple[int, int, tuple[int, ...], bool]]] = []
        self.copies: list[tuple[int, int, int, int]] = []  # seq_copy calls: (src, dst, p0, p1)
        self.saves: list[tuple[int, int]] = []  # seq_save calls: (seq_id, tokens saved)
        self.loads: list[tuple[int, int]] = []  # seq_load calls: (seq_id, tokens loaded)
        self._batch: list[tuple[int, int, tuple[int, ...], bool]] = []
        self._logits: dict[int, np.ndarray] = {}

    def tokenize(self, text: str, add_bos: bool = False, parse_special: bool = True) -> list[int]:
        return [ord(c) % (VOCAB - 1) for c in text]

    def token_bytes(self, token_id: int, special: bool) -> bytes:
        if token_id == EOG:
            return b"<eog>" if special else b""
        return bytes([97 + token_id % 26])

    def is_control(self, token_id: int) -> bool:
        return token_id == EOG

    def metadata(self, key: str) -> str | None:
        return None

    def batch_clear(self) -> None:
        self._batch = []

    def batch_add(self, token_id: int, pos: int, seq_ids: list[int], want_logits: bool) -> int:
        assert len(self._batch) < self.max_batch_tokens, "batch over budget"
        self._batch.append((token_id, pos, tuple(seq_ids), want_logits))
        return len(self._batch) - 1

    def decode(self) -> None:
        self.batches.append(list(self._batch))
        self._logits = {}
        for index, (token, pos, seq_ids, want) in enumerate(self._batch):
            for seq in seq_ids:
                cache = self.kv.setdefault(seq, [])
                assert pos == len(cache), f"seq {seq}: token at pos {pos} but cache holds {len(cache)}"
                cache.append(token)
            if want:
                self._logits[index] = self._next_logits(self.kv[seq_ids[0]])

    def _next_logits(self, cache: list[int]) -> np.ndarray:
        logits = np.zeros(VOCAB, dtype=np.float32)
        logits[sum(cache) * 7 % (VOCAB - 1)] = 5.0
        logits[(sum(cache) * 7 + 1) % (VOCAB - 1)] = 4.0
        if self.eog_after and len(cache) >= self.eog_after:
            logits[EOG] = 10.0
        return logits

    def logits(self, batch_index: int) -> np.ndarray:
        return self._logits[batch_index]

    def seq_remove(self, seq_id: int, p0: int = -1, p1: int = -1) -> None:
        assert p1 == -1, "only a tail [p0, end) of a sequence is ever removed"
        if p0 <= 0:
            self.kv.pop(seq_id, None)
        elif seq_id in self.kv:
            del self.kv[seq_id][p0:]

    def seq_copy(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        source = self.kv.get(src, [])
        p0 = max(p0, 0)
        p1 = len(source) if p1 < 0 else p1
        assert p1 <= len(source), f"seq {src} holds {len(source)} positions, {p1} copied"
        cache = self.kv.setdefault(dst, [])
        assert len(cache) == p0, f"copy to pos {p0} of seq {dst}, whose cache holds {len(cache)}: positions must follow"
        cache.extend(source[p0:p1])
        self.copies.append((src, dst, p0, p1))

    def seq_save(self, seq_id: int, into: bytearray | None = None) -> bytearray:
        """The sequence's tokens stand for its keys and values (4 bytes each, after a 4-byte magic)."""
        tokens = self.kv.get(seq_id, [])
        self.saves.append((seq_id, len(tokens)))
        data = bytearray() if into is None else into
        data[:] = b"FAKE" + array("i", tokens).tobytes()
        return data

    def seq_load(self, seq_id: int, data: bytes | bytearray | memoryview) -> bool:
        self.kv.pop(seq_id, None)
        raw = bytes(data)
        if not raw.startswith(b"FAKE") or len(raw) > 4 + 4 * self.kv_size // self.max_seqs:
            return False
        self.kv[seq_id] = list(array("i", raw[4:]))
        self.loads.append((seq_id, len(self.kv[seq_id])))
        return True

    def close(self) -> None:
        pass


def record_steps(engine: LLMEngine, runner: FakeRunner) -> list[list[Token]]:
    """The tokens each `engine.step()` from now on computes, one list per step that computed any: a step makes two
    `decode` calls (`runner.batches`) when it has both prompt chunks and decoding sequences."""
    steps: list[list[Token]] = []
    step = engine.step

    def recorded() -> None:
        before = len(runner.batches)
        step()
        if len(runner.batches) > before:
            steps.append([token for batch in runner.batches[before:] for token in batch])

    setattr(engine, "step", recorded)  # noqa: B010 (an instance attribute over the method)
    return steps
