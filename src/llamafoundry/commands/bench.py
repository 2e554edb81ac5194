"""`llamafoundry bench ...`: the benchmark harness in the repository's `bench/` folder.

The harness is not part of the installed package (it starts peer servers and needs the `bench` extra), so these
commands work from a source checkout: `pip install -e '.[bench]'`, then run them from anywhere.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

_REPO_ROOT = Path(__file__).resolve().parents[3]
_SUBCOMMANDS = {
    "serve": ("bench.loadgen", "load generator against one running OpenAI- or Azure-style endpoint"),
    "compare": ("bench.compare", "llamafoundry vs llama-server vs llama-cpp-python vs raw llama_decode, one GGUF"),
    "engine": ("bench.engine_throughput", "in-process engine against a raw llama_decode loop (no HTTP)"),
    "prefix": ("bench.prefix_caching", "in-process engine with and without prefix caching, shared system prompt"),
    "kv": ("bench.kv_cache", "KV cache types and the prefix cache's tiers: bytes/token, speed, restore vs prefill"),
    "deployment": ("bench.deployment", "a deployment (gateway -> replica process) against the bare route"),
    "retokenize": ("bench.retokenize", "do streamed answers re-tokenize to their generated ids (kept or not)"),
    "kv-soak": ("bench.kv_soak", "thousands of turns through the prefix cache's tiers under small budgets"),
    "multiturn": ("bench.multiturn", "returning users: multi-turn conversations, TTFT by turn, vs llama-server"),
    "prefix-restart": ("bench.prefix_restart", "returning users after a restart: the disk tier against recomputing"),
    "sampler": ("bench.sampler_cost", "microseconds per sampled token over a 128k vocabulary, per setting"),
    "journal": ("bench.usage_journal", "what the usage journal costs a request: progress entries, synced ends"),
    "restart": ("bench.replica_restart", "how long a deployment's replica killed under load is away, and why"),
    "shapes": ("bench.batch_shapes", "milliseconds per llama_decode for decode/prompt-chunk batch shapes"),
    "speculative": ("bench.speculative_replay", "prompt-lookup drafting replayed on real answers, priced per pass"),
    "soak": ("bench.soak", "RSS of a gateway and its replicas over thousands of fuzzed valid and invalid requests"),
}


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks (needs a source checkout and the bench extra)")
    sub = bench.add_subparsers(title="bench commands")
    for name, (module_name, help_text) in _SUBCOMMANDS.items():
        # Arguments are parsed by the harness module itself, imported only when this command runs: the harness
        # pulls in aiohttp, matplotlib and llama.cpp, which other commands should not pay for.
        parser = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        parser.add_argument("bench_args", nargs=argparse.REMAINDER)
        parser.set_defaults(handler=_handler(name, module_name, help_text))


def _harness(module_name: str) -> ModuleType:
    if (_REPO_ROOT / "bench" / "__init__.py").is_file() and str(_REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(_REPO_ROOT))
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise FileNotFoundError(
            f"the benchmark harness could not be imported ({exc}). `llamafoundry bench` runs from a source "
            "checkout with the bench extra: git clone the project, then pip install -e '.[bench]'."
        ) from None


def _handler(name: str, module_name: str, help_text: str) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        module = _harness(module_name)
        parser = argparse.ArgumentParser(prog=f"llamafoundry bench {name}", description=help_text)
        module.add_arguments(parser)
        return int(module.run(parser.parse_args(args.bench_args)) or 0)

    return handle
