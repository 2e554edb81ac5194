"""Side by side in one run: `llamafoundry serve`, llama.cpp's `llama-server`, llama-cpp-python's server, and a
raw llama_decode loop as the ceiling, all on one GGUF with the same threads and context per sequence.

All servers are started first (idle servers use no CPU), each gets a warm-up request, then every load level runs
on each server in turn, the order rotating per level, with the raw loop measured beside each random-prompt level;
so load from other processes drifts over all of them alike. Absolute numbers on a shared 2-core machine move by
10-30% between runs: read the ratios, which come from one run.

    llamafoundry bench compare --model /tmp/bench-1b-q4km.gguf --write-doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from bench.client import run_level, warm_up
from bench.metrics import RequestResult, Summary, first_wave_ttft, latency_stats, summarize
from bench.raw_decode import open_runner, raw_decode
from bench.servers import DEFAULT_SERVERS, SERVERS, RunningServer, ServerConfig, start_server
from bench.workloads import WordSource, build_workload
from llamafoundry.model.llamacpp import LlamaCppRunner


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def invocation() -> str:
    """The command line that started this run, as a user would type it."""
    if sys.argv[1:3] == ["bench", "compare"]:
        return "llamafoundry bench compare " + shlex.join(sys.argv[3:])
    return "python bench/compare.py " + shlex.join(sys.argv[1:])


def num_requests(concurrency: int, per_stream: int) -> int:
    return max(8, per_stream * concurrency)


def raw_level(runner: LlamaCppRunner, c: int, args: argparse.Namespace) -> dict[str, float]:
    """Decode tok/s of the bare loop with `c` sequences, median of args.raw_repeats runs."""
    runs = sorted(
        (raw_decode(runner, c, args.input_len, args.output_len, seed=i) for i in range(args.raw_repeats)),
        key=lambda r: r.decode_tok_s,
    )
    mid = runs[len(runs) // 2]
    print(f"{'raw loop':>16} {'random':>13} c={c:<3} {mid.decode_tok_s:6.1f} tok/s decode  load {load_average()}")
    return {"decode_tok_s": mid.decode_tok_s, "prefill_tok_s": mid.prefill_tok_s, "load": load_average()}


def _workload_plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(workload, concurrency, conversations) in the order they run."""
    plan = [("random", c, num_requests(c, args.requests_per_stream)) for c in args.concurrency]
    if args.shared_prefix_concurrency:
        c = args.shared_prefix_concurrency
        plan.append(("shared-prefix", c, args.shared_prefix_requests or 2 * c))
    if args.chat_concurrency:
        plan.append(("chat", args.chat_concurrency, args.chat_concurrency))
    return plan


def _start_all(args: argparse.Namespace, cfg: ServerConfig, run_data: dict[str, Any]) -> dict[str, RunningServer]:
    """Start every server (each on its own port) and warm each up; a server that fails is reported and skipped."""
    servers = {}
    for index, name in enumerate(args.servers):
        run_data["servers"][name] = {"levels": {}, "load_at_start": load_average()}
        try:
            server = start_server(name, replace(cfg, port=args.port + index), args.log_dir)
        except RuntimeError as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            run_data["servers"][name]["error"] = str(exc)
            continue
        servers[name] = server
        run_data["servers"][name]["command"] = shlex.join(server.command)
        first = asyncio.run(warm_up(server.endpoint))
        if not first.ok:
            print(f"{name}: warm-up request failed: {first.error}", file=sys.stderr)
    return servers


def _measure(
    servers: dict[str, RunningServer], runner: LlamaCppRunner | None, args: argparse.Namespace, run_data: dict[str, Any]
) -> None:
    """Every level on every server in turn (the order rotates per level), `args.rounds` times over, so load
    drift from other processes hits all alike. Prompts differ between rounds (no cache hits across rounds) and
    are the same for every server within a round."""
    words = WordSource.from_gguf(args.model, seed=args.seed)
    names = list(servers)
    plan = _workload_plan(args)
    rounds: dict[tuple[str, str, int], list[tuple[Summary, list[RequestResult], str]]] = {}
    raw: dict[int, list[dict[str, float]]] = {}
    for round_index in range(args.rounds):
        for index, (workload, c, count) in enumerate(plan):
            if workload == "random" and runner is not None and c <= args.parallel:
                raw.setdefault(c, []).append(raw_level(runner, c, args))
            shift = (index + round_index) % max(len(names), 1)
            for name in names[shift:] + names[:shift]:
                source = words.reseeded(args.seed + 1000 * round_index + index)
                conversations = build_workload(
                    workload, source, count, args.input_len, args.output_len, args.prefix_len, args.chat_turns
                )
                summary, results = asyncio.run(run_level(servers[name].endpoint, conversations, c))
                rounds.setdefault((name, workload, c), []).append((summary, results, load_average()))
                print(
                    f"{name:>16} {workload:>13} c={c:<3} {summary.output_throughput:6.1f} tok/s  "
                    f"TTFT p50 {summary.ttft_ms['p50']:7.0f} ms  ITL p50/p99 {summary.itl_ms['p50']:5.0f}/"
                    f"{summary.itl_ms['p99']:5.0f} ms  failed {summary.failed}  load {load_average()}",
                    flush=True,
                )
    for c, runs in raw.items():
        run_data.setdefault("raw", {})[str(c)] = {
            "decode_tok_s": median(r["decode_tok_s"] for r in runs),
            "prefill_tok_s": median(r["prefill_tok_s"] for r in runs),
            "rounds": [r["decode_tok_s"] for r in runs],
        }
    for (name, workload, c), runs in rounds.items():
        run_data["servers"][name]["levels"].setdefault(workload, {})[str(c)] = _combine(runs, workload, c)


def _combine(runs: list[tuple[Summary, list[RequestResult], str]], workload: str, c: int) -> dict[str, Any]:
    """Latency percentiles over the requests of all rounds; rates as the median of the rounds. The shared-prefix
    workload also gets TTFT of each round's first wave (prompt cached nowhere) and of the later requests."""
    pooled = summarize([r for _, results, _ in runs for r in results], sum(s.duration_s for s, _, _ in runs))
    data = pooled.to_dict()
    if workload == "shared-prefix":
        waves = [first_wave_ttft(results, c) for _, results, _ in runs]
        data["ttft_first_wave_ms"] = latency_stats([t for first, _ in waves for t in first])
        data["ttft_later_ms"] = latency_stats([t for _, later in waves for t in later])
    for key in ("request_throughput", "output_throughput", "total_token_throughput"):
        data[key] = median(getattr(s, key) for s, _, _ in runs)
    data["rounds_output_throughput"] = [s.output_throughput for s, _, _ in runs]
    data["load"] = [load for _, _, load in runs]
    return data


def run(args: argparse.Namespace) -> int:
    from llamafoundry.model.llamacpp import LlamaCppVocab

    vocab = LlamaCppVocab(args.model)
    eog = tuple(sorted(vocab.eog_token_ids))
    vocab.close()
    cfg = ServerConfig(args.model, args.parallel, args.ctx_size, args.threads, port=args.port, eog_token_ids=eog)
    run_data: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": machine_description(),
        "model": {"path": str(args.model), "name": args.model.name, "size_mib": args.model.stat().st_size / 2**20},
        "command": invocation(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "handler"},
        "workloads": {
            "shared-prefix": f"a {args.prefix_len}-token system prompt shared by every request, "
            f"{args.input_len}-token user turns, {args.shared_prefix_concurrency} concurrent",
            "chat": f"{args.chat_turns} turns per conversation, history resent each turn, "
            f"{args.chat_concurrency} concurrent conversations",
        },
        "load_at_start": load_average(),
        "servers": {},
    }
    runner = None if args.no_raw else open_runner(args.model, args.parallel, args.ctx_size, args.threads)
    servers = _start_all(args, cfg, run_data)
    try:
        if runner is not None:
            raw_decode(runner, 1, 8, 4)  # warm-up
        _measure(servers, runner, args, run_data)
        for name, server in servers.items():
            run_data["servers"][name]["peak_rss_mib"] = server.peak_rss_mib()
    finally:
        for server in servers.values():
            server.stop()
        if runner is not None:
            runner.close()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(run_data, indent=1))
    plots = []
    if args.write_doc and report.can_plot():
        plots = report.plot(run_data, args.write_doc.parent)
    elif args.write_doc:
        print(
            "matplotlib is not installed (pip install -e '.[bench]'): writing tables without the plot", file=sys.stderr
        )
    block = report.markdown(run_data, plots)
    print("\n" + block)
    if args.write_doc:
        report.write_markdown(args.write_doc, block)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the GGUF every server loads")
    parser.add_argument("--servers", nargs="+", default=list(DEFAULT_SERVERS), choices=SERVERS)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests-per-stream", type=int, default=2, help="requests per level = this x concurrency")
    parser.add_argument("--input-len", type=int, default=32, help="user-turn tokens")
    parser.add_argument("--output-len", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--shared-prefix-concurrency", type=int, default=8, help="0 skips the workload")
    parser.add_argument("--shared-prefix-requests", type=int, default=0, help="default: 2 x its concurrency")
    parser.add_argument("--prefix-len", type=int, default=1000, help="shared system prompt tokens")
    parser.add_argument("--chat-concurrency", type=int, default=4, help="0 skips the multi-turn workload")
    parser.add_argument("--chat-turns", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx-size", type=int, default=2048, help="context per sequence (llama-server: x parallel)")
    parser.add_argument("--parallel", type=int, default=16, help="sequence slots of servers that have them")
    parser.add_argument("--port", type=int, default=8090, help="first port; each server gets the next one")
    parser.add_argument("--rounds", type=int, default=1, help="measure everything this many times (medians)")
    parser.add_argument("--raw-repeats", type=int, default=3, help="raw loop runs per level and round (median)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw llama_decode ceiling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=Path("bench/logs"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument("--write-doc", type=Path, default=None, help="e.g. docs/benchmarks.md (plots go beside it)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
