"""The engine on a real tiny GGUF through llama.cpp: batching invariance, sampling features, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llamafoundry.config import EngineSettings
from llamafoundry.engine.async_engine import AsyncEngine
from llamafoundry.engine.detokenizer import IncrementalDetokenizer
from llamafoundry.engine.factory import build_local_engine
from llamafoundry.engine.outputs import RequestOutput
from llamafoundry.engine.sampler import choice_seed, log_softmax
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.errors import InvalidSamplingParams, PromptTooLongError, QueueFullError
from llamafoundry.model.llamacpp import LlamaCppRunner

PROMPT = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTell me a story.<|eot_id|>"


def run_engine(model: Path, body: Callable[[AsyncEngine], Awaitable[Any]], **settings: Any) -> Any:
    async def main() -> Any:
        engine = build_local_engine(EngineSettings(model_path=model, **settings), "tiny", "Meta")
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.stop()

    return asyncio.run(main())


async def collect(engine: AsyncEngine, prompt: str, **params: Any) -> list[RequestOutput]:
    stream = await engine.add_request(engine.tokenize(prompt), SamplingParams(**params))
    return [out async for out in stream]


def texts(outputs: list[RequestOutput]) -> dict[int, str]:
    result: dict[int, str] = {}
    for out in outputs:
        for d in out.deltas:
            result[d.index] = result.get(d.index, "") + d.text
    return result


def token_ids(outputs: list[RequestOutput]) -> dict[int, list[int]]:
    result: dict[int, list[int]] = {}
    for out in outputs:
        for d in out.deltas:
            result.setdefault(d.index, []).extend(d.token_ids)
    return result


def test_greedy_output_is_the_same_alone_or_among_eight(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        alone = token_ids(await collect(engine, PROMPT, temperature=0, max_tokens=24))[0]
        prompts = [PROMPT] + [PROMPT.replace("story", f"story number {i}") for i in range(7)]
        together = await asyncio.gather(*[collect(engine, p, temperature=0, max_tokens=24) for p in prompts])
        assert token_ids(together[0])[0] == alone

    run_engine(tiny_model_path, body, ctx_size=256, parallel=8)


def test_same_seed_same_output_and_other_seeds_differ(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        runs = [await collect(engine, PROMPT, temperature=1.0, seed=s, max_tokens=16) for s in (7, 7, 8)]
        first, again, other = (token_ids(r)[0] for r in runs)
        assert first == again
        assert first != other

    run_engine(tiny_model_path, body, ctx_size=256, parallel=2)


@pytest.mark.parametrize("default_seed", [None, 11])
def test_requests_without_a_seed_take_the_servers_default_seed(tiny_model_path: Path, default_seed: int | None) -> None:
    async def body(engine: AsyncEngine) -> None:
        # three runs: the last two both find the prompt cached (a fresh computation can differ in the last bits)
        runs = [await collect(engine, PROMPT, temperature=1.0, max_tokens=16) for _ in range(3)][1:]
        seeded = await collect(engine, PROMPT, temperature=1.0, seed=11, max_tokens=16)
        first, again = (token_ids(r)[0] for r in runs)
        if default_seed is None:  # a random seed each: 16 tokens of a random model's near-uniform vocabulary
            assert first != again
        else:
            assert first == again == token_ids(seeded)[0]

    run_engine(tiny_model_path, body, ctx_size=256, parallel=2, seed=default_seed)


def test_n_choices_stream_with_indexes_and_count_tokens(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        outputs = await collect(engine, PROMPT, temperature=1.0, seed=1, n=3, max_tokens=8)
        assert sorted(texts(outputs)) == [0, 1, 2]
        final = outputs[-1]
        assert final.finished and final.num_completion_tokens == sum(len(v) for v in token_ids(outputs).values())
        assert final.num_prompt_tokens == len(engine.tokenize(PROMPT))
        solo = await collect(engine, PROMPT, temperature=1.0, seed=choice_seed(1, 1), max_tokens=8)
        assert token_ids(solo)[0] == token_ids(outputs)[1]  # choice i samples with choice_seed(seed, i)

    run_engine(tiny_model_path, body, ctx_size=256, parallel=4)


def test_best_of_and_beam_search_return_n_choices(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        best = await collect(engine, PROMPT, temperature=1.0, seed=3, n=2, best_of=4, max_tokens=6)
        assert len(best) == 1 and sorted(texts(best)) == [0, 1]
        beams = await collect(engine, PROMPT, temperature=0, n=2, best_of=3, use_beam_search=True, max_tokens=6)
        assert sorted(texts(beams)) == [0, 1]
        greedy = await collect(engine, PROMPT, temperature=0, max_tokens=6)
        # The best beam scores at least as well as greedy decoding (it can only find better sequences).
        assert engine.num_running == 0
        assert len(token_ids(greedy)[0]) <= 6

    run_engine(tiny_model_path, body, ctx_size=256, parallel=4)


def test_logprobs_are_log_softmax_of_raw_logits(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> list[RequestOutput]:
        return await collect(
            engine, PROMPT, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3, ignore_eos=True
        )

    outputs = run_engine(tiny_model_path, body, ctx_size=256, parallel=1)
    entries = [lp for out in outputs for d in out.deltas for lp in (d.logprobs or [])]
    first_token = token_ids(outputs)[0][0]
    assert len(entries) == 4
    for entry in entries:
        assert entry.logprob <= entry.top_logprobs[0].logprob + 1e-6 and len(entry.top_logprobs) == 3
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token

    runner = LlamaCppRunner(tiny_model_path, kv_size=256, max_seqs=1)
    try:
        ids = runner.tokenize(PROMPT)
        runner.batch_clear()
        for pos, tok in enumerate(ids):
            runner.batch_add(tok, pos, [0], pos == len(ids) - 1)
        runner.decode()
        reference = log_softmax(runner.logits(len(ids) - 1).astype(np.float64))
        assert entries[0].logprob == pytest.approx(float(reference[first_token]), abs=1e-4)
        top3 = np.sort(reference)[::-1][:3]
        assert [t.logprob for t in entries[0].top_logprobs] == pytest.approx(list(top3), abs=1e-4)
    finally:
        runner.close()


def test_stop_string_across_tokens_never_leaks(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> tuple[list[RequestOutput], list[RequestOutput], str]:
        free = await collect(engine, PROMPT, temperature=1.0, seed=5, max_tokens=40, ignore_eos=True)
        pieces = [engine._engine.runner.token_bytes(t, False).decode("utf-8", "replace") for t in token_ids(free)[0]]
        k = next(i for i in range(5, len(pieces) - 1) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
        stop = pieces[k][-2:] + pieces[k + 1][:2]  # spans the boundary between tokens k and k+1
        stopped = await collect(engine, PROMPT, temperature=1.0, seed=5, max_tokens=40, ignore_eos=True, stop=[stop])
        return free, stopped, stop

    free, stopped, stop = run_engine(tiny_model_path, body, ctx_size=256, parallel=1)
    full = texts(free)[0]
    expected = full[: full.index(stop)]
    assert texts(stopped)[0] == expected
    assert stopped[-1].deltas[-1].finish_reason == "stop"
    released = ""
    for out in stopped:
        released += "".join(d.text for d in out.deltas)
        assert stop not in released and not any(released.endswith(stop[:i]) for i in range(1, len(stop)) if released)


def test_utf8_split_over_tokens_is_released_whole(tiny_model_path: Path) -> None:
    runner = LlamaCppRunner(tiny_model_path, kv_size=64, max_seqs=1)
    try:
        text = "Llamas 🦙 say 你好, naïve café ✓"
        ids = runner.tokenize(text, parse_special=False)
        pieces = [runner.token_bytes(t, False) for t in ids]
        assert any(len(p) and not _is_valid_utf8(p) for p in pieces), "expected a token that splits a character"
        detok = IncrementalDetokenizer()
        deltas = [detok.push(p) for p in pieces] + [detok.finish()]
        assert all("\ufffd" not in d for d in deltas)
        assert "".join(deltas) == text
    finally:
        runner.close()


def _is_valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_sampled_text_has_no_replacement_char_unless_the_full_text_does(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> list[list[RequestOutput]]:
        return [await collect(engine, PROMPT, temperature=1.5, seed=s, max_tokens=48) for s in range(6)]

    for outputs in run_engine(tiny_model_path, body, ctx_size=256, parallel=1):
        full = texts(outputs)[0]
        if "\ufffd" not in full:
            assert all("\ufffd" not in d.text for out in outputs for d in out.deltas)


def test_cancelling_a_stream_frees_its_slot(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        stream = await engine.add_request(engine.tokenize(PROMPT), SamplingParams(max_tokens=200, ignore_eos=True))
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break  # leaving the loop aborts the request
        deadline = time.monotonic() + 10  # the abort lands at the next step boundary
        while engine.num_running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert engine.num_running == 0
        outputs = await collect(engine, PROMPT, temperature=0, max_tokens=3)  # the single slot is usable again
        assert outputs[-1].finished

    run_engine(tiny_model_path, body, ctx_size=256, parallel=1)


def test_full_slots_queue_requests_and_a_full_queue_refuses(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        params = SamplingParams(max_tokens=200, ignore_eos=True, temperature=0)  # long enough to still run below
        first = await engine.add_request(engine.tokenize(PROMPT), params)
        second = await engine.add_request(engine.tokenize(PROMPT), params)  # waits for the only slot
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError):
            await engine.add_request(engine.tokenize(PROMPT), params)
        a = [o async for o in first]
        b = [o async for o in second]
        assert token_ids(a) == token_ids(b)  # the queued request ran fully and correctly afterwards

    run_engine(tiny_model_path, body, ctx_size=256, parallel=1, max_queue=1)


def test_with_no_queue_a_free_slot_still_takes_a_request(tiny_model_path: Path) -> None:
    """`--max-queue 0`: no request may wait, but one that gets a slot at once runs (it used to be refused)."""

    async def body(engine: AsyncEngine) -> None:
        params = SamplingParams(max_tokens=200, ignore_eos=True, temperature=0)
        first = await engine.add_request(engine.tokenize(PROMPT), params)
        with pytest.raises(QueueFullError):
            await engine.add_request(engine.tokenize(PROMPT), params)  # the only slot is taken
        assert token_ids([o async for o in first])

    run_engine(tiny_model_path, body, ctx_size=256, parallel=1, max_queue=0)


def test_a_stop_token_id_outside_the_vocabulary_is_an_invalid_value(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        with pytest.raises(InvalidSamplingParams, match="below the vocabulary size") as caught:
            await engine.add_request(engine.tokenize(PROMPT), SamplingParams(stop_token_ids=[999_999]))
        assert caught.value.param == "stop_token_ids"

    run_engine(tiny_model_path, body, ctx_size=256)


def test_prompt_longer_than_context_is_refused_with_the_limit(tiny_model_path: Path) -> None:
    async def body(engine: AsyncEngine) -> None:
        with pytest.raises(PromptTooLongError, match="64 tokens"):
            await engine.add_request(engine.tokenize("word " * 100), SamplingParams())

    run_engine(tiny_model_path, body, ctx_size=64, parallel=1)


def _last_logits(model: Path, flash_attn: bool | None) -> np.ndarray:
    runner = LlamaCppRunner(model, kv_size=512, max_seqs=2, max_batch_tokens=64, num_threads=1, flash_attn=flash_attn)
    try:
        ids = runner.tokenize(PROMPT, add_bos=False, parse_special=True)
        runner.batch_clear()
        for pos, token in enumerate(ids):
            runner.batch_add(token, pos, [0], pos == len(ids) - 1)
        runner.decode()
        return np.array(runner.logits(len(ids) - 1), dtype=np.float64)
    finally:
        runner.close()


def test_flash_attention_on_and_off_compute_the_same_logits(tiny_model_path: Path) -> None:
    on, off, auto = (_last_logits(tiny_model_path, fa) for fa in (True, False, None))
    spread = on.std()
    assert spread > 0
    assert np.abs(on - off).max() < 0.01 * spread  # a kernel choice, not a different model
    assert np.abs(on - auto).max() < 0.01 * spread


def test_engine_settings_refuse_an_unknown_flash_attention_mode(tiny_model_path: Path) -> None:
    with pytest.raises(ValueError, match="flash_attn must be one of auto, on, off"):
        EngineSettings(model_path=tiny_model_path, flash_attn="yes")
