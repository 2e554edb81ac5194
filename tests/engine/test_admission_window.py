"""Requests sent together are admitted together: the event loop hands them to the engine thread a few ms apart,
and a prefill step started on the first alone made the others wait for it (seconds on a CPU), whichever was
shortest."""

from __future__ import annotations

import asyncio

from llamafoundry.engine.async_engine import AsyncEngine
from llamafoundry.engine.client import ModelInfo
from llamafoundry.engine.sampling_params import SamplingParams

from .fake_runner import FakeRunner


def run_arrivals(runner: FakeRunner, gaps_s: list[float], prompt_lens: list[int]) -> None:
    async def main() -> None:
        info = ModelInfo("fake", "test", 256, None, "<s>", "</s>")
        engine = AsyncEngine(lambda: runner, ctx_size=256, max_queue=8, describe=lambda _: info)
        await engine.start()
        try:
            streams = []
            for index, gap in enumerate([0.0, *gaps_s]):
                await asyncio.sleep(gap)
                prompt = [index + 1] * prompt_lens[index]
                streams.append(await engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=2)))
            for stream in streams:
                [output async for output in stream]
        finally:
            await engine.stop()

    asyncio.run(main())


def test_requests_arriving_a_few_ms_apart_are_admitted_together_and_a_later_one_does_not_hold_them() -> None:
    runner = FakeRunner(max_seqs=4, max_batch_tokens=512, ctx_size=256)
    run_arrivals(runner, [0.001, 0.001, 0.2], [200, 170, 140, 150])
    # admitted together, the shortest of the three goes first (a small burst is computed a prompt a step); the
    # fourth, 200 ms later, was not waited for
    assert [tok[2][0] for tok in runner.batches[0]] == [2] * 140
    assert 3 not in {tok[2][0] for batch in runner.batches[:3] for tok in batch}

