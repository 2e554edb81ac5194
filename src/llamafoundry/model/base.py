"""The ModelRunner protocol: what the engine needs from a model backend, and nothing more."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class DecodeError(RuntimeError):
    """llama_decode (or a backend's equivalent) failed; `no_kv_space` when the cache had no room."""

    def __init__(self, message: str, no_kv_space: bool = False) -> None:
        super().__init__(message)
        self.no_kv_space = no_kv_space


class ModelRunner(Protocol):
    """A loaded model with a KV cache shared by up to `max_seqs` sequences.

    Called from a single engine thread only. A decode step is: `batch_clear()`, `batch_add()` per token,
    `decode()`, then `logits(i)` for each batch index `i` that asked for output.

    Attributes:
        vocab_size: number of token ids.
        kv_size: KV cache cells in total, shared by all sequences.
        max_seqs: distinct sequence ids (0 .. max_seqs-1).
        max_batch_tokens: most tokens one `decode()` accepts.
        eog_token_ids: ids that end a generation (`<|eot_id|>`, `<|end_of_text|>`, ...).
        state_fingerprint: states from `seq_save` load only into runners with the same fingerprint (weights,
            KV cache type and layout).
    """

    vocab_size: int
    kv_size: int
    max_seqs: int
    max_batch_tokens: int
    eog_token_ids: frozenset[int]
    state_fingerprint: str

    def tokenize(self, text: str, add_bos: bool = False, parse_special: bool = True) -> list[int]: ...

    def token_bytes(self, token_id: int, special: bool) -> bytes:
        """The bytes of one token; control tokens render as their text only when `special`."""
        ...

    def is_control(self, token_id: int) -> bool: ...

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as a string (for example `tokenizer.chat_template`), or None."""
        ...

    def batch_clear(self) -> None: ...

    def batch_add(self, token_id: int, pos: int, seq_ids: list[int], want_logits: bool) -> int:
        """Append one token to the pending batch; returns its batch index."""
        ...

    def decode(self) -> None:
        """Run the pending batch through the model. Raises DecodeError."""
        ...

    def logits(self, batch_index: int) -> np.ndarray:
        """Raw logits of the token at `batch_index` of the last decode, float32 [vocab_size] (a view: copy to keep)."""
        ...

    def seq_remove(self, seq_id: int, p0: int = -1, p1: int = -1) -> None:
        """Forget positions [p0, p1) of a sequence (-1: open end)."""
        ...

    def seq_copy(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Make `dst` share `src`'s cached positions [p0, p1) (no recompute)."""
        ...

    def seq_save(self, seq_id: int, into: bytearray | None = None) -> bytearray:
        """The KV state of one sequence (its cells' positions, keys and values), to keep outside the context;
        written over `into` (resized) when given."""
        ...

    def seq_load(self, seq_id: int, data: bytes | bytearray | memoryview) -> bool:
        """Replace `seq_id`'s cells with a state from `seq_save`; False (the sequence left empty) when refused."""
        ...

    def close(self) -> None: ...
