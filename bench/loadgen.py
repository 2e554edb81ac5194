"""Load generator against one running endpoint, in the manner of `vllm bench serve`.

    llamafoundry bench serve --base-url http://127.0.0.1:8000 --api-key KEY --style azure \\
        --workload random --concurrency 1 4 8 --input-len 128 --output-len 64
    llamafoundry bench serve --base-url http://127.0.0.1:8080 --style openai --workload shared-prefix \\
        --concurrency 8 --num-prompts 16 --extra-body '{"ignore_eos": true}'

Every request is greedy and streamed; with ignore_eos it generates exactly --output-len tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.client import Endpoint, run_level
from bench.metrics import PERCENTILES, RequestResult, Summary, first_wave_ttft, latency_stats, request_timeline
from bench.workloads import WORKLOADS, WordSource, build_workload


def format_summary(label: str, s: Summary) -> str:
    lines = [
        f"== {label} ==",
        f"completed {s.completed}, failed {s.failed}, duration {s.duration_s:.2f} s",
        f"request throughput {s.request_throughput:.3f} req/s, output {s.output_throughput:.1f} tok/s, "
        f"total {s.total_token_throughput:.1f} tok/s (input {s.total_input_tokens}, output {s.total_output_tokens})",
    ]
    for name, stats in (("TTFT", s.ttft_ms), ("TPOT", s.tpot_ms), ("ITL", s.itl_ms), ("E2EL", s.e2el_ms)):
        pct = "  ".join(f"p{p} {stats[f'p{p}']:8.1f}" for p in PERCENTILES)
        lines.append(f"{name:>5} ms: mean {stats['mean']:8.1f}  {pct}")
    lines += [f"error: {e}" for e in s.errors]
    return "\n".join(lines)


def format_waves(results: list[RequestResult], concurrency: int) -> str:
    """TTFT p50 of the first wave (sent together: the shared prompt is cached nowhere yet) and of the rest."""
    first, later = first_wave_ttft(results, concurrency)
    parts = [
        f"{name} {latency_stats(t)['p50']:8.1f} ms ({len(t)})"
        for name, t in (("first wave", first), ("later", later))
        if t
    ]
    return " TTFT p50: " + ", ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", required=True, help="server root (Azure style may end in /models)")
    parser.add_argument("--style", choices=["openai", "azure"], default="azure")
    parser.add_argument("--api-key", default=os.environ.get("LLAMAFOUNDRY_API_KEY"))
    parser.add_argument("--model", default=None, help="the body's model field, if the server wants one")
    parser.add_argument("--workload", choices=WORKLOADS, default="random")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1], help="levels to run, one after another")
    parser.add_argument("--request-rate", type=float, default=float("inf"), help="Poisson arrivals per second")
    parser.add_argument("--num-prompts", type=int, default=0, help="conversations per level (default 2 x concurrency)")
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--prefix-len", type=int, default=1000, help="shared-prefix: system prompt tokens")
    parser.add_argument("--num-turns", type=int, default=3, help="chat: turns per conversation")
    parser.add_argument("--tokenizer", type=Path, default=None, help="GGUF to build prompts with (default: Llama 3)")
    parser.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos")
    parser.add_argument("--extra-body", default="{}", help="JSON merged into every request body")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the summaries here")


def run(args: argparse.Namespace) -> int:
    from llamafoundry.model.gguf_builder import default_tokenizer_path

    extra = {} if args.no_ignore_eos else {"ignore_eos": True}
    extra |= json.loads(args.extra_body)
    endpoint = Endpoint(args.base_url, args.style, args.api_key, args.model, extra)
    words = WordSource.from_gguf(args.tokenizer or default_tokenizer_path(), seed=args.seed)
    summaries = {}
    for c in args.concurrency:
        count = args.num_prompts or max(2 * c, 8)
        conversations = build_workload(
            args.workload, words, count, args.input_len, args.output_len, args.prefix_len, args.num_turns
        )
        summary, results = asyncio.run(run_level(endpoint, conversations, c, args.request_rate, seed=args.seed))
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        print(format_summary(f"{args.workload}, concurrency {c}, load average {load}", summary), flush=True)
        if args.workload == "shared-prefix" and math.isinf(args.request_rate):  # sent in waves, not Poisson
            print(format_waves(results, c), flush=True)
        summaries[str(c)] = summary.to_dict() | {"requests": request_timeline(results)}
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
