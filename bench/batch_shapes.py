"""What one llama_decode costs for the batch shapes a serving engine builds, on the product's own runner.

A continuous-batching step is some decoding sequences (one token and one logits row each) plus, maybe, a prompt
chunk of another sequence. On CPU the cost of a step is not proportional to its tokens: the matrix kernels have
a fast path only from a certain number of tokens per pass, and with one KV stream per sequence llama.cpp splits a
batch into passes (one per run of consecutive sequence ids holding the same number of tokens). This measures
those costs directly, so that scheduling decisions rest on numbers from this machine:

    llamafoundry bench shapes --model /tmp/bench-1b-q4km.gguf --threads 1 --context 100 1000

`--decode-sets 0-6 0-2,4-7 0-7` measures decode steps of exactly those sequence ids instead: what a gap in the ids
(a slot computing its prompt between decoding ones) costs against a step that fills it.

Every shape runs `--repeats` times; the fastest run is reported (the others only add noise from the machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.raw_decode import open_runner
from llamafoundry.config import FLASH_ATTN_MODES
from llamafoundry.model.llamacpp import LlamaCppRunner

# (decoding sequences, prompt-chunk tokens): decode alone, prompt chunks alone, and the mixes a step can hold
DEFAULT_SHAPES = (
    (1, 0), (2, 0), (4, 0), (8, 0), (12, 0), (15, 0), (16, 0),
    (0, 8), (0, 15), (0, 16), (0, 32), (0, 64), (0, 256),
    (8, 8), (8, 16), (15, 17), (16, 16), (16, 32),
)  # fmt: skip


def _tokens(n: int) -> list[int]:
    """Deterministic ordinary token ids (speed does not depend on which tokens)."""
    return [1000 + (i * 7919) % 90_000 for i in range(n)]


def step_cost(
    runner: LlamaCppRunner,
    decoding: int,
    chunk: int,
    context: int,
    repeats: int,
    all_logits: bool = False,
    apart: bool = False,
) -> float:
    """Seconds of the fastest of `repeats` decodes of one step shape.

    Every sequence holds `context` tokens. Sequences 0..decoding-1 decode one token each (with logits); the chunk
    goes to the next sequence id (consecutive, as the engine lays batches out) at positions context.. (a prompt
    whose first `context` tokens are cached), logits on its last token, or on every token with `all_logits` (a
    speculative draft being checked). `apart`: the chunk in a `llama_decode` call of its own, then the decoding
    tokens in another (what the engine does with such a step). Afterwards every sequence holds its `context`
    tokens again.
    """
    prefix = _tokens(context + chunk + 1)
    best = float("inf")
    split = apart and chunk and decoding

    def add_chunk() -> None:
        for pos in range(context, context + chunk):
            runner.batch_add(prefix[pos], pos, [decoding], all_logits or pos == context + chunk - 1)

    for _ in range(repeats):
        start = time.perf_counter()
        runner.batch_clear()
        if split:
            add_chunk()
            runner.decode()
            runner.batch_clear()
        for seq in range(decoding):  # ascending sequence ids, as the engine lays a batch out
            runner.batch_add(prefix[context], context, [seq], True)
        if not split:
            add_chunk()
        runner.decode()
        best = min(best, time.perf_counter() - start)
        for seq in range(decoding + 1):
            runner.seq_remove(seq, context, -1)
    return best


def decode_set_cost(runner: LlamaCppRunner, seq_ids: list[int], context: int, repeats: int) -> float:
    """Seconds of the fastest of `repeats` decodes of one token on each of `seq_ids` (in ascending order), every
    sequence holding `context` tokens."""
    token = _tokens(context + 1)[context]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        runner.batch_clear()
        for seq in sorted(seq_ids):
            runner.batch_add(token, context, [seq], True)
        runner.decode()
        best = min(best, time.perf_counter() - start)
        for seq in seq_ids:
            runner.seq_remove(seq, context, -1)
    return best


def parse_ids(text: str) -> list[int]:
    """Sequence ids from "0-2,4-7": [0, 1, 2, 4, 5, 6, 7]."""
    ids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        ids += range(int(first), int(last or first) + 1)
    return ids


def measure_decode_sets(runner: LlamaCppRunner, sets: list[str], context: int, repeats: int) -> None:
    fill_context(runner, runner.max_seqs, context)
    for text in sets:
        ids = parse_ids(text)
        seconds = decode_set_cost(runner, ids, context, repeats)
        print(f"context {context:5d}  decoding ids {text:>12} ({len(ids):2d} sequences): {seconds * 1000:7.1f} ms")


def fill_context(runner: LlamaCppRunner, sequences: int, context: int) -> None:
    """Give sequences 0..sequences-1 the same `context` tokens (computed once, copied to the others)."""
    for seq in range(runner.max_seqs):
        runner.seq_remove(seq)
    tokens = _tokens(context)
    for start in range(0, context, runner.max_batch_tokens):
        runner.batch_clear()
        for pos in range(start, min(context, start + runner.max_batch_tokens)):
            runner.batch_add(tokens[pos], pos, [0], False)
        runner.decode()
    for seq in range(1, sequences):
        runner.seq_copy(0, seq)


def measure(runner: LlamaCppRunner, shapes: list[tuple[int, int]], context: int, repeats: int) -> list[dict]:
    """Each shape in one call; a shape with both decoding sequences and a chunk also in two (`apart_ms`)."""
    fill_context(runner, runner.max_seqs, context)
    rows = []
    for decoding, chunk in shapes:
        seconds = step_cost(runner, decoding, chunk, context, repeats)
        apart = step_cost(runner, decoding, chunk, context, repeats, apart=True) if decoding and chunk else None
        tokens = decoding + chunk
        rows.append({"decoding": decoding, "chunk": chunk, "context": context, "ms": seconds * 1000, "tokens": tokens,
                     "apart_ms": apart * 1000 if apart is not None else None})  # fmt: skip
        in_two = f"; in two calls {apart * 1000:7.1f} ms" if apart is not None else ""
        print(
            f"context {context:5d}  decoding {decoding:2d} + chunk {chunk:3d} = {tokens:3d} tokens: "
            f"{seconds * 1000:7.1f} ms  ({seconds * 1000 / tokens:5.2f} ms/token){in_two}",
            flush=True,
        )
    return rows


def markdown(rows: list[dict], contexts: list[int]) -> str:
    """One row per shape, one column per context length (ms per step)."""
    head = "| decoding sequences + prompt-chunk tokens | " + " | ".join(f"context {c}: ms (ms/token)" for c in contexts)
    lines = [head + " |", "|---" * (len(contexts) + 1) + "|"]
    shapes = list(dict.fromkeys((r["decoding"], r["chunk"]) for r in rows))
    for decoding, chunk in shapes:
        cells = []
        for context in contexts:
            row = next(r for r in rows if (r["decoding"], r["chunk"], r["context"]) == (decoding, chunk, context))
            apart = f"; in two calls {row['apart_ms']:.0f}" if row.get("apart_ms") is not None else ""
            cells.append(f"{row['ms']:.0f} ({row['ms'] / row['tokens']:.1f}){apart}")
        lines.append(f"| {decoding} + {chunk} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.decode_sets:
        return run_decode_sets(args)
    shapes = [tuple(int(x) for x in s.split("+")) for s in args.shapes] if args.shapes else list(DEFAULT_SHAPES)
    slots = max(d for d, _ in shapes) + 1
    ctx_per_seq = max(args.context) + max(c for _, c in shapes) + 8
    batch_size = max(512, *(d + c for d, c in shapes))  # n_ubatch as the engine's default (512) unless more
    runner = open_runner(args.model, slots, ctx_per_seq, args.threads, batch_size, FLASH_ATTN_MODES[args.flash_attn])
    try:
        rows = [row for context in args.context for row in measure(runner, shapes, context, args.repeats)]
    finally:
        runner.close()
    print(f"\n{args.model.name}, {args.threads} thread(s), flash attention {args.flash_attn}\n")
    print(markdown(rows, list(args.context)))
    return 0


def run_decode_sets(args: argparse.Namespace) -> int:
    slots = max(max(parse_ids(text)) for text in args.decode_sets) + 1
    runner = open_runner(args.model, slots, max(args.context) + 8, args.threads, 512, FLASH_ATTN_MODES[args.flash_attn])
    try:
        for context in args.context:
            measure_decode_sets(runner, args.decode_sets, context, args.repeats)
    finally:
        runner.close()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context", type=int, nargs="+", default=[100], help="tokens already in each sequence")
    parser.add_argument("--shapes", nargs="+", help="DECODING+CHUNK pairs, e.g. 8+0 8+16 (default: a standard set)")
    parser.add_argument("--decode-sets", nargs="+", help="decode steps of these sequence ids, e.g. 0-6 0-2,4-7 0-7")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flash-attn", choices=list(FLASH_ATTN_MODES), default="auto")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
