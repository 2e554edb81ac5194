"""Time to first token and inter-token latency of streamed answers with the content filter off, in its default
(buffered) mode and in Azure's asynchronous mode, side by side in one run (prints a markdown table).

    .venv/bin/python bench/safety_streaming.py                           # a random-weight 1B-shaped model
    .venv/bin/python bench/safety_streaming.py --model m.gguf --streams 4 --requests 12 --max-tokens 96

One `llamafoundry serve` per mode on the same model and settings, started one after the other (never at once: they
would share the cores), each warmed up, then `--requests` streamed requests with `--streams` in flight
(`ignore_eos`, so every answer has `--max-tokens` tokens). A gap is the time between two chunks that carry text;
"max gap" shows the bursts of the buffered mode (text held until a window is checked). A random-weight model writes
token salad without sentence ends, the worst case for the buffered mode's windows.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy  # noqa: E402

from bench.client import Endpoint, run_level, single_turn, warm_up  # noqa: E402
from bench.metrics import Summary  # noqa: E402

MODES = {
    "off": ["--content-safety", "off"],
    "default": [],
    "asynchronous": ["--content-safety-streaming", "asynchronous"],
}
PROMPTS = ["Tell me about the history of the bicycle.", "How do I make a good cup of tea?",
           "Explain photosynthesis simply.", "What should I pack for a week in Lisbon?"]  # fmt: skip
KEY = "bench-safety-streaming-key-000000"


def build_model(preset: str, directory: Path) -> Path:
    out = directory / f"random-{preset}.gguf"
    cmd = [sys.executable, "-m", "llamafoundry", "models", "build-random", "--preset", preset, str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def measure(model: Path, mode: str, args: argparse.Namespace, log_dir: Path) -> tuple[Summary, float]:
    """The level's summary, and the longest gap between two text chunks (ms)."""
    port = free_port()
    serve = ["--model", str(model), "--port", str(port), "--api-key", KEY, "--data-dir", str(log_dir / mode),
             "--create", "--parallel", str(args.streams), "--ctx-size", str(args.ctx_size), *MODES[mode]]  # fmt: skip
    log_path = log_dir / f"{mode}.log"
    process = launch_serve(serve, log_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log_path, 600)
        endpoint = Endpoint(url, style="azure", api_key=KEY, extra_body={"ignore_eos": True})
        asyncio.run(warm_up(endpoint))
        conversations = [single_turn(PROMPTS[i % len(PROMPTS)], args.max_tokens) for i in range(args.requests)]
        summary, requests = asyncio.run(run_level(endpoint, conversations, args.streams))
        return summary, 1000 * max((gap for r in requests for gap in r.itl), default=float("nan"))
    finally:
        stop_process(process, timeout_s=20)


def table(results: dict[str, tuple[Summary, float]]) -> str:
    lines = ["| filter | requests | TTFT p50 ms | TTFT p90 ms | gap p50 ms | gap p99 ms | max gap ms | tokens/s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, (s, max_gap) in results.items():
        t, g = s.ttft_ms, s.itl_ms
        lines.append(f"| {mode} | {s.completed} ({s.failed} failed) | {t['p50']:.0f} | {t['p90']:.0f} | "
                     f"{g['p50']:.0f} | {g['p99']:.0f} | {max_gap:.0f} | "
                     f"{s.output_throughput:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a GGUF (default: build a random-weight model of --preset)")
    parser.add_argument("--preset", default="llama-3.2-1b", choices=["tiny", "llama-3.2-1b"])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ctx-size", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-safety-") as tmp:
        work = Path(tmp)
        model = args.model or build_model(args.preset, work)
        results = {mode: measure(model, mode, args, work) for mode in MODES}
    print(f"model: {args.model or 'random ' + args.preset}; {args.streams} streams, {args.requests} requests of "
          f"{args.max_tokens} tokens; Python {platform.python_version()}")  # fmt: skip
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
