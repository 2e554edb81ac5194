"""Prompt-lookup speculative decoding: the drafter's lookups and gate (pure), the engine's KV bookkeeping on the
fake runner, and unchanged outputs through llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafoundry.engine.async_engine import AsyncEngine
from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.speculative import NgramDrafter

from .fake_runner import FakeRunner
from .test_engine_llamacpp import collect, run_engine, texts, token_ids
from .test_engine_scheduling import Collector, run_until_done, submit

# ---- the drafter ---------------------------------------------------------------------------------


def test_draft_is_what_followed_the_latest_earlier_use_of_the_newest_tokens() -> None:
    drafter = NgramDrafter(max_draft=4, ngram=2)
    prompt = [1, 2, 3, 4, 5, 6, 9, 2, 3, 7, 8]
    assert drafter.propose(prompt, [0, 2, 3], limit=4) == [7, 8, 0, 2]  # the latest (2, 3) was followed by 7


def test_an_index_entry_of_another_ngram_with_the_same_hash_drafts_nothing() -> None:
    drafter = NgramDrafter(max_draft=2, ngram=2)
    assert drafter.propose([5, 6, 7, 8], [1, 2], limit=2) == []
    drafter._follower[hash((1, 2))] = 2  # as if (5, 6), which tokens 2.. follow, had the hash of (1, 2)
    assert drafter.propose([5, 6, 7, 8], [1, 2], limit=2) == []


def test_a_short_cycle_is_drafted_past_the_end_of_the_history() -> None:
    drafter = NgramDrafter(max_draft=7, ngram=2)
    assert drafter.propose([10, 11], [4, 5, 4, 5, 4], limit=7) == [5, 4, 5, 4, 5, 4, 5]
    assert NgramDrafter(max_draft=5, ngram=2).propose([3, 3, 3], [], limit=5) == [3, 3, 3, 3, 3]


def test_no_draft_without_a_match_and_never_past_the_limit() -> None:
    drafter = NgramDrafter(max_draft=15, ngram=2)
    assert drafter.propose([1, 2, 3, 4], [5, 6], limit=15) == []
    assert drafter.propose([1, 2, 3, 4], [5, 6, 1, 2], limit=2) == [3, 4]
    assert drafter.propose([1, 2, 3, 4], [5, 6, 1, 2, 3], limit=0) == []


def test_by_default_only_a_match_of_nine_tokens_drafts() -> None:
    text = list(range(100, 120))
    assert NgramDrafter(max_draft=15).propose(text + [1], text[:8], limit=15) == []  # 8 tokens: chance, in prose
    assert NgramDrafter(max_draft=15).propose(text + [1], text[:9], limit=4) == text[9:13]


def test_the_output_is_indexed_as_it_grows() -> None:
    drafter = NgramDrafter(max_draft=3, ngram=2)
    output = [8, 9, 10, 11]
    assert drafter.propose([1], output, limit=3) == []
    output += [8, 9]
    assert drafter.propose([1], output, limit=3) == [10, 11, 8]


def test_a_draft_that_falls_short_backs_off_for_longer_each_time() -> None:
    drafter = NgramDrafter(max_draft=4, min_accepted=2, ngram=2)
    history = [1, 2, 3, 4, 5, 1, 2]

    def skipped_steps() -> int:
        skipped = 0
        while not drafter.propose(history, [], limit=4):
            skipped += 1
        return skipped

    assert drafter.propose(history, [], limit=4)
    drafter.record(4, 1)
    assert skipped_steps() == 1
    drafter.record(4, 0)
    assert skipped_steps() == 2
    drafter.record(4, 1)
    assert skipped_steps() == 4
    drafter.record(4, 3)  # worth its pass: no back-off, and the next miss waits 1 step again
    assert skipped_steps() == 0
    drafter.record(4, 0)
    assert skipped_steps() == 1


def test_a_short_draft_kept_whole_counts_as_a_success() -> None:
    drafter = NgramDrafter(max_draft=4, min_accepted=3, ngram=2)
    history = [1, 2, 3, 1, 2]
    assert drafter.propose(history, [], limit=2) == [3, 1]
    drafter.record(2, 2)
    assert drafter.propose(history, [], limit=2) == [3, 1]


# ---- the engine on the fake runner ---------------------------------------------------------------


PROMPTS = [[1, 2, 3, 4, 5, 1, 2, 3], [7, 7, 7, 7], [9, 3, 9, 3, 9]]


def _run_sinks(
    max_draft: int, prefix_caching: bool, one_by_one: bool = True, **params: object
) -> tuple[LLMEngine, FakeRunner, list[Collector]]:
    runner = FakeRunner(max_seqs=4, max_batch_tokens=64, ctx_size=96)
    engine = LLMEngine(runner, ctx_size=96, max_queue=8, prefix_caching=prefix_caching, speculative_tokens=max_draft)
    sinks = []
    for prompt in PROMPTS:
        sinks.append(submit(engine, prompt, **params)[1])
        if one_by_one:
            run_until_done(engine)
    run_until_done(engine)
    return engine, runner, sinks


def _run(
    max_draft: int, prefix_caching: bool, one_by_one: bool = True, **params: object
) -> tuple[LLMEngine, FakeRunner, list[list[int]]]:
    engine, runner, sinks = _run_sinks(max_draft, prefix_caching, one_by_one, **params)
    return engine, runner, [ids for sink in sinks for ids in sink.token_ids().values()]


def test_speculative_steps_give_the_same_tokens_and_leave_the_cache_as_plain_steps() -> None:
    for prefix_caching in (False, True):
        # the fake model's greedy output cycles with period 4; sampled at 0.5 it mostly does (drafts partly kept)
        for params in ({"temperature": 0.0, "max_tokens": 40}, {"temperature": 0.5, "seed": 3, "max_tokens": 60}):
            engine, runner, outputs = _run(15, prefix_caching, **params)
            _, plain_runner, plain = _run(0, prefix_caching, **params)
            assert outputs == plain
            # every slot holds what the prefix cache believes (prompt + output but the last), no drafted cell
            held = {seq: list(tokens) for seq, tokens in engine.prefix_cache._idle.items()} if prefix_caching else {}
            assert {seq: cells for seq, cells in runner.kv.items() if cells} == held
            assert engine.num_draft_tokens > 0 and engine.num_accepted_draft_tokens > 0
            assert len(runner.batches) < len(plain_runner.batches)  # kept drafts saved steps
            if params["temperature"]:  # the sampler left some drafts: their cells were removed (checked above)
                assert engine.num_accepted_draft_tokens < engine.num_draft_tokens


def test_concurrent_sequences_draft_together_with_one_length_or_not_at_all() -> None:
    greedy_pairs = {"temperature": 0.0, "max_tokens": 40, "n": 2}  # both choices alike: they draft in the same steps
    for params in (greedy_pairs, {"temperature": 1.0, "seed": 5, "max_tokens": 30}):
        engine, runner, outputs = _run(15, True, one_by_one=False, **params)
        assert engine.num_draft_tokens > 0 or params is not greedy_pairs
        assert outputs == _run(0, True, one_by_one=False, **params)[2]
        for batch in runner.batches:
            decoding = [t for t in batch if t[3]]  # prompt chunks ask logits only at their last token
            per_seq = {seqs: sum(1 for t in decoding if t[2] == seqs) for seqs in {t[2] for t in decoding}}
            assert len(set(per_seq.values())) == 1, per_seq


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0.3, "top_p": 0.95, "seed": 4},
        {"temperature": 0.5, "seed": 4, "presence_penalty": 0.2, "frequency_penalty": 0.1},
        {"temperature": 0.0, "logprobs": True, "top_logprobs": 2},
        {"temperature": 0.3, "seed": 6, "n": 2, "best_of": 3},
    ],
)
def test_sampling_settings_decide_each_drafted_token_as_without_drafts(params: dict[str, object]) -> None:
    def answers(max_draft: int) -> tuple[LLMEngine, list[object]]:
        engine, _, sinks = _run_sinks(max_draft, True, max_tokens=60, **params)
        return engine, [(s.token_ids(), s.texts(), s.finish_reasons(), _logprobs(s)) for s in sinks]

    engine, fast = answers(15)
    assert engine.num_draft_tokens > 0
    assert fast == answers(0)[1]


def _logprobs(sink: Collector) -> list[object]:
    return [lp for out in sink.outputs for d in out.deltas for lp in d.logprobs or []]  # type: ignore[attr-defined]


def test_a_stop_string_inside_a_kept_draft_ends_the_answer_there() -> None:
    _, _, sinks = _run_sinks(0, False, temperature=0.0, max_tokens=60)
    text = sinks[0].texts()[0]
    stop = text[30:33]
    engine, _, stopped = _run_sinks(15, False, temperature=0.0, max_tokens=60, stop=[stop])
    _, _, plain = _run_sinks(0, False, temperature=0.0, max_tokens=60, stop=[stop])
    assert engine.num_accepted_draft_tokens > 0
    assert stopped[0].texts() == plain[0].texts() == {0: text[: text.index(stop)]}
    assert stopped[0].finish_reasons() == {0: "stop"}


def test_drafts_stay_within_the_token_budget_and_stop_at_a_stop_token() -> None:
    engine, runner, outputs = _run(15, False, temperature=0.0, max_tokens=7)
    assert all(len(ids) == 7 for ids in outputs)
    _, _, plain = _run(0, False, temperature=0.0, max_tokens=40)
    stop = plain[0][5]
    _, _, stopped = _run(15, False, temperature=0.0, max_tokens=40, stop_token_ids=[stop])
    assert stopped[0] == plain[0][: plain[0].index(stop) + 1]


def test_off_means_no_drafted_tokens() -> None:
    engine, runner, _ = _run(0, False, temperature=0.0, max_tokens=40)
    assert engine.num_draft_tokens == 0
    assert all(_tokens_with_logits_per_sequence(batch) == 1 for batch in runner.batches)


def test_a_drafted_step_asks_logits_for_every_drafted_token() -> None:
    _, runner, _ = _run(15, False, temperature=0.0, max_tokens=40)
    assert max(_tokens_with_logits_per_sequence(batch) for batch in runner.batches) > 1


def _tokens_with_logits_per_sequence(batch: list[tuple[int, int, tuple[int, ...], bool]]) -> int:
    seqs = [t[2] for t in batch if t[3]]
    return max((seqs.count(s) for s in seqs), default=0)


# ---- through llama.cpp ---------------------------------------------------------------------------

# A prompt that asks for its own text back: the answer copies, and the tiny random model loops.
COPY_PROMPT = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nRepeat exactly: the quick brown fox jumps over "
    "the lazy dog, the quick brown fox jumps over the lazy dog.<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    "\n\n"
)


def test_same_outputs_and_logprobs_with_speculation_through_llama_cpp(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> tuple[list[object], tuple[int, int]]:
        outputs = [  # one after another: concurrent sequences draft only in steps where all of them can
            await collect(engine, COPY_PROMPT, temperature=0, max_tokens=48, ignore_eos=True, logprobs=True),
            await collect(engine, COPY_PROMPT, temperature=0.8, seed=11, max_tokens=48),
        ]
        logprobs = [lp for out in outputs[0] for d in out.deltas for lp in (d.logprobs or [])]
        return [token_ids(o) for o in outputs] + [[round(lp.logprob, 2) for lp in logprobs]], engine.speculative_counts

    fast, (drafted, accepted) = run_engine(tiny_model_path, body, ctx_size=256, speculative_tokens=15)
    plain, (plain_drafted, _) = run_engine(tiny_model_path, body, ctx_size=256, speculative_tokens=0)
    assert fast == plain
    assert plain_drafted == 0 and drafted > 0 and accepted > 0


def test_every_sampling_setting_gives_the_same_answer_with_speculation(tiny_model_path: Path) -> None:
    """Every setting answers as without drafts through llama.cpp. The tiny model's greedy answers loop, so they
    draft (the sampled settings draft on the fake runner above); the others check drafting stays out of their way."""
    from llamafoundry.service.structured import schema_grammar

    base = {"max_tokens": 64, "ignore_eos": True}
    settings: list[dict[str, object]] = [
        {"temperature": 0},
        {"temperature": 0.7, "top_p": 0.9, "seed": 1},
        {"temperature": 0, "presence_penalty": 0.4, "frequency_penalty": 0.2},
        {"temperature": 0, "logprobs": True, "top_logprobs": 3},
        {"temperature": 0.9, "seed": 2, "n": 2, "best_of": 3},
        {"temperature": 0, "grammar": schema_grammar({"type": "object"}, "x"), "max_tokens": 48, "ignore_eos": False},
        {"temperature": 0, "use_beam_search": True, "best_of": 2},
    ]

    async def body(engine: AsyncEngine) -> tuple[list[object], int]:
        answers: list[object] = []
        for params in settings:
            outputs = await collect(engine, COPY_PROMPT, **{**base, **params})
            logprobs = [(lp.token, round(lp.logprob, 2)) for o in outputs for d in o.deltas for lp in d.logprobs or []]
            answers.append((token_ids(outputs), texts(outputs), logprobs))
        greedy = await collect(engine, COPY_PROMPT, temperature=0, **base)
        middle = len(texts(greedy)[0]) // 2
        for stop in ({"stop_token_ids": [token_ids(greedy)[0][40]]}, {"stop": [texts(greedy)[0][middle : middle + 3]]}):
            outputs = await collect(engine, COPY_PROMPT, temperature=0, **base, **stop)
            answers.append((token_ids(outputs), texts(outputs)))
        return answers, engine.speculative_counts[1]

    fast, accepted = run_engine(tiny_model_path, body, ctx_size=256, parallel=4, speculative_tokens=15)
    plain, _ = run_engine(tiny_model_path, body, ctx_size=256, parallel=4, speculative_tokens=0)
    assert accepted > 0
    for params, a, b in zip([*settings, "stop_token_ids", "stop"], fast, plain, strict=True):
        assert a == b, params


def test_a_rejected_draft_leaves_the_cache_as_plain_decoding_through_llama_cpp(tiny_model_path: Path) -> None:
    """The prompt holds 9 copies of the token the tiny model repeats, then other text: once the answer has
    repeated it 9 times, the draft is that other text, which the model does not write (the cells of the drafted
    tokens must go, or the next steps attend to them)."""
    from collections import Counter

    from llamafoundry.engine.sampling_params import SamplingParams

    async def greedy(engine: AsyncEngine, ids: list[int]) -> list[int]:
        stream = await engine.add_request(ids, SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))
        return token_ids([out async for out in stream])[0]

    async def body(engine: AsyncEngine) -> tuple[list[int], tuple[int, int]]:
        head, tail = engine.tokenize(COPY_PROMPT), engine.tokenize(" the quick brown fox jumps over the lazy dog")
        repeated = Counter(await greedy(engine, head)).most_common(1)[0][0]
        for _ in range(4):  # the repeated token of the prompt with the copies in it (a fixed point)
            answer = await greedy(engine, head + [repeated] * 9 + tail)
            if Counter(answer).most_common(1)[0][0] == repeated:
                break
            repeated = Counter(answer).most_common(1)[0][0]
        before = engine.speculative_counts
        answer = await greedy(engine, head + [repeated] * 9 + tail)
        return answer, (engine.speculative_counts[0] - before[0], engine.speculative_counts[1] - before[1])

    answer, (drafted, kept) = run_engine(tiny_model_path, body, ctx_size=256, speculative_tokens=15)
    plain, _ = run_engine(tiny_model_path, body, ctx_size=256, speculative_tokens=0)
    assert answer == plain
    assert 0 < kept < drafted  # a draft was refused (and later ones kept)
