"""The ceiling: a bare llama_decode loop (one llama_batch per step, greedy argmax) with no scheduler around it.

It runs on the product's LlamaCppRunner so that the context is created exactly as the engine creates it
(unified KV cache, same n_batch, same threads); what is left per step is filling the batch through ctypes,
llama_decode, and one argmax per sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamafoundry.config import EngineSettings
from llamafoundry.model.llamacpp import LlamaCppRunner


@dataclass
class RawResult:
    batch: int  # sequences decoding together
    prompt_len: int
    gen_len: int
    prefill_s: float
    decode_s: float

    @property
    def prefill_tok_s(self) -> float:
        return self.batch * self.prompt_len / self.prefill_s

    @property
    def decode_tok_s(self) -> float:
        """Aggregate generated tokens per second over all sequences."""
        return self.batch * self.gen_len / self.decode_s


def open_runner(
    model: Path,
    parallel: int,
    ctx_size: int,
    threads: int,
    batch_size: int = EngineSettings.batch_size,
    flash_attn: bool | None = None,
) -> LlamaCppRunner:
    """A context laid out as `llamafoundry serve --parallel P --ctx-size C --threads T` lays it out."""
    return LlamaCppRunner(
        model, parallel * ctx_size, parallel, max_batch_tokens=batch_size, num_threads=threads, flash_attn=flash_attn
    )


def raw_decode(runner: LlamaCppRunner, batch: int, prompt_len: int, gen_len: int, seed: int = 0) -> RawResult:
    """Prefill `batch` random prompts, then decode `gen_len` greedy tokens for all of them, one batch per step."""
    if batch > runner.max_seqs:
        raise ValueError(f"batch {batch} needs {batch} sequences; the runner has {runner.max_seqs}")
    rng = np.random.default_rng(seed)
    prompts = rng.integers(1000, 100_000, size=(batch, prompt_len))
    for seq in range(runner.max_seqs):
        runner.seq_remove(seq)
    start = time.perf_counter()
    next_ids = _prefill(runner, prompts)
    mid = time.perf_counter()
    for step in range(gen_len - 1):
        runner.batch_clear()
        for seq, token in enumerate(next_ids):
            runner.batch_add(token, prompt_len + step, [seq], True)
        runner.decode()
        next_ids = [int(np.argmax(runner.logits(seq))) for seq in range(batch)]
    end = time.perf_counter()
    for seq in range(batch):
        runner.seq_remove(seq)
    # gen_len tokens per sequence: the first comes from the prefill's logits, the rest from gen_len - 1 decodes
    return RawResult(batch, prompt_len, gen_len, prefill_s=mid - start, decode_s=end - mid)


def _prefill(runner: LlamaCppRunner, prompts: np.ndarray) -> list[int]:
    """Feed every prompt in batches of at most max_batch_tokens; returns each sequence's greedy next token."""
    batch, prompt_len = prompts.shape
    next_ids = [0] * batch
    pending = [(seq, pos) for seq in range(batch) for pos in range(prompt_len)]
    for offset in range(0, len(pending), runner.max_batch_tokens):
        runner.batch_clear()
        last_rows = {}
        for seq, pos in pending[offset : offset + runner.max_batch_tokens]:
            row = runner.batch_add(int(prompts[seq, pos]), pos, [seq], pos == prompt_len - 1)
            if pos == prompt_len - 1:
                last_rows[seq] = row
        runner.decode()
        for seq, row in last_rows.items():  # logits live only until the next decode
            next_ids[seq] = int(np.argmax(runner.logits(row)))
    return next_ids
