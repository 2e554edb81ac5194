"""A failure in one request's own work (sampling, detokenizing, constraining its output) ends that request alone:
the others in the same steps finish normally, and the engine goes on serving. The fault is injected into one
request's sampler or detokenizer on the fake runner."""

from __future__ import annotations

import asyncio
from typing import Any

import llguidance
import numpy as np
import pytest

from llamafoundry.engine.async_engine import AsyncEngine
from llamafoundry.engine.client import ModelInfo
from llamafoundry.engine.constraint import ConstraintVocab
from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.outputs import RequestOutput
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.engine.sequence import Request
from llamafoundry.errors import GenerationError

from .fake_runner import FakeRunner
from .test_engine_scheduling import Collector, run_until_done, submit

FAULTY_SEED = 666


def fail_sampler_after(request: Request, num_tokens: int, error: Exception) -> None:
    """Make the request's first sequence raise `error` from its sampler once it has sampled `num_tokens`."""
    seq = request.sequences[0]
    assert seq.sampler is not None
    real_sample = seq.sampler.sample

    def sample(logits: np.ndarray) -> int:
        if len(seq.output_ids) >= num_tokens:
            raise error
        return real_sample(logits)

    seq.sampler.sample = sample  # type: ignore[method-assign]


def start(engine: LLMEngine, request: Request) -> None:
    while not request.sequences:
        engine.step()


def test_a_sampler_fault_ends_its_request_alone_and_the_others_finish() -> None:
    engine = LLMEngine(FakeRunner(max_seqs=4), ctx_size=64, max_queue=8)
    bad, bad_sink = submit(engine, [1, 2, 3], temperature=0.0, max_tokens=8)
    good, good_sink = submit(engine, [4, 5, 6], temperature=0.7, max_tokens=8, n=2, seed=5)  # seeded: EOG is a token
    start(engine, bad)
    fail_sampler_after(bad, 3, IndexError("index -1 is out of bounds for axis 0 with size 0"))
    run_until_done(engine)

    [error] = bad_sink.errors
    assert isinstance(error, GenerationError)
    assert "IndexError: index -1 is out of bounds" in error.message
    assert "Other requests were not affected" in error.message
    assert not good_sink.errors and good_sink.finish_reasons() == {0: "length", 1: "length"}
    assert all(len(ids) == 8 for ids in good_sink.token_ids().values())
    # the failed request's slot is free again: a request needing every slot runs
    after, after_sink = submit(engine, [7], temperature=0.0, max_tokens=3, n=4)
    run_until_done(engine)
    assert not after_sink.errors and after_sink.finish_reasons() == {i: "length" for i in range(4)}


def test_a_fault_while_sampling_the_first_token_or_detokenizing_is_contained() -> None:
    engine = LLMEngine(FakeRunner(max_seqs=4), ctx_size=64, max_queue=8, prefix_caching=True)
    first, first_sink = submit(engine, [1, 2, 3], temperature=0.0, max_tokens=5)
    detok, detok_sink = submit(engine, [2, 3, 4], temperature=0.0, max_tokens=5)
    good, good_sink = submit(engine, [3, 4, 5], temperature=0.0, max_tokens=5)
    engine.step()  # admitted, prompts not yet sampled
    fail_sampler_after(first, 0, FloatingPointError("overflow"))

    def broken_push(piece: bytes) -> str:
        raise UnicodeDecodeError("utf-8", piece, 0, 1, "invalid start byte")

    detok.sequences[0].detokenizer.push = broken_push  # type: ignore[method-assign]
    run_until_done(engine)

    assert "FloatingPointError: overflow" in first_sink.errors[0].message  # type: ignore[attr-defined]
    assert "UnicodeDecodeError" in detok_sink.errors[0].message  # type: ignore[attr-defined]
    assert not good_sink.errors and good_sink.finish_reasons() == {0: "length"}


def test_a_fault_while_setting_up_a_request_frees_every_slot_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    class Grammar:
        def clone(self) -> Any:
            raise RuntimeError("llguidance could not copy the grammar")

    monkeypatch.setattr(ConstraintVocab, "compile", lambda self, grammar: Grammar())
    engine = LLMEngine(FakeRunner(max_seqs=4), ctx_size=64, max_queue=8)
    sink = Collector()
    grammar = str(llguidance.LLMatcher.grammar_from_lark('start: "a"'))
    params = SamplingParams(temperature=0.0, max_tokens=4, n=3, grammar=grammar)
    engine.add_request(engine.make_request("bad", [1, 2], params, sink))
    good, good_sink = submit(engine, [1, 2], temperature=0.0, max_tokens=4)
    run_until_done(engine)
    assert "RuntimeError: llguidance could not copy the grammar" in sink.errors[0].message  # type: ignore[attr-defined]
    assert not good_sink.errors and good_sink.finish_reasons() == {0: "length"}
    assert engine.scheduler.num_free_slots == 4


def test_a_concurrent_stream_finishes_beside_a_failing_request_on_the_async_engine() -> None:
    async def scenario() -> tuple[BaseException | None, list[RequestOutput]]:
        runner = FakeRunner(max_seqs=2)
        info = ModelInfo("fake", "Meta", 64, None, "<s>", "</s>")
        engine = AsyncEngine(lambda: runner, ctx_size=64, max_queue=4, describe=lambda _: info, prefix_caching=False)
        await engine.start()
        try:
            stream = await engine.add_request([4, 5, 6], SamplingParams(temperature=0.0, max_tokens=40))
            bad = await engine.add_request([1, 2, 3], SamplingParams(temperature=0.5, max_tokens=40, seed=FAULTY_SEED))
            bad_error: BaseException | None = None
            outputs: list[RequestOutput] = []

            async def read_bad() -> None:
                nonlocal bad_error
                try:
                    async for _ in bad:
                        pass
                except GenerationError as exc:
                    bad_error = exc

            async def read_good() -> None:
                async for output in stream:
                    outputs.append(output)

            await asyncio.wait_for(asyncio.gather(read_bad(), read_good()), 30)
            return bad_error, outputs
        finally:
            await engine.stop()

    original = LLMEngine._allocate

    def allocate_with_fault(self: LLMEngine, request: Request, slots: list[int]) -> None:
        original(self, request, slots)
        if request.params.seed == FAULTY_SEED:
            fail_sampler_after(request, 2, IndexError("injected"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LLMEngine, "_allocate", allocate_with_fault)
        bad_error, outputs = asyncio.run(scenario())
    assert isinstance(bad_error, GenerationError) and "IndexError: injected" in bad_error.message
    assert outputs[-1].finished and outputs[-1].num_completion_tokens == 40
    assert outputs[-1].deltas[-1].finish_reason is not None
