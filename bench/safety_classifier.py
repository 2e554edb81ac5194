"""Per-check latency of the built-in content classifier (prints a markdown table; no plot: one number per row).

    .venv/bin/python bench/safety_classifier.py

Cold: a fresh model and empty feature caches, every text seen once (the cost of a new prompt). Warm: the same
texts again (a streaming completion re-checks text it has seen; chunks are cached).
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

from llamafoundry.platform.safety import features
from llamafoundry.platform.safety.base import Role
from llamafoundry.platform.safety.builtin import BuiltinClassifier, HashedLinearModel
from llamafoundry.platform.safety.evaluation import load_labelled

EVAL_SET = Path(__file__).resolve().parents[1] / "tests" / "platform" / "safety_eval.jsonl"


def timed(classifier: BuiltinClassifier, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        start = time.perf_counter()
        classifier.analyze(text, Role.PROMPT)
        out.append((time.perf_counter() - start) * 1000)
    return out


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
    for name, batch in (("eval set, ~90 chars", texts), ("joined, ~1,100 chars", long_texts)):
        features._word_buckets.cache_clear()
        classifier = BuiltinClassifier(HashedLinearModel.load())
        print(row(f"{name}, cold", timed(classifier, batch)))
        print(row(f"{name}, warm", timed(classifier, batch)))


if __name__ == "__main__":
    main()
