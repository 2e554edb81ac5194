"""Build tests/platform/safety_everyday.jsonl: ordinary traffic that the content filter must let through.

    .venv/bin/python tools/safety_everyday_set.py            # rewrite the generated rows, keep the hand-written
    .venv/bin/python tools/safety_everyday_set.py --check    # report what would change, write nothing

Rows (all labelled safe, no jailbreak), each with a `kind` and a `source`:
- `source: hand`: everyday prompts and assistant answers written by hand for this set (kinds `short`, `greeting`,
  `question`, `coding`, `math`, `writing`, `email`, `product`, `answer`). They live only in the JSONL file; this
  script keeps them as they are.
- `source: demo_data`: prompts and answers of the demo model's conversation generator (tools/demo_data.py, another
  author's generator, never used for safety training), including its polite refusals (`demo_refusal`): a refusal
  that names the harm it refuses must not be blocked either.
- `source: salad`: token salad, seeded: uniformly random Llama 3 token ids decoded (`salad`), and what a
  random-weight Llama-shaped model writes at temperature 1 (`salad_model`, the full text and its first streaming
  window of about 32 characters).

The safety training corpus drops every near copy of these texts (tools/train_safety_classifier.py passes them to
safety_corpus.generate as `exclude`), so the set stays disjoint from training data. The file is a snapshot: the demo
rows follow tools/demo_data.py's tables, which keep changing, so a rebuild changes them (`--check` counts how many).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import demo_data  # noqa: E402

EVERYDAY_SET = ROOT / "tests" / "platform" / "safety_everyday.jsonl"
TOKENIZER = ROOT / "src" / "llamafoundry" / "model" / "data" / "llama3-tokenizer.gguf"
DEMO_SEED = 20261125
SALAD_SEED = 4242
SALAD_LENGTHS = (1, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
NUM_SALAD = 80
NUM_MODEL_SALAD = 40
MODEL_PROMPTS = ("Hello!", "Say something.", "What is 2+2?", "Write a haiku about rain.", "Explain HTTP caching.")
SAFE = {"hate": "safe", "sexual": "safe", "violence": "safe", "self_harm": "safe", "jailbreak": False}


def row(text: str, role: str, kind: str, source: str) -> dict[str, object]:
    return {"text": text, "role": role, "kind": kind, **SAFE, "source": source}


def demo_rows(seed: int = DEMO_SEED, num_prompts: int = 70, num_answers: int = 40, num_refusals: int = 8) -> list[dict]:
    """Prompts of the benign intents, their answers, and refusals (answers of the `unsafe` intents)."""
    rng = random.Random(seed)
    pools = demo_data.build_pools()
    benign = [i for c in ("product", "facts", "chat", "unknown") for i in pools.by_category[c]] + list(pools.closers)
    source = f"demo_data seed={seed}"
    prompts: dict[str, None] = {}
    while len(prompts) < num_prompts:
        intent = rng.choice(benign)
        prompts[demo_data.vary_question(rng, rng.choice(intent.questions))] = None
    answers = {a: None for a in rng.sample(sorted({a for i in benign for a in i.answers}), num_answers)}
    refusals = sorted({a for i in pools.by_category["unsafe"] for a in i.answers})
    return (
        [row(t, "prompt", "demo_prompt", source) for t in prompts]
        + [row(t, "completion", "demo_answer", source) for t in answers]
        + [row(t, "completion", "demo_refusal", source) for t in rng.sample(refusals, min(num_refusals, len(refusals)))]
    )


def salad_rows(seed: int = SALAD_SEED, num: int = NUM_SALAD) -> list[dict]:
    """Uniformly random token ids (below the special tokens) of the Llama 3 vocabulary, decoded."""
    from llamafoundry.model.llamacpp import LlamaCppVocab

    vocab = LlamaCppVocab(TOKENIZER)
    rng = random.Random(seed)
    rows = []
    for i in range(num):
        ids = [rng.randrange(128000) for _ in range(rng.choice(SALAD_LENGTHS))]
        text = b"".join(vocab.token_bytes(t, special=False) for t in ids).decode("utf-8", errors="ignore")
        if text.strip():
            rows.append(row(text, "prompt" if i % 2 else "completion", "salad", f"llama3 token ids seed={seed}"))
    return rows


async def _random_model_texts(path: Path, num: int, seed: int) -> list[str]:
    from llamafoundry.config import EngineSettings
    from llamafoundry.engine.factory import build_local_engine
    from llamafoundry.engine.sampling_params import SamplingParams
    from llamafoundry.service.chat import ChatService
    from llamafoundry.service.types import ChatMessage, ChatRequest

    engine = build_local_engine(EngineSettings(model_path=path, ctx_size=512, parallel=8, threads=1), "tiny", "x")
    service = ChatService(engine, "tiny", "x", 512)
    await service.start()
    try:
        requests = [
            ChatRequest(
                [ChatMessage("user", MODEL_PROMPTS[i % len(MODEL_PROMPTS)])],
                SamplingParams(temperature=1.0, seed=seed + i, max_tokens=48),
            )
            for i in range(num)
        ]
        results = await asyncio.gather(*(service.complete(r) for r in requests))
    finally:
        await service.stop()
    return [r.choices[0].text for r in results]


def first_window(text: str, chars: int = 32) -> str:
    """The text a streaming check first sees: at least `chars` characters, up to the next space."""
    end = text.find(" ", chars)
    return text if end < 0 else text[:end]


def model_salad_rows(seed: int = SALAD_SEED, num: int = NUM_MODEL_SALAD) -> list[dict]:
    """What a random-weight model (tiny preset, real Llama 3 tokenizer, weights seed 0) writes at temperature 1."""
    from llamafoundry.model.gguf_builder import build_random_gguf

    with tempfile.TemporaryDirectory() as tmp:
        path = build_random_gguf(Path(tmp) / "tiny.gguf", preset="tiny", quant="F16", seed=0)
        texts = asyncio.run(_random_model_texts(path, num, seed))
    source = f"random-weight tiny model, sampling seeds {seed}..{seed + num - 1}"
    rows = []
    for text in texts:
        if text.strip():
            rows.append(row(text, "completion", "salad_model", source))
            if len(first_window(text)) < len(text):
                rows.append(row(first_window(text), "completion", "salad_model", source + " (first window)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=EVERYDAY_SET)
    parser.add_argument("--check", action="store_true", help="report, write nothing")
    args = parser.parse_args(argv)
    old = [json.loads(line) for line in args.out.read_text(encoding="utf-8").splitlines()] if args.out.exists() else []
    hand = [r for r in old if r.get("source") == "hand"]
    rows, seen = [], set()
    for r in hand + demo_rows() + salad_rows() + model_salad_rows():
        if r["text"] not in seen:
            seen.add(r["text"])
            rows.append(r)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    changed = len(set(lines) ^ {json.dumps(r, ensure_ascii=False) for r in old})
    print(f"{len(rows)} rows ({len(hand)} hand-written), {changed} lines differ from {args.out}")
    if not args.check:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
