"""Per-check latency of the built-in content classifier (prints a markdown table; no plot: one number per row).

    .venv/bin/python bench/safety_classifier.py

Cold: a fresh model and empty feature caches, every text seen once (the cost of a new prompt). Warm: the same
texts again (a streaming completion re-checks text it has seen; chunks are cached). The classifier rows include the
hard rule (it runs inside the built-in classifier); the last row is the whole prompt check a serverless deployment
runs (`ChatSafety.check_prompt`: a 105-item blocklist, the hard rule, prompt shields, the classifier).
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import time
from pathlib import Path

from llamafoundry.safety import features, normalize, rules, shields
from llamafoundry.safety.base import Role, SafetyPolicy
from llamafoundry.safety.blocklists import Blocklist, BlocklistItem
from llamafoundry.safety.builtin import BuiltinClassifier, HashedLinearModel
from llamafoundry.safety.chat import ChatSafety, ContentFilteredError
from llamafoundry.safety.evaluation import load_labelled
from llamafoundry.service.types import ChatMessage

EVAL_SET = Path(__file__).resolve().parents[1] / "tests" / "platform" / "safety_eval.jsonl"
EVERYDAY_SET = EVAL_SET.with_name("safety_everyday.jsonl")  # ordinary traffic: few trigger words


def timed(classifier: BuiltinClassifier, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        start = time.perf_counter()
        classifier.analyze(text, Role.PROMPT)
        out.append((time.perf_counter() - start) * 1000)
    return out


def timed_layer(safety: ChatSafety, texts: list[str]) -> list[float]:
    """The whole prompt check of a serverless deployment: blocklists, hard rules, shields and the classifier."""
    out = []
    for text in texts:
        start = time.perf_counter()
        try:
            asyncio.run(safety.check_prompt([ChatMessage("user", text)]))
        except ContentFilteredError:
            pass
        out.append((time.perf_counter() - start) * 1000)
    return out


def clear_caches() -> None:
    features._word_buckets.cache_clear()
    rules.minors_severity.cache_clear()
    normalize.skeleton.cache_clear()
    for cached in (shields.is_prompt_attack, shields.is_document_attack, shields.decoded_texts):
        cached.cache_clear()


def row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.3f} | {p99:.3f} | {max(ms):.3f} |"


def main() -> None:
    texts = [r.text for r in load_labelled(EVAL_SET)]
    long_texts = [" ".join(texts[i : i + 12]) for i in range(0, len(texts) - 12, 12)]  # ~1,000 characters each
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| texts | checks | median ms | p99 ms | max ms |\n|---|---|---|---|---|")
    HashedLinearModel.load()  # page the weights in before timing
    everyday = [r.text for r in load_labelled(EVERYDAY_SET)]
    everyday_long = [" ".join(everyday[i : i + 14]) for i in range(0, len(everyday) - 14, 14)]
    batches = (("eval set, ~90 chars", texts), ("joined, ~1,100 chars", long_texts),
               ("everyday joined, ~1,000 chars", everyday_long))  # fmt: skip
    for name, batch in batches:
        clear_caches()
        classifier = BuiltinClassifier(HashedLinearModel.load())
        print(row(f"{name}, cold", timed(classifier, batch)))
        print(row(f"{name}, warm", timed(classifier, batch)))
    terms = tuple(BlocklistItem(f"forbiddenterm{i}") for i in range(100))
    regexes = tuple(BlocklistItem(rf"code-{i}\d{{4}}", is_regex=True) for i in range(5))
    policy = SafetyPolicy(blocklists=(Blocklist("bench", terms + regexes),))
    clear_caches()
    safety = ChatSafety(BuiltinClassifier(HashedLinearModel.load()), policy)
    print(row("joined, ~1,100 chars: the whole prompt check (105-item blocklist, shields), cold",
              timed_layer(safety, long_texts)))  # fmt: skip


if __name__ == "__main__":
    main()
