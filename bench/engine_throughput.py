"""Engine overhead, in process: aggregate tokens/s through the engine against a raw llama_decode loop.

Single stream and N concurrent (default 8) greedy requests with ignore_eos on the same GGUF, same threads, same
context layout. No HTTP: this isolates what the scheduler, sampler, detokenizer and the asyncio hand-off cost.

    python bench/engine_throughput.py --model /tmp/bench-1b-q4km.gguf
    llamafoundry bench engine --model /tmp/bench-1b-q4km.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.raw_decode import open_runner, raw_decode
from llamafoundry.config import EngineSettings
from llamafoundry.engine.async_engine import AsyncEngine
from llamafoundry.engine.factory import build_local_engine
from llamafoundry.engine.sampling_params import SamplingParams


@dataclass
class Row:
    batch: int
    raw_total: float  # generated tok/s over prefill + decode
    raw_decode: float  # generated tok/s over the decode phase only
    engine_total: float
    engine_decode: float


async def _engine_run(engine: AsyncEngine, batch: int, prompt_len: int, gen_len: int, seed: int) -> tuple[float, float]:
    """(total tok/s, decode tok/s) for `batch` concurrent greedy requests of `gen_len` tokens each."""
    rng = np.random.default_rng(seed)
    params = SamplingParams(temperature=0.0, max_tokens=gen_len, ignore_eos=True)
    firsts: list[float] = []
    ends: list[float] = []

    async def one() -> None:
        prompt = [int(t) for t in rng.integers(1000, 100_000, size=prompt_len)]
        stream = await engine.add_request(prompt, params)
        count = 0
        async for out in stream:
            if count == 0 and out.num_completion_tokens:
                firsts.append(time.perf_counter())
            count = out.num_completion_tokens
        assert count == gen_len, f"expected {gen_len} tokens, got {count}"
        ends.append(time.perf_counter())

    start = time.perf_counter()
    await asyncio.gather(*[one() for _ in range(batch)])
    end = max(ends)
    return batch * gen_len / (end - start), batch * (gen_len - 1) / (end - max(firsts))


def measure(
    model: Path, batches: list[int], prompt_len: int, gen_len: int, threads: int, ctx_size: int, repeats: int
) -> list[Row]:
    """Raw loop and engine alternate within each repeat, so load from other processes hits both alike."""
    parallel = max(batches)
    raw: dict[int, list[tuple[float, float]]] = {b: [] for b in batches}
    eng: dict[int, list[tuple[float, float]]] = {b: [] for b in batches}

    async def main() -> None:
        settings = EngineSettings(model_path=model, ctx_size=ctx_size, parallel=parallel, threads=threads)
        engine = build_local_engine(settings, "bench", "Meta")
        await engine.start()
        runner = open_runner(model, parallel, ctx_size, threads)
        try:
            raw_decode(runner, 1, 8, 4)  # warm-up: fault the weights in
            await _engine_run(engine, 1, 8, 4, seed=99)
            for rep in range(repeats):
                for b in batches:
                    r = raw_decode(runner, b, prompt_len, gen_len, seed=rep)
                    raw[b].append((b * gen_len / (r.prefill_s + r.decode_s), b * (gen_len - 1) / r.decode_s))
                    eng[b].append(await _engine_run(engine, b, prompt_len, gen_len, seed=rep))
        finally:
            runner.close()
            await engine.stop()

    asyncio.run(main())
    rows = []
    for b in batches:
        (rt, rd), (et, ed) = np.median(raw[b], axis=0), np.median(eng[b], axis=0)
        rows.append(Row(b, float(rt), float(rd), float(et), float(ed)))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        "| sequences | raw loop tok/s (decode) | engine tok/s (decode) | ratio (decode) | raw tok/s (incl. prefill) "
        "| engine tok/s (incl. prefill) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.batch} | {r.raw_decode:.1f} | {r.engine_decode:.1f} | {r.engine_decode / r.raw_decode:.3f} "
            f"| {r.raw_total:.1f} | {r.engine_total:.1f} | {r.engine_total / r.raw_total:.3f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="GGUF file (e.g. models build-random ... 1b Q4_K_M)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="concurrent sequences to measure")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--gen-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx-size", type=int, default=1024, help="context per sequence")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is reported")


def run(args: argparse.Namespace) -> int:
    load = os.getloadavg()
    rows = measure(args.model, args.batches, args.prompt_len, args.gen_len, args.threads, args.ctx_size, args.repeats)
    print(f"model {args.model}, {args.threads} threads, prompt {args.prompt_len}, {args.gen_len} generated tokens;")
    print(f"median of {args.repeats}; load average before the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
