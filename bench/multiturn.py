"""Returning users: multi-turn conversations against llamafoundry and llama-server side by side, time to first
token by turn index.

Each conversation resends its whole history every turn (its earlier user turns and the answers as they were
streamed). Conversations take turns in rounds (every conversation's turn 1, then every turn 2, ...) with
`concurrency` requests in flight, so a conversation comes back after the others had their turn: with more
conversations than slots (`--parallel`) its history has left the slots by then (slot pressure). A conversation
waits `--think-time` seconds after an answer before its next turn.

    llamafoundry bench multiturn --model /tmp/bench-1b-q4km.gguf --parallel 8 --threads 2 \\
        --workload 12x3@4 --workload 6x3@3 --write-doc docs/benchmarks.md

A workload is CONVERSATIONSxTURNS@CONCURRENCY. Both servers are started first, at their defaults plus the same
slots, threads, context per slot and file; each workload then runs on each in turn (the order alternating), with
the same prompts, `--rounds` times over with fresh prompts each round.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shlex
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench import multiturn_report
from bench.client import Endpoint, stream_chat, warm_up
from bench.compare import load_average, machine_description
from bench.metrics import RequestResult, latency_stats
from bench.servers import RunningServer, ServerConfig, start_server
from bench.workloads import WordSource

SERVERS = ("llamafoundry", "llama-server")


@dataclass(frozen=True)
class Workload:
    conversations: int
    turns: int
    concurrency: int

    @classmethod
    def parse(cls, text: str) -> Workload:
        match = re.fullmatch(r"(\d+)x(\d+)@(\d+)", text)
        if not match:
            raise argparse.ArgumentTypeError(f"{text!r}: write CONVERSATIONSxTURNS@CONCURRENCY, e.g. 12x3@4")
        return cls(*(int(g) for g in match.groups()))

    @property
    def name(self) -> str:
        return f"{self.conversations}x{self.turns}@{self.concurrency}"


@dataclass
class Conversation:
    user_turns: list[str]
    history: list[dict[str, str]] = field(default_factory=list)


@dataclass
class TurnResult:
    conversation: int
    turn: int  # 1 for the first
    result: RequestResult


def build_conversations(words: WordSource, workload: Workload, first_len: int, turn_len: int) -> list[Conversation]:
    return [
        Conversation([words.text(first_len if t == 0 else turn_len) for t in range(workload.turns)])
        for _ in range(workload.conversations)
    ]


async def run_workload(
    endpoint: Endpoint, conversations: list[Conversation], concurrency: int, output_len: int, think_time_s: float
) -> tuple[list[TurnResult], float]:
    """Every conversation's turn 1, then every turn 2, ..., `concurrency` at a time. Returns the turns and the
    wall time."""
    order = [(c, t) for t in range(len(conversations[0].user_turns)) for c in range(len(conversations))]
    done = {(c, t): asyncio.Event() for c, t in order}
    ready_at = dict.fromkeys(range(len(conversations)), 0.0)
    failed: set[int] = set()
    results: list[TurnResult] = []
    timeout = aiohttp.ClientTimeout(total=3600, sock_read=3600)
    connector = aiohttp.TCPConnector(limit=concurrency + 4, force_close=True)

    async def worker(session: aiohttp.ClientSession) -> None:
        while order:
            c, t = order.pop(0)
            if t:
                await done[(c, t - 1)].wait()
                await asyncio.sleep(max(0.0, ready_at[c] - time.perf_counter()))
            if c not in failed:
                await one_turn(session, c, t)
            done[(c, t)].set()

    async def one_turn(session: aiohttp.ClientSession, c: int, t: int) -> None:
        conv = conversations[c]
        messages = conv.history + [{"role": "user", "content": conv.user_turns[t]}]
        result = await stream_chat(session, endpoint, messages, output_len)
        results.append(TurnResult(c, t + 1, result))
        if not result.ok:
            failed.add(c)
            return
        conv.history = messages + [{"role": "assistant", "content": result.output_text}]
        ready_at[c] = time.perf_counter() + think_time_s

    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return results, time.perf_counter() - start


def summarize(runs: list[tuple[list[TurnResult], float]]) -> dict[str, Any]:
    """TTFT by turn index pooled over rounds, returning turns (2+) pooled, output tok/s as the median of rounds."""
    turns = [t for results, _ in runs for t in results]
    ok = [t for t in turns if t.result.ok]
    by_turn = {}
    for index in sorted({t.turn for t in ok}):
        these = [t.result for t in ok if t.turn == index]
        by_turn[str(index)] = latency_stats([r.ttft for r in these]) | {
            "prompt_tokens_mean": sum(r.prompt_tokens for r in these) / len(these)
        }
    rates = [sum(t.result.output_tokens for t in results if t.result.ok) / wall for results, wall in runs]
    return {
        "ttft_by_turn_ms": by_turn,
        "ttft_returning_ms": latency_stats([t.result.ttft for t in ok if t.turn > 1]),
        "ttft_first_ms": latency_stats([t.result.ttft for t in ok if t.turn == 1]),
        "output_throughput": median(rates),
        "rounds_output_throughput": rates,
        "duration_s": [wall for _, wall in runs],
        "completed": len(ok),
        "failed": len(turns) - len(ok),
        "errors": sorted({t.result.error for t in turns if not t.result.ok})[:5],
    }


def _start_all(args: argparse.Namespace, cfg: ServerConfig, run: dict[str, Any]) -> dict[str, RunningServer]:
    servers = {}
    for index, name in enumerate(args.servers):
        server = start_server(name, replace(cfg, port=args.port + index), args.log_dir)
        servers[name] = server
        run["servers"][name] = {"command": shlex.join(server.command), "load_at_start": load_average()}
        first = asyncio.run(warm_up(server.endpoint))
        if not first.ok:
            print(f"{name}: warm-up request failed: {first.error}", file=sys.stderr)
    return servers


def measure(servers: dict[str, RunningServer], args: argparse.Namespace, run: dict[str, Any]) -> None:
    words = WordSource.from_gguf(args.model, seed=args.seed)
    names = list(servers)
    collected: dict[tuple[str, str], list[tuple[list[TurnResult], float]]] = {}
    for round_index in range(args.rounds):
        for index, workload in enumerate(args.workload):
            shift = (index + round_index) % len(names)
            for name in names[shift:] + names[:shift]:
                source = words.reseeded(args.seed + 1000 * round_index + index)
                conversations = build_conversations(source, workload, args.first_turn_len, args.turn_len)
                outcome = asyncio.run(
                    run_workload(
                        servers[name].endpoint, conversations, workload.concurrency, args.output_len, args.think_time
                    )
                )
                collected.setdefault((name, workload.name), []).append(outcome)
                summary = summarize([outcome])
                by_turn = "  ".join(
                    f"t{k} {v['p50']:6.0f}" for k, v in summary["ttft_by_turn_ms"].items()
                )  # fmt: skip
                print(f"{name:>13} {workload.name:>9} round {round_index + 1}: TTFT p50 ms {by_turn}  "
                      f"{summary['output_throughput']:5.1f} tok/s  failed {summary['failed']}  "
                      f"load {load_average()}", flush=True)  # fmt: skip
    for (name, workload_name), runs in collected.items():
        run["servers"][name].setdefault("workloads", {})[workload_name] = summarize(runs)


def prefix_cache_counts(server: RunningServer) -> dict[str, float]:
    """llamafoundry's prefix-cache counters after the run (requests by the tier their prefix came from, tokens
    reused by tier, tokens computed), from its /metrics: where the returning turns' histories were found."""
    counts = {}
    with urllib.request.urlopen(f"{server.endpoint.base_url}/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("llamafoundry_prefix_cache_") and "_created" not in name:
                counts[name.removeprefix("llamafoundry_prefix_cache_")] = float(value)
    return counts


def run(args: argparse.Namespace) -> int:
    if args.report is not None:  # render an earlier run's results again
        return write_report(json.loads(args.report.read_text()), args)
    from llamafoundry.model.llamacpp import LlamaCppVocab

    args.workload = args.workload or [Workload(12, 3, 4), Workload(6, 3, 3)]
    vocab = LlamaCppVocab(args.model)
    eog = tuple(sorted(vocab.eog_token_ids))
    vocab.close()
    cfg = ServerConfig(args.model, args.parallel, args.ctx_size, args.threads, port=args.port, eog_token_ids=eog)
    cfg.llamafoundry_args = tuple(shlex.split(args.llamafoundry_args))
    run_data: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": machine_description(),
        "model": {"path": str(args.model), "size_mib": args.model.stat().st_size / 2**20},
        "command": invocation(),
        "settings": {
            "parallel": args.parallel, "threads": args.threads, "ctx_size": args.ctx_size,
            "first_turn_len": args.first_turn_len, "turn_len": args.turn_len, "output_len": args.output_len,
            "think_time_s": args.think_time, "rounds": args.rounds, "workloads": [w.name for w in args.workload],
        },  # fmt: skip
        "servers": {},
    }
    servers = _start_all(args, cfg, run_data)
    try:
        measure(servers, args, run_data)
        for name, server in servers.items():
            run_data["servers"][name]["peak_rss_mib"] = server.peak_rss_mib()
        if "llamafoundry" in servers:
            run_data["servers"]["llamafoundry"]["prefix_cache"] = prefix_cache_counts(servers["llamafoundry"])
    finally:
        for server in servers.values():
            server.stop()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(run_data, indent=1))
    return write_report(run_data, args)


def write_report(run_data: dict[str, Any], args: argparse.Namespace) -> int:
    stem = "benchmarks-" + args.doc_block
    plots = multiturn_report.plot(run_data, args.write_doc.parent, stem) if args.write_doc else []
    block = multiturn_report.markdown(run_data, plots)
    print("\n" + block)
    if args.write_doc:
        multiturn_report.write_markdown(args.write_doc, block, run_data["settings"]["workloads"], args.doc_block)
    return 0


def invocation() -> str:
    if sys.argv[1:3] == ["bench", "multiturn"]:
        return "llamafoundry bench multiturn " + shlex.join(sys.argv[3:])
    return "python bench/multiturn.py " + shlex.join(sys.argv[1:])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the GGUF both servers load")
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--workload", type=Workload.parse, action="append", default=None,
                        help="CONVERSATIONSxTURNS@CONCURRENCY (repeatable; default 12x3@4 and 6x3@3)")  # fmt: skip
    parser.add_argument("--first-turn-len", type=int, default=200, help="words in a conversation's first turn")
    parser.add_argument("--turn-len", type=int, default=50, help="words in each later user turn")
    parser.add_argument("--output-len", type=int, default=24, help="tokens per answer (ignore_eos)")
    parser.add_argument("--think-time", type=float, default=0.0, help="seconds between an answer and the next turn")
    parser.add_argument("--parallel", type=int, default=8, help="sequence slots of both servers")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx-size", type=int, default=2048, help="context per slot")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llamafoundry-args", default="", help="extra `serve` options for llamafoundry")
    parser.add_argument("--log-dir", type=Path, default=Path("bench/logs"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/multiturn.json"))
    parser.add_argument("--write-doc", type=Path, default=None, help="e.g. docs/benchmarks.md (plots go beside it)")
    parser.add_argument("--doc-block", default="multiturn", help="which results block of --write-doc to replace")
    parser.add_argument("--report", type=Path, default=None, help="render this earlier --results file; run nothing")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
