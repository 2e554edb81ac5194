"""Prefix caching across requests: cached prefixes are reused, shared, never recomputed twice at once, and
evicted when their slots are needed; outputs equal those of a cold run (fake runner and real tiny GGUF)."""

from __future__ import annotations

from pathlib import Path

from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.prefix_cache import common_prefix_len, match_len
from llamafoundry.model.llamacpp import LlamaCppRunner

from .fake_runner import FakeRunner
from .test_engine_scheduling import run_until_done, submit


def computed_prompt_tokens(runner: FakeRunner, seq_id: int | None = None) -> int:
    """Prompt tokens the model computed (batch entries that asked for no logits), optionally of one sequence."""
    return sum(1 for batch in runner.batches for tok in batch if not tok[3] and seq_id in (None, tok[2][0]))


def cold_tokens(prompt: list[int], max_tokens: int = 6) -> list[int]:
    engine = LLMEngine(FakeRunner(max_seqs=1), ctx_size=64, max_queue=8)
    _, sink = submit(engine, prompt, temperature=0.0, max_tokens=max_tokens)
    run_until_done(engine)
    return sink.token_ids()[0]


def test_common_prefix_len_and_match_through_generated_tokens() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix_len([], [1]) == 0 and common_prefix_len([5], [6]) == 0
    assert common_prefix_len(list(range(1000)), [*range(777), -1]) == 777
    # head [1, 2] then the first 2 generated tokens [3, 4] (the newest, 5, is not in the cache yet)
    assert match_len([1, 2, 3, 4, 5, 6], [1, 2], [3, 4, 5], 2) == 4
    assert match_len([1, 2, 3, 7], [1, 2], [3, 4, 5], 2) == 3
    assert match_len([1, 9], [1, 2], [3], 1) == 1


def test_a_repeated_prompt_computes_only_its_last_token_and_answers_the_same() -> None:
    runner = FakeRunner(max_seqs=2)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8, prefix_caching=True)
    prompt = list(range(1, 21))
    _, first = submit(engine, prompt, temperature=0.0, max_tokens=6)
    run_until_done(engine)
    before = computed_prompt_tokens(runner)
    request, again = submit(engine, prompt, temperature=0.0, max_tokens=6)
    run_until_done(engine)
    assert computed_prompt_tokens(runner) == before  # nothing but the last token (which asks for logits)
    assert request.num_cached_tokens == len(prompt) - 1
    assert again.token_ids() == first.token_ids() and first.token_ids()[0] == cold_tokens(prompt)


def test_a_follow_up_turn_reuses_the_prompt_and_the_reply() -> None:
    runner = FakeRunner(max_seqs=2)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8, prefix_caching=True)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    _, first = submit(engine, prompt, temperature=0.0, max_tokens=5)
    run_until_done(engine)
    follow_up = prompt + first.token_ids()[0] + [7, 7, 7]
    request, second = submit(engine, follow_up, temperature=0.0, max_tokens=5)
    run_until_done(engine)
    # the slot held the prompt and 4 of the 5 replies (the last was sampled, never computed)
    assert request.num_cached_tokens == len(prompt) + 4
    assert second.token_ids()[0] == cold_tokens(follow_up, 5)


def test_concurrent_prompts_with_a_shared_head_compute_it_once() -> None:
    runner = FakeRunner(max_seqs=4, max_batch_tokens=16)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, prefix_caching=True)
    engine.prefix_cache.min_tokens_to_wait = 8
    system = [(7 * i) % 38 + 1 for i in range(40)]
    prompts = [system + [i + 1, i + 2, i + 3] for i in range(4)]
    requests, sinks = zip(*[submit(engine, p, temperature=0.0, max_tokens=4) for p in prompts], strict=True)
    run_until_done(engine)
    # the shared 40 tokens once, then each prompt's own 3 tokens but the last
    assert computed_prompt_tokens(runner) == 40 + 4 * 2
    assert [r.num_cached_tokens for r in requests] == [0, 40, 40, 40]
    for prompt, sink in zip(prompts, sinks, strict=True):
        assert sink.token_ids()[0] == cold_tokens(prompt, 4)


def test_a_decoding_sequence_shares_its_prompt_with_a_newcomer() -> None:
    runner = FakeRunner(max_seqs=2)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8, prefix_caching=True)
    head = list(range(1, 13))
    _, long_running = submit(engine, head + [30], temperature=0.0, max_tokens=20)
    for _ in range(3):
        engine.step()
    request, newcomer = submit(engine, head + [31, 32], temperature=0.0, max_tokens=4)
    run_until_done(engine)
    assert request.num_cached_tokens == len(head)
    assert any(src == 0 and dst == 1 for src, dst, _, _ in runner.copies)
    assert newcomer.token_ids()[0] == cold_tokens(head + [31, 32], 4)
    assert long_running.token_ids()[0] == cold_tokens(head + [30], 20)


def test_idle_slots_are_wiped_least_recently_used_first_when_slots_are_needed() -> None:
    runner = FakeRunner(max_seqs=2)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8, prefix_caching=True)
    a, b, c = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]
    for prompt in (a, b):
        submit(engine, prompt, temperature=0.0, max_tokens=3)
        run_until_done(engine)
    assert sorted(engine.prefix_cache.idle_slots) == [0, 1] and engine.scheduler.num_free_slots == 2
    submit(engine, c, temperature=0.0, max_tokens=3)  # no prefix anywhere: takes the LRU slot (a's)
    run_until_done(engine)
    assert runner.kv[0][: len(c)] == c and runner.kv[1][: len(b)] == b
    request, sink = submit(engine, b + [16], temperature=0.0, max_tokens=3)  # b survived: reused in place
    run_until_done(engine)
    assert request.num_cached_tokens == len(b)
    assert sink.token_ids()[0] == cold_tokens(b + [16], 3)
    # both slots can still run two fresh requests at once: the idle cells never block admission
    sinks = [submit(engine, [20 + i, 21, 22], temperature=0.0, max_tokens=3)[1] for i in range(2)]
    engine.step()
    assert engine.num_running == 2
    run_until_done(engine)
    assert all(s.finish_reasons() == {0: "length"} for s in sinks)
    assert all(len(cells) <= 64 for cells in runner.kv.values())


def test_n_choices_and_aborts_keep_the_cache_consistent() -> None:
    runner = FakeRunner(max_seqs=3)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8, prefix_caching=True)
    prompt = [5, 6, 7, 8, 9, 10]
    _, multi = submit(engine, prompt, temperature=0.9, seed=4, n=3, max_tokens=5)
    run_until_done(engine)
    running, _ = submit(engine, prompt + [1], temperature=0.0, max_tokens=30)
    engine.step()
    engine.step()
    engine.abort(running)
    assert engine.scheduler.num_free_slots == 3
    request, sink = submit(engine, prompt, temperature=0.9, seed=4, n=3, max_tokens=5)
    run_until_done(engine)
    assert request.num_cached_tokens == len(prompt) - 1
    assert sink.token_ids() == multi.token_ids()


def test_real_model_cached_runs_match_cold_runs(tiny_model_path: Path) -> None:
    prompt_text = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + "Be brief. " * 30
    runners = [LlamaCppRunner(tiny_model_path, kv_size=4 * 256, max_seqs=4) for _ in range(2)]
    try:
        cold = LLMEngine(runners[0], ctx_size=256, max_queue=8)
        warm = LLMEngine(runners[1], ctx_size=256, max_queue=8, prefix_caching=True)
        system = runners[0].tokenize(prompt_text)
        prompts = [system + runners[0].tokenize(f"Question {i}: why?") for i in range(4)]
        results = []
        for engine in (cold, warm):
            sinks = [submit(engine, p, temperature=0.0, max_tokens=12, ignore_eos=True)[1] for p in prompts]
            run_until_done(engine)
            again = submit(engine, prompts[0] + sinks[0].token_ids()[0], temperature=0.0, max_tokens=12)
            run_until_done(engine)
            results.append([s.token_ids()[0] for s in sinks] + [again[1].token_ids()[0]])
        assert results[0] == results[1]
        assert again[0].num_cached_tokens >= len(prompts[0]) + 10
    finally:
        for runner in runners:
            runner.close()


def test_real_model_concurrent_shared_prefix_is_computed_once(tiny_model_path: Path) -> None:
    runner = LlamaCppRunner(tiny_model_path, kv_size=8 * 512, max_seqs=8, max_batch_tokens=128)
    try:
        engine = LLMEngine(runner, ctx_size=512, max_queue=16, prefix_caching=True)
        system = runner.tokenize("<|begin_of_text|>" + "You answer in one word. " * 40)
        prompts = [system + runner.tokenize(f" Item {i}?") for i in range(8)]
        requests = [submit(engine, p, temperature=0.0, max_tokens=4, ignore_eos=True)[0] for p in prompts]
        run_until_done(engine)
        assert requests[0].num_cached_tokens == 0
        assert all(r.num_cached_tokens >= len(system) - 1 for r in requests[1:])
    finally:
        runner.close()


def test_a_cache_in_the_lowest_free_slot_moves_aside_for_a_newcomer() -> None:
    runner = FakeRunner(max_seqs=3)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8, prefix_caching=True)
    turn_1 = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    _, first = submit(engine, turn_1, temperature=0.0, max_tokens=4)
    run_until_done(engine)
    submit(engine, [20, 21, 22], temperature=0.0, max_tokens=30)  # another user takes slot 0
    engine.step()
    assert engine.prefix_cache.idle_slots == [2]  # turn 1's cache moved to the highest empty slot
    turn_2 = turn_1 + first.token_ids()[0] + [7, 7]
    request, second = submit(engine, turn_2, temperature=0.0, max_tokens=4)
    run_until_done(engine)
    assert request.num_cached_tokens == len(turn_1) + 3
    assert second.token_ids()[0] == cold_tokens(turn_2, 4)


def test_a_prefix_held_by_several_slots_is_copied_from_the_one_with_the_fewest_cells() -> None:
    """A copy moves a whole sequence: a chat header every slot holds is taken from a short prompt, not from a long
    history (with one KV stream per sequence, 2,000 tokens of a 1B model are 65 MB to copy)."""
    runner = FakeRunner(max_seqs=4, ctx_size=96)
    engine = LLMEngine(runner, ctx_size=96, max_queue=8, prefix_caching=True)
    header = list(range(1, 11))
    long_history = header + [(5 * i) % 30 + 1 for i in range(40)]
    _, _ = submit(engine, long_history, temperature=0.0, max_tokens=1)
    run_until_done(engine)
    _, short = submit(engine, header + [33, 34], temperature=0.0, max_tokens=30)  # slot 0; the history moves aside
    engine.step()
    engine.step()
    assert engine.prefix_cache.idle_slots == [3] and len(runner.kv[3]) == len(long_history)
    request, newcomer = submit(engine, header + [35, 36, 37], temperature=0.0, max_tokens=4)  # slot 1
    run_until_done(engine)
    assert request.num_cached_tokens == len(header)
    assert [(src, dst) for src, dst, _, _ in runner.copies][-1] == (0, 1)  # from the short prompt's slot, not 3
    assert engine.prefix_cache.slot_copy_seconds > 0
    assert newcomer.token_ids()[0] == cold_tokens(header + [35, 36, 37], 4)
    assert short.token_ids()[0] == cold_tokens(header + [33, 34], 30)
