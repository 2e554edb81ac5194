"""What a deployment costs over the bare route: one `llamafoundry serve` serving a GGUF on its bare route and, as a
managed deployment of one replica, the same GGUF with the same slots, threads and context (gateway -> replica
process), measured in one run, the routes taking turns level by level.

    llamafoundry bench deployment --model /tmp/bench-1b-q4km.gguf --threads 2 --concurrency 1 4

Both routes have no content filter and no rate limits, so the difference is the forwarding itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.client import Endpoint, run_level, warm_up
from bench.compare import load_average, machine_description
from bench.metrics import Summary
from bench.servers import ServerConfig, start_server
from bench.workloads import WordSource, build_workload
from llamafoundry.cli import main as cli_main

DEPLOYMENT = "bench"
CATALOG_MODEL = "Llama-3.2-1B-Instruct"


def create_deployment(home: Path, args: argparse.Namespace) -> str:
    """A managed deployment of the GGUF, one replica with the bare route's sizes; returns its key."""
    out = io.StringIO()
    argv = ["deploy", "create", DEPLOYMENT, "--model", args.catalog_model, "--weights", str(args.model), "--type",
            "managed", "--instances", "1", "--tpm", "0", "--rpm", "0", "--content-safety", "off", "--json",
            "--parallel", str(args.parallel), "--ctx-size", str(args.ctx_size), "--threads", str(args.threads),
            "--data-dir", str(home), "--create"]  # fmt: skip
    with contextlib.redirect_stdout(out):
        if cli_main(argv) != 0:
            raise RuntimeError(f"llamafoundry {' '.join(argv)} failed")
    return str(json.loads(out.getvalue())["primary_key"])


def wait_deployment(endpoint: Endpoint, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(warm_up(endpoint)).ok:
            return
        time.sleep(1)
    raise RuntimeError("the deployment's replica did not answer")


def run(args: argparse.Namespace) -> int:
    home = Path(tempfile.mkdtemp(prefix="llamafoundry-bench-deploy-"))
    key = create_deployment(home, args)
    extra = ("--data-dir", str(home))  # the gateway serves the deployments of this data directory too
    cfg = ServerConfig(args.model, args.parallel, args.ctx_size, args.threads, port=args.port)
    cfg.llamafoundry_args = extra
    server = start_server("llamafoundry", cfg, args.log_dir)
    routes = {"bare route": server.endpoint}
    routes["deployment"] = Endpoint(f"{server.endpoint.base_url}/deployments/{DEPLOYMENT}", "azure", key,
                                    extra_body={"ignore_eos": True})  # fmt: skip
    results: dict[str, dict[int, list[Summary]]] = {name: {} for name in routes}
    try:
        wait_deployment(routes["deployment"])
        asyncio.run(warm_up(routes["bare route"]))
        words = WordSource.from_gguf(args.model, seed=args.seed)
        order = list(routes)
        for round_index in range(args.rounds):
            for level_index, c in enumerate(args.concurrency):
                names = order if (round_index + level_index) % 2 == 0 else order[::-1]
                for name in names:
                    source = words.reseeded(args.seed + 1000 * round_index + level_index)
                    conversations = build_workload("random", source, max(8, 2 * c), args.input_len, args.output_len)
                    summary, _ = asyncio.run(run_level(routes[name], conversations, c))
                    results[name].setdefault(c, []).append(summary)
                    print(f"{name:>11} c={c:<3} {summary.output_throughput:6.1f} tok/s  TTFT p50 "
                          f"{summary.ttft_ms['p50']:7.1f} ms  failed {summary.failed}  load {load_average()}",
                          flush=True)  # fmt: skip
    finally:
        server.stop()
    print_table(results, args)
    return 0


def print_table(results: dict[str, dict[int, list[Summary]]], args: argparse.Namespace) -> None:
    print(f"\n{machine_description()}; model {args.model}; {args.parallel} slots, {args.threads} threads, "
          f"{args.rounds} rounds (tok/s: median of rounds; TTFT: pooled)\n")  # fmt: skip
    print("| concurrency | bare route tok/s | deployment tok/s | ratio | bare TTFT p50 | deployment TTFT p50 | "
          "difference |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for c in args.concurrency:
        row: dict[str, Any] = {}
        for name in results:
            runs = results[name][c]
            row[name] = (median(s.output_throughput for s in runs), _pooled_ttft_p50(runs))
        (bare_tps, bare_ttft), (dep_tps, dep_ttft) = row["bare route"], row["deployment"]
        print(f"| {c} | {bare_tps:.1f} | {dep_tps:.1f} | {dep_tps / bare_tps:.3f}x | {bare_ttft:.0f} ms | "
              f"{dep_ttft:.0f} ms | {dep_ttft - bare_ttft:+.0f} ms |")  # fmt: skip


def _pooled_ttft_p50(runs: list[Summary]) -> float:
    """Median over rounds of each round's TTFT p50 (rounds have the same number of requests)."""
    return median(s.ttft_ms["p50"] for s in runs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--catalog-model", default=CATALOG_MODEL, help="the deployment's catalog model name")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8290)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=Path("bench/logs"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
