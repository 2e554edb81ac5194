"""What prompt-lookup speculative decoding saves on real text: known answers replayed through the engine's own
`NgramDrafter`, each step priced with llama_decode costs measured on this machine.

Whether a draft is kept depends only on the prompt and on the answer the model gives: the engine keeps a draft
up to the first token that differs from what the sampler chooses. Replaying a fixed answer (as if it were the
model's greedy output) therefore gives exactly the steps the engine would take, drafts and back-offs included,
without a model that writes that answer. Random-weight models (the benchmark GGUFs) never repeat themselves, and
the demo model does not copy, so this is how the gain is measured here; the answers are real text from this
repository, tokenized with the model's own tokenizer:

- prose: a docs section written as the answer to a question about it (nothing to copy but the language's own
  repeats: the case where drafting must cost nothing);
- code edit: a source file in the prompt, the same file with one identifier renamed as the answer;
- quote: a docs section in the prompt, some of its sentences quoted back as the answer.

    llamafoundry bench speculative --model /tmp/bench-1b-q4km.gguf --threads 1

A step of one sequence with d drafted tokens is a pass of 1 + d tokens; its cost is measured as such (a prompt
chunk of 1 + d tokens with logits on every row, after `--context` cached tokens), the fastest of `--repeats`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.batch_shapes import fill_context, step_cost
from bench.raw_decode import open_runner
from llamafoundry.config import EngineSettings
from llamafoundry.engine.speculative import NgramDrafter
from llamafoundry.model.llamacpp import LlamaCppRunner

REPO = Path(__file__).resolve().parents[1]
MAX_DRAFT = EngineSettings.speculative_tokens  # what `serve` drafts by default


@dataclass
class Case:
    workload: str
    name: str
    prompt: str
    answer: str


@dataclass
class Replay:
    num_tokens: int
    pass_sizes: list[int]  # tokens in each step's pass (1 + drafted)
    num_drafted: int
    num_accepted: int


def replay(prompt_ids: list[int], answer_ids: list[int], drafter: NgramDrafter | None = None) -> Replay:
    """The steps the engine takes to write `answer_ids` after `prompt_ids` with drafting on (one sequence), with
    the engine's own drafter unless another is given."""
    drafter = drafter or NgramDrafter(MAX_DRAFT)
    output = [answer_ids[0]]  # the first token comes from the prompt's own pass
    sizes: list[int] = []
    drafted = accepted = 0
    while len(output) < len(answer_ids):
        draft = drafter.propose(prompt_ids, output, len(answer_ids) - len(output) - 1)
        truth = answer_ids[len(output) : len(output) + len(draft) + 1]
        kept = next((i for i, (d, t) in enumerate(zip(draft, truth, strict=False)) if d != t), len(draft))
        if draft:
            drafter.record(len(draft), kept)
        sizes.append(1 + len(draft))
        drafted, accepted = drafted + len(draft), accepted + kept
        output += truth[: kept + 1]
    return Replay(len(answer_ids), sizes, drafted, accepted)


def pass_costs(runner: LlamaCppRunner, sizes: set[int], context: int, repeats: int) -> dict[int, float]:
    """Seconds of one pass of n tokens of one sequence (logits on every row) after `context` cached tokens."""
    fill_context(runner, 1, context)
    costs = {}
    for size in sorted(sizes):
        costs[size] = step_cost(runner, 0, size, context, repeats, all_logits=True)
        print(f"pass of {size:2d} tokens: {costs[size] * 1000:6.1f} ms", flush=True)
    return costs


# ---- real text from this repository --------------------------------------------------------------


def _sections(path: Path) -> list[tuple[str, str]]:
    """(heading, body) of each `## ` section of a markdown file."""
    parts = re.split(r"^## (.+)$", path.read_text(), flags=re.M)
    return [(parts[i].strip(), parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def _chat(user: str) -> str:
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def build_cases() -> list[Case]:
    cases = []
    for doc in ("architecture.md", "platform.md"):
        for heading, body in _sections(REPO / "docs" / doc)[:3]:
            cases.append(Case("prose", f"{doc}: {heading}", _chat(f"Explain {heading.lower()} in llamafoundry."), body))
    for rel, old, new in (
        ("src/llamafoundry/engine/detokenizer.py", "pending", "held_back"),
        ("src/llamafoundry/engine/sequence.py", "request", "job"),
        ("src/llamafoundry/engine/client.py", "request", "call"),
    ):
        code = (REPO / rel).read_text()
        prompt = _chat(f"Rename `{old}` to `{new}` in this file and show the whole file:\n\n```python\n{code}```")
        cases.append(Case("code edit", f"{rel}: {old} -> {new}", prompt, f"```python\n{code.replace(old, new)}```"))
    for heading, body in _sections(REPO / "docs" / "safety.md")[:3]:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", body) if len(s) > 40][::2][:4]
        prompt = _chat(f"{body}\n\nQuote, word for word, the sentences of this text that matter most.")
        cases.append(Case("quote", f"safety.md: {heading}", prompt, "\n".join(f"> {s}" for s in sentences)))
    return cases


# ---- report --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    runner = open_runner(args.model, 1, args.context + MAX_DRAFT + 8, args.threads, 512, None)
    try:
        cases = build_cases()
        replays = []
        for case in cases:
            prompt_ids = runner.tokenize(case.prompt, add_bos=False, parse_special=True)
            answer_ids = runner.tokenize(case.answer, add_bos=False, parse_special=False)
            drafter = NgramDrafter(MAX_DRAFT, ngram=args.ngram)
            replays.append(replay(prompt_ids, answer_ids, drafter))
        costs = pass_costs(runner, {1} | {s for r in replays for s in r.pass_sizes}, args.context, args.repeats)
    finally:
        runner.close()
    print(f"\n{args.model.name}, {args.threads} thread(s), context {args.context}; one sequence, drafts of up to "
          f"{MAX_DRAFT} tokens from matches of {args.ngram} tokens\n")  # fmt: skip
    print("| workload | answer | tokens | steps (plain / drafting) | drafted / kept | decode time plain / drafting "
          "| speed-up |\n|---|---|---|---|---|---|---|")  # fmt: skip
    totals: dict[str, list[float]] = {}
    for case, r in zip(cases, replays, strict=True):
        plain = (r.num_tokens - 1) * costs[1]
        drafting = sum(costs[s] for s in r.pass_sizes)
        sums = totals.setdefault(case.workload, [0.0, 0.0])
        sums[0] += plain
        sums[1] += drafting
        print(
            f"| {case.workload} | {case.name} | {r.num_tokens} | {r.num_tokens - 1} / {len(r.pass_sizes)} | "
            f"{r.num_drafted} / {r.num_accepted} | {plain:.2f} s / {drafting:.2f} s | {plain / drafting:.2f}x |"
        )
    print("\n| workload | speed-up over its answers |\n|---|---|")
    for workload, (plain, drafting) in totals.items():
        print(f"| {workload} | {plain / drafting:.2f}x |")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="a GGUF with the Llama 3 tokenizer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context", type=int, default=500, help="cached tokens before each priced pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ngram", type=int, default=NgramDrafter(MAX_DRAFT).ngram, help="match length that drafts")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
