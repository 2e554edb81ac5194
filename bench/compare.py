"""Side by side in one run: `llamafoundry serve`, llama.cpp's `llama-server`, llama-cpp-python's server, and a
raw llama_decode loop as the ceiling, all on one GGUF with the same threads and context per sequence.

Servers run one at a time on an otherwise idle loopback; each gets a warm-up request, then every load level.
Absolute numbers on a shared 2-core machine move by 10-30% between runs: read the ratios, which come from one run.

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
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from bench.client import run_level, warm_up
from bench.raw_decode import open_runner, raw_decode
from bench.servers import SERVERS, ServerConfig, start_server
from bench.workloads import WordSource, build_workload


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


def measure_raw(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Decode tok/s of the bare loop at each concurrency, median of args.raw_repeats."""
    runner = open_runner(args.model, args.parallel, args.ctx_size, args.threads)
    results: dict[str, dict[str, float]] = {}
    try:
        raw_decode(runner, 1, 8, 4)  # warm-up
        for c in args.concurrency:
            if c > args.parallel:
                continue
            runs = sorted(
                (raw_decode(runner, c, args.input_len, args.output_len, seed=i) for i in range(args.raw_repeats)),
                key=lambda r: r.decode_tok_s,
            )
            mid = runs[len(runs) // 2]
            results[str(c)] = {"decode_tok_s": mid.decode_tok_s, "prefill_tok_s": mid.prefill_tok_s}
            print(f"raw loop, {c} sequences: {mid.decode_tok_s:.1f} tok/s decode", flush=True)
    finally:
        runner.close()
    return results


def _workload_plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(workload, concurrency, conversations) in the order they run."""
    plan = [("random", c, num_requests(c, args.requests_per_stream)) for c in args.concurrency]
    if args.shared_prefix_concurrency:
        c = args.shared_prefix_concurrency
        plan.append(("shared-prefix", c, args.shared_prefix_requests or 2 * c))
    if args.chat_concurrency:
        plan.append(("chat", args.chat_concurrency, args.chat_concurrency))
    return plan


async def _measure_server(
    name: str, cfg: ServerConfig, args: argparse.Namespace, words: WordSource, log_dir: Path
) -> dict[str, Any]:
    data: dict[str, Any] = {"load_at_start": load_average(), "levels": {}}
    server = start_server(name, cfg, log_dir)
    data["command"] = shlex.join(server.command)
    try:
        first = await warm_up(server.endpoint)
        if not first.ok:
            raise RuntimeError(f"{name}: warm-up request failed: {first.error}")
        for workload, c, count in _workload_plan(args):
            conversations = build_workload(
                workload, words, count, args.input_len, args.output_len, args.prefix_len, args.chat_turns
            )
            summary, _ = await run_level(server.endpoint, conversations, c)
            data["levels"].setdefault(workload, {})[str(c)] = summary.to_dict()
            print(
                f"{name:>16} {workload:>13} c={c:<3} {summary.output_throughput:6.1f} tok/s  "
                f"TTFT p50 {summary.ttft_ms['p50']:7.0f} ms  ITL p50/p99 {summary.itl_ms['p50']:5.0f}/"
                f"{summary.itl_ms['p99']:5.0f} ms  failed {summary.failed}  load {load_average()}",
                flush=True,
            )
        data["peak_rss_mib"] = server.peak_rss_mib()
    finally:
        server.stop()
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
    if not args.no_raw:
        run_data["raw"] = measure_raw(args)
    for index, name in enumerate(args.servers):
        cfg.port = args.port + index
        words = WordSource.from_gguf(args.model, seed=args.seed)  # the same prompts for every server
        try:
            run_data["servers"][name] = asyncio.run(_measure_server(name, cfg, args, words, args.log_dir))
        except RuntimeError as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            run_data["servers"][name] = {"error": str(exc), "levels": {}, "load_at_start": load_average()}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(run_data, indent=1))
    plots = report.plot(run_data, args.write_doc.parent) if args.write_doc else []
    block = report.markdown(run_data, plots)
    print("\n" + block)
    if args.write_doc:
        report.write_markdown(args.write_doc, block)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the GGUF every server loads")
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
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
    parser.add_argument("--raw-repeats", type=int, default=3)
    parser.add_argument("--no-raw", action="store_true", help="skip the raw llama_decode ceiling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=Path("bench/logs"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument("--write-doc", type=Path, default=None, help="e.g. docs/benchmarks.md (plots go beside it)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
