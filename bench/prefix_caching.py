"""What prefix caching buys, in process: the engine with and without it on a shared-system-prompt workload.

N concurrent requests share one long system prompt and differ in a short user turn; then a second wave of N
arrives after the first has finished (the cached prompt sits in idle slots). Reports time to first token and the
prompt tokens the model actually computed.

    python bench/prefix_caching.py --model /tmp/bench-1b-q4km.gguf
    llamafoundry bench prefix --model /tmp/bench-1b-q4km.gguf --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from llamafoundry.engine.async_engine import AsyncEngine
from llamafoundry.engine.client import ModelInfo
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.model.llamacpp import LlamaCppRunner


async def _wave(engine: AsyncEngine, prompts: list[list[int]], gen_len: int) -> tuple[list[float], float]:
    """(TTFT of each request in seconds, wall time of the wave)."""
    params = SamplingParams(temperature=0.0, max_tokens=gen_len, ignore_eos=True)
    start = time.perf_counter()

    async def one(prompt: list[int]) -> float:
        stream = await engine.add_request(prompt, params)
        first = None
        async for out in stream:
            if first is None and out.num_completion_tokens:
                first = time.perf_counter() - start
        assert first is not None
        return first

    ttfts = await asyncio.gather(*[one(p) for p in prompts])
    return list(ttfts), time.perf_counter() - start


def _random_ids(rng: np.random.Generator, num: int) -> list[int]:
    return [int(t) for t in rng.integers(1000, 100_000, size=num)]


def measure(args: argparse.Namespace, prefix_caching: bool) -> dict[str, float]:
    def load() -> LlamaCppRunner:
        kv = args.parallel * args.ctx_size
        return LlamaCppRunner(args.model, kv, args.parallel, max_batch_tokens=512, num_threads=args.threads)

    def describe(runner: object) -> ModelInfo:
        return ModelInfo("bench", "Meta", args.ctx_size, None, "<|begin_of_text|>", "<|eot_id|>")

    async def main() -> dict[str, float]:
        engine = AsyncEngine(load, args.ctx_size, 64, describe, prefix_caching=prefix_caching)
        await engine.start()
        try:
            await _wave(engine, [[1000, 1001, 1002]], 2)  # warm-up
            rng = np.random.default_rng(args.seed)
            system = _random_ids(rng, args.prefix_len)
            waves = [[system + _random_ids(rng, 32) for _ in range(args.concurrency)] for _ in range(2)]
            first, wall_1 = await _wave(engine, waves[0], args.gen_len)
            second, wall_2 = await _wave(engine, waves[1], args.gen_len)
        finally:
            await engine.stop()
        return {
            "wave 1 TTFT p50 (s)": float(np.median(first)),
            "wave 1 TTFT max (s)": max(first),
            "wave 1 wall (s)": wall_1,
            "wave 2 TTFT p50 (s)": float(np.median(second)),
            "wave 2 wall (s)": wall_2,
        }

    return asyncio.run(main())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prefix-len", type=int, default=1000, help="shared system prompt tokens")
    parser.add_argument("--gen-len", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rows = {flag: measure(args, flag) for flag in (False, True)}
    print(f"{args.concurrency} concurrent requests, {args.prefix_len}-token shared prefix + 32 own tokens,")
    print(f"{args.gen_len} generated; {args.threads} threads; load average before {load}\n")
    print("| | without prefix caching | with prefix caching | ratio |")
    print("|---|---|---|---|")
    for key in rows[False]:
        off, on = rows[False][key], rows[True][key]
        print(f"| {key} | {off:.2f} | {on:.2f} | {on / off:.2f}x |")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
