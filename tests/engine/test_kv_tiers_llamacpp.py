"""The prefix cache's tiers through llama.cpp (real tiny GGUF): states restored from host memory or disk answer
as a cold run does, and the disk tier keeps its hits across a restart."""

from __future__ import annotations

from pathlib import Path

from llamafoundry.engine.disk_cache import DiskCache
from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.host_cache import HostCache
from llamafoundry.engine.kv_tiers import KvTiers
from llamafoundry.model.llamacpp import LlamaCppRunner

from .conversations import run_conversations
from .test_engine_scheduling import run_until_done, submit

CTX = 512


def runner(model: Path, slots: int = 2) -> LlamaCppRunner:
    return LlamaCppRunner(model, kv_size=slots * CTX, max_seqs=slots, max_batch_tokens=256, num_threads=1)


def cold_answers(model: Path, prompts: list[list[int]], answer_len: int) -> list[list[int]]:
    cold = runner(model, 1)
    try:
        engine = LLMEngine(cold, ctx_size=CTX, max_queue=64)
        answers = []
        for prompt in prompts:
            _, sink = submit(engine, prompt, temperature=0.0, max_tokens=answer_len, ignore_eos=True)
            run_until_done(engine)
            answers.append(sink.token_ids()[0])
        return answers
    finally:
        cold.close()


def test_more_conversations_than_slots_restored_from_host_memory_answer_as_cold(tiny_model_path: Path) -> None:
    warm = runner(tiny_model_path)
    tiers = KvTiers(HostCache(budget_bytes=1 << 26), None)
    try:
        engine = LLMEngine(warm, ctx_size=CTX, max_queue=64, prefix_caching=True, kv_tiers=tiers)
        turns = run_conversations(engine, num_conversations=5, concurrency=2, header=30, first_len=60, vocab=5000)
    finally:
        warm.close()
    returning = [t for t in turns if t.index > 0]
    assert all(t.num_cached_tokens >= len(t.prompt) - 11 for t in returning)  # all but the new turn (10 tokens)
    assert tiers.stats.num_loads >= 5 and tiers.stats.num_failed_loads == 0
    assert [t.answer for t in turns] == cold_answers(tiny_model_path, [t.prompt for t in turns], 4)


def test_states_saved_over_evicted_entries_buffers_answer_as_cold(tiny_model_path: Path) -> None:
    warm = runner(tiny_model_path)
    reused = []
    save = warm.seq_save

    def recording(seq_id: int, into: bytearray | None = None) -> bytearray:
        reused.append(into is not None)
        return save(seq_id, into)

    warm.seq_save = recording  # type: ignore[method-assign]
    warm.batch_clear()
    for pos in range(100):
        warm.batch_add(1000 + pos, pos, [0], False)
    warm.decode()
    per_token = len(save(0)) / 100
    warm.seq_remove(0)
    tiers = KvTiers(HostCache(budget_bytes=int(per_token * 700)), None)  # about six histories: an eviction
    try:
        engine = LLMEngine(warm, ctx_size=CTX, max_queue=64, prefix_caching=True, kv_tiers=tiers)
        turns = run_conversations(engine, num_conversations=6, concurrency=2, header=30, first_len=60, vocab=5000)
    finally:
        warm.close()
    assert tiers.ram is not None and tiers.ram.num_evicted > 0 and any(reused)
    assert tiers.stats.num_loads >= 5
    assert [t.answer for t in turns] == cold_answers(tiny_model_path, [t.prompt for t in turns], 4)


def test_a_restart_with_the_disk_tier_keeps_the_hits(tiny_model_path: Path, tmp_path: Path) -> None:
    histories = []
    first = runner(tiny_model_path)
    tiers = KvTiers(None, DiskCache(tmp_path, first.state_fingerprint, budget_bytes=1 << 28))
    try:
        engine = LLMEngine(first, ctx_size=CTX, max_queue=64, prefix_caching=True, kv_tiers=tiers)
        prompts = [first.tokenize(f"<|begin_of_text|>Conversation {i}: " + "tell me more. " * 20) for i in range(3)]
        for prompt in prompts:
            _, sink = submit(engine, prompt, temperature=0.0, max_tokens=6, ignore_eos=True)
            run_until_done(engine)
            histories.append(prompt + sink.token_ids()[0])
    finally:
        tiers.close()  # a shutdown: pending writes finish
        first.close()
    restarted = runner(tiny_model_path)
    tiers = KvTiers(None, DiskCache(tmp_path, restarted.state_fingerprint, budget_bytes=1 << 28))
    try:
        engine = LLMEngine(restarted, ctx_size=CTX, max_queue=64, prefix_caching=True, kv_tiers=tiers)
        follow_ups = [h + restarted.tokenize(" And then?") for h in histories]
        results = []
        for prompt in follow_ups:
            request, sink = submit(engine, prompt, temperature=0.0, max_tokens=6, ignore_eos=True)
            run_until_done(engine)
            results.append((request.num_cached_tokens, sink.token_ids()[0]))
    finally:
        tiers.close()
        restarted.close()
    assert [cached for cached, _ in results] == [len(h) - 1 for h in histories]
    assert [answer for _, answer in results] == cold_answers(tiny_model_path, follow_ups, 6)
