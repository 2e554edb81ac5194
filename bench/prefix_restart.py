"""Returning users after a restart: does the disk tier (`--prefix-cache-dir`) keep a conversation's history?

Conversations with long histories get their first turn on a server with a disk tier; the server is stopped and a
new one started on the same directory (its slots and host-memory tier empty), and every conversation comes back
with its next turn. The same returning prompts are then sent to a server started on an EMPTY directory: what a
restart without the disk tier costs. The ratio of the two is the disk tier's effect on time to first token.

    llamafoundry bench prefix-restart --model /tmp/prefix-1b-q4km.gguf --threads 2 --write-doc docs/benchmarks.md

Conversations are sent one at a time (no batching effects): what is timed is restoring against computing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.client import stream_chat, warm_up
from bench.compare import load_average, machine_description
from bench.multiturn_report import write_markdown
from bench.servers import RunningServer, ServerConfig, start_server
from bench.workloads import WordSource

SETTINGS = ("conversations", "history_len", "output_len", "threads", "parallel")
PHASES = ("first turn (cold)", "returning, after restart, disk tier", "returning, after restart, empty directory")


def _server(args: argparse.Namespace, cache_dir: Path, port_offset: int) -> RunningServer:
    cfg = ServerConfig(args.model, args.parallel, args.ctx_size, args.threads, port=args.port + port_offset)
    cfg.llamafoundry_args = ("--prefix-cache-dir", str(cache_dir))
    server = start_server("llamafoundry", cfg, args.log_dir)
    asyncio.run(warm_up(server.endpoint))
    return server


async def _turns(server: RunningServer, prompts: list[list[dict[str, str]]], max_tokens: int) -> list[Any]:
    """Send `prompts` one after the other; the results in order."""
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return [await stream_chat(session, server.endpoint, messages, max_tokens) for messages in prompts]


def _phase(args: argparse.Namespace, cache_dir: Path, offset: int, prompts: list[Any]) -> tuple[list[Any], str]:
    load = load_average()
    server = _server(args, cache_dir, offset)
    try:
        return asyncio.run(_turns(server, prompts, args.output_len)), load
    finally:
        server.stop()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    words = WordSource.from_gguf(args.model, seed=args.seed)
    firsts = [[{"role": "user", "content": words.text(args.history_len)}] for _ in range(args.conversations)]
    disk_dir = Path(tempfile.mkdtemp(prefix="prefix-restart-disk-"))
    empty_dir = Path(tempfile.mkdtemp(prefix="prefix-restart-empty-"))
    try:
        first, load_first = _phase(args, disk_dir, 0, firsts)
        failed = [r.error for r in first if not r.ok]
        if failed:
            raise RuntimeError(f"first turns failed: {failed[:3]}")
        returning = [
            messages + [{"role": "assistant", "content": r.output_text}, {"role": "user", "content": words.text(50)}]
            for messages, r in zip(firsts, first, strict=True)
        ]
        restored, load_restored = _phase(args, disk_dir, 1, returning)
        cold, load_cold = _phase(args, empty_dir, 2, returning)
    finally:
        shutil.rmtree(disk_dir, ignore_errors=True)
        shutil.rmtree(empty_dir, ignore_errors=True)
    return {
        phase: {
            "ttft_ms": [round(r.ttft * 1000, 1) for r in results if r.ok],
            "prompt_tokens": [r.prompt_tokens for r in results if r.ok],
            "failed": sum(not r.ok for r in results),
            "load_at_start": load,
        }
        for phase, results, load in zip(
            PHASES, (first, restored, cold), (load_first, load_restored, load_cold), strict=True
        )
    }


def markdown(run: dict[str, Any]) -> str:
    phases = run["phases"]
    cold = median(phases[PHASES[2]]["ttft_ms"] or [float("nan")])
    lines = [
        f"Run of {run['date']} on {run['machine']} (the CPU as `lscpu` names it); model `{run['model']}`. "
        f"{run['settings']['conversations']} conversations, first turn {run['settings']['history_len']} words, "
        f"answers {run['settings']['output_len']} tokens, sent one at a time; {run['settings']['threads']} "
        f"threads, {run['settings']['parallel']} slots.",
        "",
        f"Produced by: `{run['command']}`",
        "",
        "| phase | prompt tokens (mean) | TTFT p50 | TTFT each | / cold returning | load at start |",
        "|---|---|---|---|---|---|",
    ]
    for phase in PHASES:
        data = phases[phase]
        p50 = median(data["ttft_ms"]) if data["ttft_ms"] else float("nan")
        mean_tokens = sum(data["prompt_tokens"]) / max(1, len(data["prompt_tokens"]))
        each = ", ".join(f"{t / 1000:.2f}" for t in data["ttft_ms"])
        lines.append(
            f"| {phase} | {mean_tokens:.0f} | {p50 / 1000:.2f} s | {each} s | {p50 / cold:.2f}x | "
            f"{data['load_at_start']} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    data = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": machine_description(),
        "model": str(args.model),
        "command": "llamafoundry bench prefix-restart " + shlex.join(sys.argv[3:]),
        "settings": {key: getattr(args, key) for key in SETTINGS},
    }
    data["phases"] = measure(args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(data, indent=1))
    block = markdown(data)
    print("\n" + block)
    if args.write_doc:
        write_markdown(args.write_doc, block, [], "prefix-restart")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--history-len", type=int, default=2000, help="words in each conversation's first turn")
    parser.add_argument("--output-len", type=int, default=16, help="tokens per answer (ignore_eos)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ctx-size", type=int, default=4096, help="context per slot")
    parser.add_argument("--port", type=int, default=8290)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=Path("bench/logs"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/prefix-restart.json"))
    parser.add_argument("--write-doc", type=Path, default=None, help="e.g. docs/benchmarks.md")


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(cli)
    raise SystemExit(run(cli.parse_args()))
