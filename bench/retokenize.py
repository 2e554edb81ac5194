"""Do streamed answers re-tokenize to the ids that were generated? What a returning conversation's history
looks like in tokens, with and without the generated ids kept beside the answers (service/answer_ids.py).

For each of `--answers` chat answers (sampled, seeded), the next turn's prompt is rendered from the history as a
client sends it back (the answer as streamed text) and compared with what the KV cache holds (the first prompt
and the generated ids): how many of the answer's tokens the next prompt shares with the cache.

    llamafoundry bench retokenize --model /tmp/bench-1b-q4km.gguf --answers 20
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llamafoundry.config import EngineSettings
from llamafoundry.engine.factory import build_local_engine
from llamafoundry.engine.prefix_cache import common_prefix_len
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.service.chat import ChatService
from llamafoundry.service.chat_format import ChatFormatter
from llamafoundry.service.prompt_pieces import render_pieces
from llamafoundry.service.types import ChatMessage, ChatRequest, GenerationOptions


async def measure(args: argparse.Namespace) -> list[tuple[int, int, int, bool]]:
    """Per answer: (generated tokens, shared with ids kept, shared by re-tokenizing, template trimmed it)."""
    settings = EngineSettings(model_path=args.model, ctx_size=2048, parallel=2, threads=args.threads)
    engine = build_local_engine(settings, "bench", "Meta")
    service = ChatService(engine, "bench", "Meta", 2048)
    await service.start()
    info = engine.model_info
    formatter = ChatFormatter(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    rows = []
    try:
        for seed in range(args.answers):
            messages = [ChatMessage("user", f"Question {seed}: how do I learn to sail a small boat on the sea?")]
            options = GenerationOptions(temperature=args.temperature, seed=seed, max_tokens=args.answer_len)
            params = SamplingParams(temperature=args.temperature, seed=seed, max_tokens=args.answer_len)
            first = service.prompt_ids(ChatRequest(messages, options))
            text = ""  # the answer as a client streams it (the service keeps its ids)
            async for update in await service.stream(await service.prepare(ChatRequest(messages, options))):
                text += "".join(delta.text for delta in update.deltas)
            generated: list[int] = []  # the same request again (seeded): the ids the cache holds
            async for output in await engine.add_request(first, params):
                generated += [t for delta in output.deltas for t in delta.token_ids]
            back = [*messages, ChatMessage("assistant", text), ChatMessage("user", "And then?")]
            cached = first + generated
            kept = common_prefix_len(service.prompt_ids(ChatRequest(back, options)), cached) - len(first)
            plain_ids = [t for piece in render_pieces(formatter, back) for t in engine.tokenize(piece.text)]
            plain = common_prefix_len(plain_ids, cached) - len(first)
            rows.append((len(generated), max(0, kept), max(0, plain), text != text.strip()))
    finally:
        await service.stop()
    return rows


def run(args: argparse.Namespace) -> int:
    rows = asyncio.run(measure(args))
    n = len(rows)
    exact_plain = sum(1 for g, _, p, _ in rows if p >= g - 1)
    exact_kept = sum(1 for g, k, _, _ in rows if k >= g - 1)
    trimmed = sum(1 for *_, t in rows if t)
    generated = sum(g for g, *_ in rows)
    print(f"{args.model.name}: {n} answers of {args.answer_len} tokens, temperature {args.temperature}")
    print("| | answers whose tokens the next prompt shares whole | answer tokens shared with the cache |")
    print("|---|---|---|")
    print(f"| re-tokenized text | {exact_plain} of {n} | {sum(p for _, _, p, _ in rows)} of {generated} |")
    print(f"| generated ids kept | {exact_kept} of {n} | {sum(k for _, k, _, _ in rows)} of {generated} |")
    print(f"answers the template trimmed (leading or trailing whitespace): {trimmed}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--answers", type=int, default=20)
    parser.add_argument("--answer-len", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
