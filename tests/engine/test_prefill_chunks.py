"""The per-step prefill budget: long prompts never hold running streams for more than one short chunk, and
prompts queued together get their first tokens one after another."""

from __future__ import annotations

from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.outputs import RequestOutput

from .fake_runner import FakeRunner
from .test_engine_scheduling import run_until_done, submit


def test_each_step_computes_at_most_max_prefill_tokens_and_decodes_every_stream() -> None:
    runner = FakeRunner(max_seqs=3, max_batch_tokens=32)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=4)
    _, running = submit(engine, [1, 2], temperature=0.0, max_tokens=30)
    engine.step()
    _, long_prompt = submit(engine, list(range(1, 41)), temperature=0.0, max_tokens=3)
    run_until_done(engine)
    for batch in runner.batches:
        prompt_tokens = [t for t in batch if t[2] == (1,) and not t[3]]
        assert len(prompt_tokens) <= 4
    decoding_steps = runner.batches[1:11]
    assert all(any(t[2] == (0,) for t in b) for b in decoding_steps), "the running stream decodes every step"
    assert running.finish_reasons() == {0: "length"} and long_prompt.finish_reasons() == {0: "length"}


def test_prompts_queued_together_get_first_tokens_in_turn() -> None:
    runner = FakeRunner(max_seqs=4, max_batch_tokens=64)
    engine = LLMEngine(runner, ctx_size=128, max_queue=8, max_prefill_tokens=6)
    sinks = [submit(engine, [i + 1] * 6, temperature=0.0, max_tokens=4)[1] for i in range(4)]
    first_step: list[int] = []
    step = 0
    while engine.has_work:
        engine.step()
        step += 1
        for index, sink in enumerate(sinks):
            has_output = any(isinstance(o, RequestOutput) and o.deltas for o in sink.outputs)
            if has_output and len(first_step) == index:
                first_step.append(step)
    assert first_step == [1, 2, 3, 4]
