"""Cost of one sampled token over a Llama 3 sized vocabulary (128,256 logits), per sampling setting.

    python bench/sampler_cost.py
    python bench/sampler_cost.py --vocab 128256 --repeats 300

Logits are drawn like a real model's (a few strong candidates over a long Gaussian tail); every setting samples
the same rows. The engine pays this once per sequence per step, beside a decode step of tens of milliseconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from llamafoundry.engine.sampler import TokenSampler, token_logprob
from llamafoundry.engine.sampling_params import SamplingParams

SETTINGS: dict[str, dict[str, object]] = {
    "greedy": {"temperature": 0.0},
    "greedy + ignore_eos (2 banned ids)": {"temperature": 0.0, "ignore_eos": True},
    "temperature 0.8": {"temperature": 0.8},
    "temperature 0.8 + top_p 0.95": {"temperature": 0.8, "top_p": 0.95},
    "temperature 0.8 + top_p 0.95 + presence/frequency penalties": {
        "temperature": 0.8,
        "top_p": 0.95,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
    },
    "temperature 1.5 + top_p 0.99 (flat: large nucleus)": {"temperature": 1.5, "top_p": 0.99},
}


def model_like_logits(rng: np.random.Generator, vocab: int, rows: int) -> np.ndarray:
    """A peaked next-token distribution: a handful of candidates 10-16 logits above a Gaussian tail."""
    logits = rng.normal(0.0, 1.5, size=(rows, vocab)).astype(np.float32)
    for row in logits:
        row[rng.integers(0, vocab, size=8)] += rng.uniform(10.0, 16.0, size=8).astype(np.float32)
    return logits


def time_setting(params: SamplingParams, logits: np.ndarray, banned: tuple[int, ...]) -> float:
    """Mean microseconds per sample + accept."""
    sampler = TokenSampler(params, seed=0, banned_token_ids=banned if params.ignore_eos else ())
    start = time.perf_counter()
    for row in logits:
        sampler.accept(sampler.sample(row))
    return (time.perf_counter() - start) / len(logits) * 1e6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab", type=int, default=128_256)
    parser.add_argument("--repeats", type=int, default=200, help="sampled tokens per setting")


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(0)
    logits = model_like_logits(rng, args.vocab, args.repeats)
    banned = (args.vocab - 247, args.vocab - 256)  # <|eot_id|>, <|end_of_text|> of Llama 3
    print(f"| setting (vocabulary {args.vocab:,}) | microseconds per token |")
    print("|---|---|")
    for name, fields in SETTINGS.items():
        print(f"| {name} | {time_setting(SamplingParams(**fields), logits, banned):.0f} |")  # type: ignore[arg-type]
    start = time.perf_counter()
    for row in logits:
        token_logprob(row, int(np.argmax(row)), 5)
    print(f"| logprobs with top_logprobs 5 (extra) | {(time.perf_counter() - start) / len(logits) * 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
