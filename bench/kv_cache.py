"""What a KV cache type costs and what the prefix cache's tiers cost, in process (no HTTP).

For each `--kv-cache-type` (f16, q8_0, q4_0), the best of `--rounds` rounds (the types take turns; on a shared
machine other work only ever makes a measurement slower): bytes per cached token, prompt speed (ms per 1,000
tokens), decode speed with 1 and `--batch` sequences holding `--context` tokens each, and the tiers' costs per
1,000 tokens: saving a sequence's state (`seq_save`), loading it back (`seq_load`, what a returning conversation
pays instead of its prefill), writing it to the disk tier and loading it from there (the file in the page cache),
and a copy between two sequence slots (state copy, and llama.cpp's own whole-stream `seq_cp` for comparison).

    llamafoundry bench kv --model /tmp/bench-1b-q4km.gguf --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp
import numpy as np

from bench.compare import load_average, machine_description
from llamafoundry.engine.disk_cache import DiskCache, file_name
from llamafoundry.model.llamacpp import KV_CACHE_TYPES, LlamaCppRunner


def timed(action: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs, in seconds: on a shared machine other work only ever adds time."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return min(samples)


def prefill(runner: LlamaCppRunner, seq_id: int, tokens: list[int]) -> None:
    for start in range(0, len(tokens), 512):
        runner.batch_clear()
        for pos in range(start, min(len(tokens), start + 512)):
            runner.batch_add(tokens[pos], pos, [seq_id], pos == len(tokens) - 1)
        runner.decode()


def decode_steps(runner: LlamaCppRunner, seq_ids: list[int], pos: int, steps: int) -> float:
    """Tokens per second of `steps` decode steps, one token for each sequence per step."""
    start = time.perf_counter()
    for step in range(steps):
        runner.batch_clear()
        for seq_id in seq_ids:
            runner.batch_add(1000 + step, pos + step, [seq_id], True)
        runner.decode()
    return steps * len(seq_ids) / (time.perf_counter() - start)


def measure(runner: LlamaCppRunner, args: argparse.Namespace) -> dict[str, float]:
    """One round of every measurement on a runner of one cache type."""
    tokens = [int(t) for t in np.random.default_rng(0).integers(1000, 100_000, size=args.context)]
    per_k = 1000 / args.context  # scale to 1,000 tokens
    for seq_id in range(args.batch):
        runner.seq_remove(seq_id)
    start = time.perf_counter()
    prefill(runner, 0, tokens[:-1])
    prefill_s = time.perf_counter() - start
    state = runner.seq_save(0)
    result = {
        "bytes_per_token": len(state) / (args.context - 1),
        "prefill_ms_per_1k": 1000 * prefill_s * per_k,
        "save_ms_per_1k": 1000 * timed(lambda: runner.seq_save(0), args.repeats) * per_k,
        "load_ms_per_1k": 1000 * timed(lambda: runner.seq_load(1, state), args.repeats) * per_k,
        "copy_ms": 1000 * timed(lambda: runner.seq_copy(0, 1), args.repeats),
        "whole_stream_copy_ms": 1000 * timed(lambda: _stream_copy(runner, True), args.repeats),
        "one_token_step_ms": 1000 * timed(lambda: _stream_copy(runner, False), args.repeats),
    }
    result |= _disk(runner, tokens[:-1], state, args, per_k)
    for seq_id in range(1, args.batch):
        runner.seq_load(seq_id, state)
    result["decode_tok_s_1"] = decode_steps(runner, [0], args.context - 1, args.steps)
    for seq_id in range(args.batch):
        runner.seq_remove(seq_id, args.context - 1, -1)
    everyone = list(range(args.batch))
    result["decode_tok_s_batch"] = decode_steps(runner, everyone, args.context - 1, args.steps)
    return result


def best(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The best of each measurement over the rounds: the least time, the most tokens per second."""
    merged = {key: min(r[key] for r in rounds) for key in rounds[0]}
    for key in ("decode_tok_s_1", "decode_tok_s_batch"):
        merged[key] = max(r[key] for r in rounds)
    merged["restore_vs_prefill"] = merged["prefill_ms_per_1k"] / merged["load_ms_per_1k"]
    return merged


def _stream_copy(runner: LlamaCppRunner, copy: bool) -> None:
    """llama.cpp's cross-stream seq_cp: queued, done (the whole stream buffer) by the next decode, timed with it
    (and that decode alone, `copy` False)."""
    if copy:
        llama_cpp.llama_memory_seq_cp(runner._memory, 0, 2, -1, -1)
    runner.batch_clear()
    runner.batch_add(1000, 0, [3], False)  # a one-token decode on another sequence runs the queued copy
    runner.decode()
    runner.seq_remove(3)


def _disk(
    runner: LlamaCppRunner, tokens: list[int], state: bytearray, args: argparse.Namespace, per_k: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=args.disk_dir) as root:
        disk = DiskCache(Path(root), runner.state_fingerprint, budget_bytes=1 << 40)
        try:

            def write() -> None:
                disk.put(tokens, state)
                disk.flush()

            write_s = timed(write, args.repeats)
            name = file_name(tokens)

            def load() -> None:
                with disk.open_state(name) as view:
                    assert view is not None and runner.seq_load(1, view)

            load_s = timed(load, args.repeats)
        finally:
            disk.close()
    return {"disk_write_ms_per_1k": 1000 * write_s * per_k, "disk_load_ms_per_1k": 1000 * load_s * per_k}


def run(args: argparse.Namespace) -> int:
    print(f"{machine_description()}; model {args.model}; {args.threads} threads; load {load_average()}")
    runners = {
        kind: LlamaCppRunner(args.model, args.batch * args.ctx_size, args.batch, 512, args.threads, kv_cache_type=kind)
        for kind in args.types
    }
    rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in args.types}
    try:
        for _ in range(args.rounds):  # the types take turns, so load from other work falls on all of them
            for kind, runner in runners.items():
                rounds[kind].append(measure(runner, args))
    finally:
        for runner in runners.values():
            runner.close()
    rows = {kind: best(results) for kind, results in rounds.items()}
    b = args.batch
    print(f"\n| KV cache type | bytes per token | decode tok/s, 1 sequence | decode tok/s, {b} sequences | "
          "prefill ms / 1k tokens | save ms / 1k | restore (RAM) ms / 1k | restore (disk) ms / 1k | "
          "disk write ms / 1k | prefill / restore |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['bytes_per_token']:,.0f} | {r['decode_tok_s_1']:.1f} | {r['decode_tok_s_batch']:.1f} | "
              f"{r['prefill_ms_per_1k']:,.0f} | {r['save_ms_per_1k']:.1f} | {r['load_ms_per_1k']:.1f} | "
              f"{r['disk_load_ms_per_1k']:.1f} | {r['disk_write_ms_per_1k']:.1f} | "
              f"{r['restore_vs_prefill']:,.0f}x |")  # fmt: skip
    print(f"\nCopy between two slots of {args.ctx_size} cells, a sequence of {args.context} tokens:")
    for kind, r in rows.items():
        stream = r["whole_stream_copy_ms"]
        print(f"  {kind}: state copy {r['copy_ms']:.1f} ms; llama.cpp seq_cp of the "
              f"whole stream {stream - r['one_token_step_ms']:.1f} ms (with the 1-token step that runs it "
              f"{stream:.1f} ms, the step alone {r['one_token_step_ms']:.1f})")  # fmt: skip
    print(f"load average after: {load_average()}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--types", nargs="+", default=list(KV_CACHE_TYPES), choices=list(KV_CACHE_TYPES))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--context", type=int, default=1000, help="tokens each sequence holds")
    parser.add_argument("--ctx-size", type=int, default=4096, help="cells per sequence slot")
    parser.add_argument("--batch", type=int, default=8, help="sequences decoding together (at least 4)")
    parser.add_argument("--steps", type=int, default=16, help="decode steps timed")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each short measurement per round (fastest)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the cache types (best of them)")
    parser.add_argument("--disk-dir", type=Path, default=None, help="where the disk tier's files go (default: /tmp)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
