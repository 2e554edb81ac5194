"""The per-step prefill budget: long prompts never hold running streams for more than one short chunk, and
prompts queued together get their first tokens one after another."""

from __future__ import annotations

from llamafoundry.engine.engine import LLMEngine

from .fake_runner import FakeRunner, record_steps
from .test_engine_scheduling import run_until_done, submit


def test_steps_that_decode_take_fewer_prompt_tokens_and_every_stream_decodes_each_step() -> None:
    runner = FakeRunner(max_seqs=3, max_batch_tokens=32)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=12, max_prefill_tokens_while_decoding=4)
    steps = record_steps(engine, runner)
    _, running = submit(engine, [1, 2], temperature=0.0, max_tokens=30)
    engine.step()
    _, long_prompt = submit(engine, list(range(1, 41)), temperature=0.0, max_tokens=3)
    run_until_done(engine)
    for batch in runner.batches:
        prompt_tokens = [t for t in batch if t[2] == (1,) and not t[3]]
        assert len(prompt_tokens) <= 4
    alone = FakeRunner(max_seqs=1, max_batch_tokens=32)
    solo = LLMEngine(alone, ctx_size=128, max_queue=8, max_prefill_tokens=12, max_prefill_tokens_while_decoding=4)
    submit(solo, list(range(1, 41)), temperature=0.0, max_tokens=3)
    run_until_done(solo)
    # nothing decodes: the larger chunks, and the last 16 tokens (within 1.5 x 12) in one
    assert [len(b) for b in alone.batches[:3]] == [12, 12, 16]
    decoding_steps = steps[1:11]
    assert all(any(t[2] == (0,) for t in b) for b in decoding_steps), "the running stream decodes every step"
    assert running.finish_reasons() == {0: "length"} and long_prompt.finish_reasons() == {0: "length"}


def first_token_steps(engine: LLMEngine, sinks: list) -> list[int]:
    """The step at which each sink got its first output."""
    firsts: dict[int, int] = {}
    step = 0
    while engine.has_work:
        engine.step()
        step += 1
        for index, sink in enumerate(sinks):
            if sink.has_output:
                firsts.setdefault(index, step)
    return [firsts[i] for i in range(len(sinks))]


def test_prompts_queued_together_get_first_tokens_in_turn() -> None:
    runner = FakeRunner(max_seqs=4, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=6, max_prefill_tokens_while_decoding=6)
    sinks = [submit(engine, [i + 1] * 6, temperature=0.0, max_tokens=4)[1] for i in range(4)]
    assert first_token_steps(engine, sinks) == [1, 2, 3, 4]


def test_a_burst_of_prompts_is_computed_in_large_chunks_even_while_a_stream_decodes() -> None:
    runner = FakeRunner(max_seqs=8, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40, max_prefill_tokens_while_decoding=4)
    steps = record_steps(engine, runner)
    submit(engine, [1, 2], temperature=0.0, max_tokens=30)
    engine.step()
    for i in range(7):  # seven prompts against one decoding stream: a burst of 70 tokens, over 1.5 x 40
        submit(engine, [i + 3] * 10, temperature=0.0, max_tokens=3)
    engine.step()
    assert sum(1 for tok in steps[-1] if tok[2] != (0,)) == 40  # four whole prompts at once
    engine.step()  # five streams decode, three prompts are left: they go in small chunks
    assert sorted(tok[2][0] for tok in steps[-1]) == [0, 1, 2, 3, 4, 5, 5, 5, 5]
    run_until_done(engine)


def test_a_burst_just_over_the_prompt_budget_is_finished_in_one_step() -> None:
    """What a burst step leaves is otherwise computed in small chunks beside the streams it started, each step
    costing them a second pass over the weights; up to 1.5 x the budget goes in the burst step instead."""
    runner = FakeRunner(max_seqs=8, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40, max_prefill_tokens_while_decoding=4)
    steps = record_steps(engine, runner)
    submit(engine, [1, 2], temperature=0.0, max_tokens=30)
    engine.step()
    sinks = [submit(engine, [i + 3] * 10, temperature=0.0, max_tokens=3)[1] for i in range(5)]  # 50 tokens
    engine.step()
    assert sum(1 for tok in steps[-1] if tok[2] != (0,)) == 50
    assert all(sink.has_output for sink in sinks)
    engine.step()  # six streams decode, no prompt is left
    assert sorted(tok[2][0] for tok in steps[-1]) == [0, 1, 2, 3, 4, 5]
    run_until_done(engine)


def test_a_small_burst_of_long_prompts_is_computed_a_prompt_a_step_shortest_first() -> None:
    """Three returning turns of ~100 new tokens arriving together: one step for all three gave each its first token
    after all 300 tokens; a prompt a step gives the first after 100, the next after 200."""
    runner = FakeRunner(max_seqs=8, max_batch_tokens=512)
    engine = LLMEngine(runner, ctx_size=256, max_queue=8, max_prefill_tokens=512, max_prefill_tokens_while_decoding=16,
                       prompt_tokens_shared_while_decoding=256)  # fmt: skip
    steps = record_steps(engine, runner)
    lengths = (110, 90, 100)
    sinks = [submit(engine, [i + 1] * length, temperature=0.0, max_tokens=4)[1] for i, length in enumerate(lengths)]
    assert first_token_steps(engine, sinks) == [3, 1, 2]
    assert {tok[2][0] for tok in steps[0]} == {1} and len(steps[0]) == 90
    assert len(steps[1]) == 100 + 1 and len(steps[2]) == 110 + 2  # beside the streams already answering


def test_a_small_burst_of_short_prompts_and_a_large_burst_stay_in_one_step() -> None:
    """Prompts shorter than STAGGER_MIN_TOKENS together go in one step, and so does a burst of more streams than
    STAGGER_MAX_STREAMS: there the extra passes over the weights for the first streams would cost more."""
    for count, length in ((3, 20), (10, 40)):
        runner = FakeRunner(max_seqs=12, max_batch_tokens=512)
        engine = LLMEngine(runner, ctx_size=256, max_queue=12, max_prefill_tokens=512)
        sinks = [submit(engine, [i + 1] * length, temperature=0.0, max_tokens=2)[1] for i in range(count)]
        assert first_token_steps(engine, sinks) == [1] * count


def test_the_burst_stretch_stays_within_the_batch() -> None:
    runner = FakeRunner(max_seqs=8, max_batch_tokens=48)  # 1 decoding token + 50 prompt tokens do not fit
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40, max_prefill_tokens_while_decoding=4)
    steps = record_steps(engine, runner)
    submit(engine, [1, 2], temperature=0.0, max_tokens=30)
    engine.step()
    for i in range(5):
        submit(engine, [i + 3] * 10, temperature=0.0, max_tokens=3)
    engine.step()
    assert len(steps[-1]) == 41  # the decoding token and the 40-token budget
    run_until_done(engine)


def test_batch_tokens_go_in_ascending_sequence_id_and_slots_are_the_lowest_free() -> None:
    runner = FakeRunner(max_seqs=4, max_batch_tokens=32)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    steps = record_steps(engine, runner)
    sinks = [submit(engine, [i + 1, 2, 3], temperature=0.0, max_tokens=6 + 4 * i)[1] for i in range(4)]
    while not sinks[1].finished:  # slots 0 then 1 come free; 2 and 3 still run
        engine.step()
    _, late = submit(engine, [9, 9, 9], temperature=0.0, max_tokens=2)
    engine.step()
    assert (0,) in [tok[2] for tok in steps[-1] if not tok[3]], "the lowest free slot, not the latest"
    run_until_done(engine)
    for batch in runner.batches:
        seq_ids = [tok[2][0] for tok in batch]
        assert seq_ids == sorted(seq_ids)
    assert late.finish_reasons() == {0: "length"}


def test_a_prompt_beside_few_decoding_streams_takes_a_larger_chunk() -> None:
    """A chunk beside decoding streams is a second pass over the weights: 16-token chunks cost ~2x per token what
    larger ones do, and made a returning turn of ~60 new tokens wait 4 steps. The decoding streams share a budget:
    each waits for the step, so with few of them the chunk is larger."""
    for num_decoding, chunk in ((1, 24), (2, 12), (4, 6), (6, 4)):
        runner = FakeRunner(max_seqs=8, max_batch_tokens=64)
        engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40,
                           max_prefill_tokens_while_decoding=4, prompt_tokens_shared_while_decoding=24)  # fmt: skip
        steps = record_steps(engine, runner)
        for i in range(num_decoding):
            submit(engine, [i + 1, 2], temperature=0.0, max_tokens=40)
        engine.step()
        _, late = submit(engine, [30] * 120, temperature=0.0, max_tokens=2)  # over 4x the share: not taken whole
        engine.step()
        seq = num_decoding  # the lowest free slot
        assert sum(1 for tok in steps[-1] if tok[2] == (seq,)) == chunk, num_decoding
        run_until_done(engine)
        assert late.finish_reasons() == {0: "length"}


def test_a_short_prompt_goes_before_a_long_one_being_computed() -> None:
    """A returning conversation's few new tokens must not wait behind another conversation's long first turn:
    prompts are computed shortest remaining first (48 conversations with 2,000-token histories waited 9 s a
    returning turn against llama-server's 2.8 s when the long prompts went first)."""
    runner = FakeRunner(max_seqs=4, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=256, max_queue=8, max_prefill_tokens=16, max_prefill_tokens_while_decoding=16)
    steps = record_steps(engine, runner)
    _, long_prompt = submit(engine, [7] * 160, temperature=0.0, max_tokens=2)
    engine.step()  # the long prompt's first chunk
    _, short_prompt = submit(engine, [8] * 12, temperature=0.0, max_tokens=2)
    engine.step()
    assert sum(1 for tok in steps[-1] if tok[2] == (1,)) == 12, "the short prompt whole, in one step"
    assert short_prompt.has_output
    assert not long_prompt.has_output
    run_until_done(engine)
    assert long_prompt.finish_reasons() == {0: "length"} and short_prompt.finish_reasons() == {0: "length"}


def test_a_long_prompt_is_not_passed_over_for_ever() -> None:
    """Short prompts arriving one after another would starve a long one under pure shortest-first; waiting ages
    it forward."""
    runner = FakeRunner(max_seqs=2, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=256, max_queue=64, max_prefill_tokens=8, max_prefill_tokens_while_decoding=8)
    _, long_prompt = submit(engine, [7] * 200, temperature=0.0, max_tokens=1)
    for step in range(400):
        if not any(r.num_prompt_tokens == 8 for r in engine.scheduler.waiting):  # always a short one queued,
            submit(engine, [9, step % 50 + 10, 3, 4, 5, 6, 7, 8], temperature=0.0, max_tokens=1)  # a step's budget
        engine.step()
        if long_prompt.finished:
            break
    assert long_prompt.finished, "the long prompt was computed although short ones kept coming"


def test_a_prompt_beside_streams_about_to_finish_is_spread_over_their_steps() -> None:
    """Beside streams with 8 tokens left, a 40-token prompt takes 5 a step (done when they are), not the
    4-token minimum chunk: each extra step carrying a chunk beside decoding streams is another pass over the
    weights."""
    runner = FakeRunner(max_seqs=8, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40, max_prefill_tokens_while_decoding=4,
                       prompt_tokens_shared_while_decoding=8)  # fmt: skip
    steps = record_steps(engine, runner)
    for i in range(2):
        submit(engine, [i + 1, 2], temperature=0.0, max_tokens=9)
    engine.step()  # both prompts; each has its first token, 8 to go
    _, late = submit(engine, [30] * 40, temperature=0.0, max_tokens=2)
    engine.step()
    assert sum(1 for tok in steps[-1] if tok[2] == (2,)) == 5
    run_until_done(engine)
    assert late.finish_reasons() == {0: "length"}


def test_a_returning_turns_few_new_tokens_go_in_one_step_beside_decoding_streams() -> None:
    """Up to 4x the step's share, the prompt first in line is computed whole: three or four chunks would each be
    another pass over the weights for every decoding stream, and the returning user waits for all of them."""
    for prompt_len, chunk in ((24, 24), (30, 6)):
        runner = FakeRunner(max_seqs=8, max_batch_tokens=64)
        engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40,
                           max_prefill_tokens_while_decoding=4, prompt_tokens_shared_while_decoding=24)  # fmt: skip
        steps = record_steps(engine, runner)
        for i in range(4):  # 24 / 4 streams: a share of 6
            submit(engine, [i + 1, 2], temperature=0.0, max_tokens=40)
        engine.step()
        _, late = submit(engine, [30] * prompt_len, temperature=0.0, max_tokens=2)
        engine.step()
        assert sum(1 for tok in steps[-1] if tok[2] == (4,)) == chunk, prompt_len
        run_until_done(engine)
        assert late.finish_reasons() == {0: "length"}


def test_returning_turns_arriving_together_finish_in_the_same_step() -> None:
    runner = FakeRunner(max_seqs=8, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40, max_prefill_tokens_while_decoding=4,
                       prompt_tokens_shared_while_decoding=24)  # fmt: skip
    for i in range(4):
        submit(engine, [i + 1, 2], temperature=0.0, max_tokens=40)
    engine.step()
    late = [submit(engine, [30 + i] * 8, temperature=0.0, max_tokens=2)[1] for i in range(3)]  # 24 <= 4 x 6
    engine.step()
    assert all(sink.has_output for sink in late)
    run_until_done(engine)


def test_prompt_chunks_are_computed_in_a_call_of_their_own_beside_decoding_streams() -> None:
    """Beside one-token rows of decoding sequences, llama.cpp computed a prompt chunk ~1.4x slower than the same two
    batches in two calls (docs/benchmarks.md): a step with both makes two, the prompt chunks first, and a prompt it
    finishes samples its first token from its own logits (kept from the first call), as it would alone."""

    def run(with_company: bool) -> tuple[list[list[tuple[int, ...]]], list[int]]:
        runner = FakeRunner(max_seqs=4, max_batch_tokens=64)
        engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=40,
                           max_prefill_tokens_while_decoding=40, batch_pad=0)  # fmt: skip
        if with_company:
            submit(engine, [1, 2], temperature=0.0, max_tokens=8)
            engine.step()  # its prompt, and its first token
        before = len(runner.batches)
        _, late = submit(engine, [5, 6, 7, 8], temperature=0.0, max_tokens=4)
        engine.step()
        calls = [sorted({tok[2] for tok in batch}) for batch in runner.batches[before:]]
        run_until_done(engine)
        return calls, late.token_ids()[0]

    calls, beside = run(with_company=True)
    assert calls == [[(1,)], [(0,)]]  # the prompt alone, then the decoding stream's token
    alone_calls, alone = run(with_company=False)
    assert alone_calls == [[(0,)]] and beside == alone
