"""Soak of the prefix cache's tiers: thousands of conversation turns through the engine (in process, real
llama.cpp) with host-memory and disk budgets small enough to evict all the time. Conversations come back with
skewed frequencies (conversation i about 1/(i+1) as often as the first), `--concurrency` at a time.

Checks, and prints: every greedy answer equals the answer of an engine without any cache for the same prompt;
the host-memory pool never holds more than its budget (checked after every step) and the disk directory ends
within its budget; after a restart (a new context over the same directory) returning conversations still load
their histories from disk. With `--disk-budget 0`, host memory alone (what `serve` runs without
`--prefix-cache-dir`, where a save is written over an evicted state's buffer): no restart.

    llamafoundry bench kv-soak --model /tmp/tiny.gguf --conversations 400 --turns 6
    llamafoundry bench kv-soak --model /tmp/tiny.gguf --conversations 400 --turns 6 --disk-budget 0
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llamafoundry.engine.disk_cache import SUFFIX, DiskCache
from llamafoundry.engine.engine import LLMEngine
from llamafoundry.engine.host_cache import HostCache
from llamafoundry.engine.kv_tiers import KvTiers
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.model.llamacpp import LlamaCppRunner


@dataclass
class SoakReport:
    turns: int = 0
    mismatches: list[int] = field(default_factory=list)  # turn numbers whose answer differed from the cold one
    max_ram_bytes: int = 0
    ram_budget: int = 0
    disk_bytes: int = 0
    disk_budget: int = 0
    reused: dict[str, int] = field(default_factory=dict)
    ram_evictions: int = 0
    ram_recycled_buffers: int = 0
    disk_evictions: int = 0
    restart_disk_tokens: int = 0
    restart_turns: int = 0
    restart_mismatches: int = 0
    seconds: float = 0.0


class Driver:
    """Submits prompts to an LLMEngine and steps it until they are answered, watching the host-memory pool."""

    def __init__(self, engine: LLMEngine, report: SoakReport | None = None) -> None:
        self.engine = engine
        self.report = report

    def answer_all(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        answers: dict[int, list[int]] = {}
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        requests = []
        for index, prompt in enumerate(prompts):
            request = self.engine.make_request(f"s{index}", prompt, params, lambda _: None)
            self.engine.add_request(request)
            requests.append(request)
        while self.engine.has_work:
            self.engine.step()
            self._watch()
        for index, request in enumerate(requests):
            answers[index] = request.sequences[0].output_ids if request.sequences else []
        return [answers[i] for i in range(len(prompts))]

    def _watch(self) -> None:
        cache = self.engine.prefix_cache
        ram = cache.tiers.ram if cache and cache.tiers else None
        if self.report is not None and ram is not None:
            self.report.max_ram_bytes = max(self.report.max_ram_bytes, ram.used_bytes)
            assert ram.used_bytes <= ram.budget_bytes, "the host-memory pool went over its budget"


def soak(args: argparse.Namespace) -> SoakReport:
    started = time.perf_counter()
    disk_dir = Path(args.disk_dir or tempfile.mkdtemp(prefix="llamafoundry-soak-"))
    report = SoakReport(ram_budget=args.ram_budget, disk_budget=args.disk_budget)
    rng = random.Random(args.seed)
    histories = {c: [128000, *rng.choices(range(1000, 30000), k=20)] for c in range(args.conversations)}
    warm, tiers, engine = _engine(args, disk_dir)
    cold_runner = LlamaCppRunner(args.model, args.slots * args.ctx_size, args.slots, 256, args.threads)
    cold = Driver(LLMEngine(cold_runner, args.ctx_size, max_queue=1024))
    driver = Driver(engine, report)
    try:
        weights = [1.0 / (1 + c) for c in range(args.conversations)]  # a few conversations come back often
        for _ in range(args.turns * args.conversations // args.concurrency):
            group = sorted(set(rng.choices(range(args.conversations), weights, k=args.concurrency)))
            if group:
                prompts = [histories[c] + rng.choices(range(1000, 30000), k=rng.randint(5, 40)) for c in group]
                prompts = [p if len(p) < args.ctx_size - args.answer_len else p[: args.ctx_size // 4] for p in prompts]
                answers = driver.answer_all(prompts, args.answer_len)
                expected = cold.answer_all(prompts, args.answer_len)
                for c, prompt, answer, reference in zip(group, prompts, answers, expected, strict=True):
                    report.turns += 1
                    if answer != reference:
                        report.mismatches.append(report.turns)
                    histories[c] = prompt + answer
        assert engine.prefix_cache is not None
        report.reused = dict(engine.prefix_cache.num_reused_tokens)
        report.ram_evictions = tiers.ram.num_evicted if tiers.ram else 0
        report.ram_recycled_buffers = tiers.ram.num_recycled if tiers.ram else 0
    finally:
        tiers.close()
        warm.close()
    if tiers.disk is not None:
        report.disk_evictions = tiers.disk.num_evicted
        report.disk_bytes = sum(p.stat().st_size for p in disk_dir.rglob("*" + SUFFIX))
        _restart(args, disk_dir, histories, cold, report, rng)
    cold_runner.close()
    report.seconds = time.perf_counter() - started
    return report


def _engine(args: argparse.Namespace, disk_dir: Path, ram: bool = True) -> tuple[LlamaCppRunner, KvTiers, LLMEngine]:
    runner = LlamaCppRunner(args.model, args.slots * args.ctx_size, args.slots, 256, args.threads)
    disk = DiskCache(disk_dir, runner.state_fingerprint, args.disk_budget) if args.disk_budget > 0 else None
    tiers = KvTiers(HostCache(args.ram_budget) if ram else None, disk)
    return runner, tiers, LLMEngine(runner, args.ctx_size, 1024, prefix_caching=True, kv_tiers=tiers)


def _restart(
    args: argparse.Namespace, disk_dir: Path, histories: dict[int, list[int]], cold: Driver, report: SoakReport,
    rng: random.Random,
) -> None:  # fmt: skip
    """A new context over the same directory, no host memory: the last conversations come back."""
    runner, tiers, engine = _engine(args, disk_dir, ram=False)
    try:
        last = list(histories)[: args.concurrency]  # the most frequent: their newest states are likely on disk
        prompts = [histories[c] + rng.choices(range(1000, 30000), k=8) for c in last]
        prompts = [p for p in prompts if len(p) < args.ctx_size - args.answer_len]
        answers = Driver(engine).answer_all(prompts, args.answer_len)
        expected = cold.answer_all(prompts, args.answer_len)
        report.restart_turns = len(prompts)
        report.restart_mismatches = sum(a != e for a, e in zip(answers, expected, strict=True))
        assert engine.prefix_cache is not None
        report.restart_disk_tokens = engine.prefix_cache.num_reused_tokens["disk"]
    finally:
        tiers.close()
        runner.close()


def run(args: argparse.Namespace) -> int:
    r = soak(args)
    print(f"{r.turns} turns in {r.seconds:.0f} s; answers differing from a cache-off engine: {len(r.mismatches)}"
          f"{' (turns ' + str(r.mismatches[:10]) + ')' if r.mismatches else ''}")  # fmt: skip
    print(f"prompt tokens reused by source: {r.reused}")
    print(f"host memory: at most {r.max_ram_bytes:,} of {r.ram_budget:,} bytes, {r.ram_evictions} evictions, "
          f"{r.ram_recycled_buffers} saves over an evicted state's buffer")  # fmt: skip
    if args.disk_budget <= 0:
        return 0 if not r.mismatches else 1
    print(f"disk: {r.disk_bytes:,} of {r.disk_budget:,} bytes at the end, {r.disk_evictions} evictions")
    print(f"after a restart: {r.restart_disk_tokens} prompt tokens of {r.restart_turns} returning turns loaded from "
          f"disk, {r.restart_mismatches} answers differing")  # fmt: skip
    ok = not r.mismatches and r.disk_bytes <= r.disk_budget and r.restart_disk_tokens > 0 and not r.restart_mismatches
    return 0 if ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="a small GGUF (the tiny test model soaks fast)")
    parser.add_argument("--conversations", type=int, default=400)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=6, help="conversations in flight together")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--ctx-size", type=int, default=1024)
    parser.add_argument("--answer-len", type=int, default=6)
    parser.add_argument("--ram-budget", type=int, default=4 << 20, help="bytes of host memory for saved states")
    parser.add_argument("--disk-budget", type=int, default=16 << 20, help="bytes of disk for states (0: no disk tier)")
    parser.add_argument("--disk-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
