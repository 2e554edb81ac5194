"""Scheduling logic of LLMEngine on a fake runner: batching, chunked prefill, slots, queueing, forks, aborts."""

from __future__ import annotations

import pytest

from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.outputs import RequestOutput
from llamafoundry.engine.sampler import choice_seed
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.engine.sequence import Request
from llamafoundry.errors import EngineError, PromptTooLongError, RequestTooLargeError

from .fake_runner import EOG, FakeRunner, record_steps


class Collector:
    def __init__(self) -> None:
        self.outputs: list[object] = []

    def __call__(self, item: object) -> None:
        self.outputs.append(item)

    @property
    def finished(self) -> bool:
        return any(isinstance(o, RequestOutput) and o.finished for o in self.outputs) or self.errors

    @property
    def has_output(self) -> bool:
        """Some output with a delta has come (the prompt is computed and a first token sampled)."""
        return any(isinstance(o, RequestOutput) and o.deltas for o in self.outputs)

    @property
    def errors(self) -> list[object]:
        return [o for o in self.outputs if isinstance(o, Exception)]

    def texts(self) -> dict[int, str]:
        texts: dict[int, str] = {}
        for out in self.outputs:
            assert isinstance(out, RequestOutput)
            for d in out.deltas:
                texts[d.index] = texts.get(d.index, "") + d.text
        return texts

    def finish_reasons(self) -> dict[int, str]:
        return {d.index: d.finish_reason.value for o in self.outputs for d in o.deltas if d.finish_reason}

    def token_ids(self) -> dict[int, list[int]]:
        ids: dict[int, list[int]] = {}
        for out in self.outputs:
            for d in out.deltas:
                ids.setdefault(d.index, []).extend(d.token_ids)
        return ids


def submit(engine: LLMEngine, prompt: list[int], **params: object) -> tuple[Request, Collector]:
    sink = Collector()
    request = engine.make_request(f"r{id(sink)}", prompt, SamplingParams(**params), sink)
    engine.add_request(request)
    return request, sink


def run_until_done(engine: LLMEngine, max_steps: int = 500) -> int:
    steps = 0
    while engine.has_work:
        engine.step()
        steps += 1
        assert steps < max_steps, "engine did not finish"
    return steps


def greedy(**extra: object) -> dict[str, object]:
    return {"temperature": 0.0, "max_tokens": 5, **extra}


def test_every_step_decodes_all_running_sequences_and_chunks_long_prompts() -> None:
    runner = FakeRunner(max_seqs=4, max_batch_tokens=8)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    steps = record_steps(engine, runner)
    _, short = submit(engine, [1, 2, 3], **greedy(max_tokens=10))
    engine.step()  # prefill of the short prompt
    engine.step()  # its first decode
    _, long_sink = submit(engine, list(range(1, 21)), **greedy())
    run_until_done(engine)
    # While the 20-token prompt is prefilled in chunks, the running request still gets its token each step.
    for tokens in steps[2:5]:
        seqs = [b[2] for b in tokens]
        assert (0,) in seqs and len(tokens) <= 8
    prefill_tokens = sum(1 for batch in runner.batches for tok in batch if tok[2] == (1,) and not tok[3])
    assert prefill_tokens == 19  # every prompt token but the last (which asks for logits) exactly once
    assert short.finish_reasons() == {0: "length"} and long_sink.finish_reasons() == {0: "length"}


def test_requests_wait_for_free_slots_and_run_in_order() -> None:
    runner = FakeRunner(max_seqs=2)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    sinks = [submit(engine, [i + 1, 2], **greedy(max_tokens=3))[1] for i in range(5)]
    engine.step()
    assert engine.num_running == 2 and engine.num_waiting == 3
    run_until_done(engine)
    assert all(s.finish_reasons() == {0: "length"} for s in sinks)
    assert runner.kv == {}, "finished sequences must free their KV cells"


def test_finished_sequence_frees_its_slot_at_once() -> None:
    runner = FakeRunner(max_seqs=1, eog_after=4)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    _, first = submit(engine, [1, 2], **greedy(max_tokens=50))
    _, second = submit(engine, [3, 4], **greedy(max_tokens=50))
    run_until_done(engine)
    assert first.finish_reasons() == {0: "stop"} and second.finish_reasons() == {0: "stop"}
    assert "<eog>" not in first.texts()[0] and first.token_ids()[0][-1] == EOG


def test_abort_frees_slot_for_waiting_request() -> None:
    runner = FakeRunner(max_seqs=1)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    running, _ = submit(engine, [1, 2], **greedy(max_tokens=40))
    _, waiting = submit(engine, [3], **greedy(max_tokens=2))
    engine.step()
    engine.step()
    assert engine.num_waiting == 1
    engine.abort(running)
    assert 0 not in runner.kv
    run_until_done(engine)
    assert waiting.finish_reasons() == {0: "length"}


def test_n_forks_the_prompt_once_and_each_choice_matches_a_solo_run() -> None:
    runner = FakeRunner(max_seqs=4)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    prompt = [5, 6, 7, 8, 9]
    _, multi = submit(engine, prompt, temperature=0.9, seed=11, n=3, max_tokens=6)
    run_until_done(engine)
    prompt_tokens = sum(1 for batch in runner.batches for tok in batch if not tok[3])
    assert prompt_tokens == len(prompt) - 1
    assert sorted(multi.texts()) == [0, 1, 2]
    for index in range(3):
        solo_runner = FakeRunner(max_seqs=1)
        solo = LLMEngine(solo_runner, ctx_size=64, max_queue=8)
        _, sink = submit(solo, prompt, temperature=0.9, seed=choice_seed(11, index), n=1, max_tokens=6)
        run_until_done(solo)
        assert sink.token_ids()[0] == multi.token_ids()[index]


def test_best_of_returns_n_best_choices_at_the_end() -> None:
    runner = FakeRunner(max_seqs=4)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    _, sink = submit(engine, [1, 2, 3], temperature=1.0, seed=3, n=2, best_of=4, max_tokens=4)
    run_until_done(engine)
    outputs = [o for o in sink.outputs if isinstance(o, RequestOutput)]
    assert len(outputs) == 1 and outputs[0].finished  # nothing streams before ranking
    assert sorted(sink.texts()) == [0, 1]
    assert outputs[0].num_completion_tokens == 16  # all candidates are counted


def test_beam_search_keeps_kv_consistent_and_returns_n_beams() -> None:
    runner = FakeRunner(max_seqs=4)
    engine = LLMEngine(runner, ctx_size=64, max_queue=8)
    _, sink = submit(engine, [1, 2, 3], temperature=0.0, n=2, best_of=3, use_beam_search=True, max_tokens=5)
    run_until_done(engine)
    assert sorted(sink.texts()) == [0, 1]
    assert set(sink.finish_reasons().values()) <= {"length", "stop"}
    assert runner.kv == {}
    assert engine.scheduler.num_free_slots == 4


def test_request_errors_name_the_limit() -> None:
    engine = LLMEngine(FakeRunner(max_seqs=2), ctx_size=16, max_queue=8)
    with pytest.raises(PromptTooLongError, match="16 tokens"):
        engine.make_request("a", list(range(20)), SamplingParams(), Collector())
    with pytest.raises(PromptTooLongError, match="max_tokens"):
        engine.make_request("b", [1, 2], SamplingParams(max_tokens=15), Collector())
    with pytest.raises(RequestTooLargeError, match="--parallel 3"):
        engine.make_request("c", [1, 2], SamplingParams(n=3), Collector())
    with pytest.raises(EngineError):
        engine.make_request("d", [], SamplingParams(), Collector())


def test_stop_token_ids_and_ignore_eos() -> None:
    engine = LLMEngine(FakeRunner(max_seqs=2, eog_after=3), ctx_size=64, max_queue=8)
    _, ignoring = submit(engine, [1, 2], **greedy(max_tokens=8, ignore_eos=True))
    run_until_done(engine)
    assert ignoring.finish_reasons() == {0: "length"}
    assert EOG not in ignoring.token_ids()[0]
    _, plain = submit(engine, [1, 2], **greedy(max_tokens=8))
    run_until_done(engine)
    first = plain.token_ids()[0][0]
    _, stopping = submit(engine, [1, 2], **greedy(max_tokens=8, stop_token_ids=[first]))
    run_until_done(engine)
    assert stopping.finish_reasons() == {0: "stop"} and stopping.texts()[0] == ""
