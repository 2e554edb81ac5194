"""KV states out of and back into llama.cpp (`seq_save` / `seq_load`), copies between per-sequence streams, and
quantized KV caches, on real tiny GGUF models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llamafoundry.model.llamacpp import LlamaCppRunner

TEXT = "<|begin_of_text|>The quick brown fox jumps over the lazy dog, and then it runs far away. " * 3


def prefill(runner: LlamaCppRunner, seq_id: int, tokens: list[int]) -> None:
    runner.batch_clear()
    for pos, token in enumerate(tokens):
        runner.batch_add(token, pos, [seq_id], False)
    runner.decode()


def continue_greedy(runner: LlamaCppRunner, seq_id: int, pos: int, token: int, steps: int = 6) -> list[int]:
    """The greedy tokens that follow `token` at `pos` on a sequence holding positions 0..pos-1."""
    out = []
    for step in range(steps):
        runner.batch_clear()
        runner.batch_add(token, pos + step, [seq_id], True)
        runner.decode()
        token = int(np.argmax(runner.logits(0)))
        out.append(token)
    return out


def test_a_saved_sequence_continues_the_same_in_another_slot_and_another_context(tiny_model_path: Path) -> None:
    first = LlamaCppRunner(tiny_model_path, kv_size=3 * 256, max_seqs=3, num_threads=1)
    restarted = LlamaCppRunner(tiny_model_path, kv_size=3 * 256, max_seqs=3, num_threads=1)
    other_slots = LlamaCppRunner(tiny_model_path, kv_size=2 * 256, max_seqs=2, num_threads=1)
    try:
        tokens = first.tokenize(TEXT)
        prefill(first, 0, tokens[:-1])
        state = first.seq_save(0)
        assert len(state) > 200 * (len(tokens) - 1)  # keys and values of every cell
        for size in (len(state) * 3, 10):  # written over a buffer of another state, shrunk or grown to fit
            reused = first.seq_save(0, into=bytearray(b"x" * size))
            assert reused == state
        assert first.seq_load(2, state) and restarted.seq_load(1, bytes(state))
        expected = continue_greedy(first, 0, len(tokens) - 1, tokens[-1])
        assert continue_greedy(first, 2, len(tokens) - 1, tokens[-1]) == expected
        assert continue_greedy(restarted, 1, len(tokens) - 1, tokens[-1]) == expected
        # llama.cpp writes the context's number of KV streams into a state: it is part of the fingerprint
        assert not other_slots.seq_load(1, state) and other_slots.state_fingerprint != first.state_fingerprint
        assert restarted.state_fingerprint == first.state_fingerprint
    finally:
        for runner in (first, restarted, other_slots):
            runner.close()


def test_quantized_kv_caches_take_fewer_bytes_and_refuse_other_types_states(tiny32_model_path: Path) -> None:
    kinds = ("f16", "q8_0", "q4_0")
    runners = {t: LlamaCppRunner(tiny32_model_path, 2 * 256, 2, num_threads=1, kv_cache_type=t) for t in kinds}
    try:
        tokens = runners["f16"].tokenize(TEXT)
        states = {}
        for kind, runner in runners.items():
            prefill(runner, 0, tokens[:-1])
            states[kind] = runner.seq_save(0)
            assert len(continue_greedy(runner, 0, len(tokens) - 1, tokens[-1], 3)) == 3
        assert len(states["q8_0"]) < 0.6 * len(states["f16"]) and len(states["q4_0"]) < 0.35 * len(states["f16"])
        for kind, runner in runners.items():
            for other, state in states.items():
                assert runner.seq_load(1, state) == (kind == other)
    finally:
        for runner in runners.values():
            runner.close()


def test_a_quantized_cache_explains_what_it_needs(tiny_model_path: Path, tiny32_model_path: Path) -> None:
    with pytest.raises(ValueError, match="needs flash attention"):
        LlamaCppRunner(tiny32_model_path, 256, 1, kv_cache_type="q8_0", flash_attn=False)
    with pytest.raises(ValueError, match="attention heads have 16"):
        LlamaCppRunner(tiny_model_path, 256, 1, kv_cache_type="q4_0")
    with pytest.raises(ValueError, match="unknown KV cache type"):
        LlamaCppRunner(tiny_model_path, 256, 1, kv_cache_type="q5_1")
