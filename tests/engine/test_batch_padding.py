"""Batch padding: free slots get a throwaway token so a step runs as one pass of 16 sequences (scheduler logic,
the engine's KV bookkeeping on the fake runner, and unchanged outputs through llama.cpp)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.scheduler import padding_slots

from .fake_runner import FakeRunner
from .test_engine_llamacpp import PROMPT, collect, run_engine, token_ids
from .test_engine_scheduling import run_until_done, submit

ALL = set(range(16))


def test_padding_fills_a_step_just_short_of_sixteen_or_split_into_runs() -> None:
    assert padding_slots(list(range(15)), {15}, 16, 16) == [15]
    assert padding_slots(list(range(14)), {14, 15}, 16, 16) == [14, 15]
    two_gaps = sorted(ALL - {3, 9})
    assert padding_slots(two_gaps, {3, 9}, 16, 16) == [3, 9]
    split = [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]  # 10 sequences in two runs: one pass instead of two
    assert padding_slots(split, ALL - set(split), 16, 16) == [5, 6, 7, 8, 9, 15]


def test_no_padding_where_it_would_not_pay_or_cannot_be_done() -> None:
    assert padding_slots(list(range(13)), {13, 14, 15}, 16, 16) == []  # one run, well short of 16: cheaper as is
    assert padding_slots([0, 1, 2, 3, 8, 9, 10, 11], ALL, 16, 16) == []  # 8 in two runs: no gain on these kernels
    assert padding_slots(list(range(15)), set(), 16, 16) == []  # slot 15 is running (or full)
    assert padding_slots(list(range(16)), set(), 16, 16) == []
    assert padding_slots(list(range(15)), {15}, 16, 0) == []  # turned off
    assert padding_slots([0, 1, 2], {3}, 4, 16) == []  # fewer slots than the pass size


def test_padding_picks_a_window_of_free_ids_when_there_are_more_slots() -> None:
    ids = list(range(10, 24))  # 14 sequences among 32 slots
    assert padding_slots(ids, set(range(32)) - set(ids), 32, 16) == [24, 25]
    assert padding_slots(ids, {8, 9}, 32, 16) == [8, 9]  # only the ids below are free


def _run_fifteen(batch_pad: int, prefix_caching: bool) -> tuple[FakeRunner, list[list[int]]]:
    runner = FakeRunner(max_seqs=16, max_batch_tokens=64, ctx_size=64)
    engine = LLMEngine(runner, ctx_size=64, max_queue=32, prefix_caching=prefix_caching, batch_pad=batch_pad)
    sinks = [submit(engine, [1 + i, 2, 3 + i % 5], temperature=0.0, max_tokens=6)[1] for i in range(15)]
    run_until_done(engine)
    return runner, [sink.token_ids()[0] for sink in sinks]


def test_engine_pads_free_slots_for_the_step_and_removes_the_tokens_after() -> None:
    runner, outputs = _run_fifteen(16, prefix_caching=False)
    padded = [b for b in runner.batches if len({t[2][0] for t in b}) == 16]
    assert padded, "15 decoding sequences should have been padded to 16"
    assert all(any(t[2] == (15,) and not t[3] for t in b) for b in padded)  # the throwaway token asks no logits
    assert 15 not in runner.kv  # removed after each step (the fake checks every position follows the last)
    assert outputs == _run_fifteen(0, prefix_caching=False)[1]


def test_padding_keeps_an_idle_slots_cached_prefix() -> None:
    runner = FakeRunner(max_seqs=16, max_batch_tokens=64, ctx_size=64)
    engine = LLMEngine(runner, ctx_size=64, max_queue=32, prefix_caching=True)
    prompt = list(range(1, 13))
    _, first = submit(engine, prompt, temperature=0.0, max_tokens=4)
    run_until_done(engine)  # one slot is now idle, holding the prompt and the reply
    for i in range(15):  # 15 slots busy: the idle one is the free slot that gets padded
        submit(engine, [30 + i % 7, 2, 3], temperature=0.0, max_tokens=3)
    steps_before = len(runner.batches)
    run_until_done(engine)
    assert any(len({t[2][0] for t in b}) == 16 for b in runner.batches[steps_before:])
    request, again = submit(engine, prompt, temperature=0.0, max_tokens=4)
    run_until_done(engine)
    assert request.num_cached_tokens == len(prompt) - 1 and again.token_ids() == first.token_ids()


def test_prompt_chunks_alone_are_never_padded() -> None:
    runner, _ = _run_fifteen(16, prefix_caching=False)
    first = runner.batches[0]  # 15 prompts of 3 tokens computed together, nothing decoding yet
    assert len({t[2][0] for t in first}) == 15


def test_padded_steps_give_the_same_greedy_outputs_through_llama_cpp(tiny_model_path: Path) -> None:
    prompts = [PROMPT.replace("a story", f"story number {i}") for i in range(15)]

    async def body(engine):  # noqa: ANN001, ANN202
        outputs = await asyncio.gather(
            *(collect(engine, p, temperature=0, max_tokens=12, ignore_eos=True) for p in prompts)
        )
        return [token_ids(o)[0] for o in outputs]

    padded = run_engine(tiny_model_path, body, parallel=16, ctx_size=256, batch_pad=16)
    plain = run_engine(tiny_model_path, body, parallel=16, ctx_size=256, batch_pad=0)
    assert padded == plain
