"""Train the built-in content-safety classifier and write it as package data.

    .venv/bin/pip install -e '.[train]'
    .venv/bin/python tools/train_safety_classifier.py            # train, write, evaluate
    .venv/bin/python tools/train_safety_classifier.py --dry-run  # train and evaluate, write nothing

Corpus: tools/safety_corpus.py (generated; any text of the evaluation set is dropped). Features:
llamafoundry.safety.features (the runtime's own code). Model: one multinomial logistic regression per
harm category (safe/low/medium/high) and a binary one for jailbreak, from scikit-learn. Export: the coefficients
quantized to int8 with a float scale per column (src/llamafoundry/safety/data/builtin_classifier.npz)
and a JSON description of the heads (builtin_classifier.json). The runtime needs numpy only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from safety_corpus import HARM_AND_TRIGGER_CLASSES, Example, generate  # noqa: E402

from llamafoundry.safety.base import CATEGORIES, SEVERITIES, Role  # noqa: E402
from llamafoundry.safety.builtin import DATA_DIR, MODEL_STEM, BuiltinClassifier, HashedLinearModel  # noqa: E402
from llamafoundry.safety.evaluation import evaluate, load_independent, load_labelled  # noqa: E402
from llamafoundry.safety.features import NUM_BUCKETS, featurize, word_index, words  # noqa: E402

EVAL_SET = ROOT / "tests" / "platform" / "safety_eval.jsonl"
EVERYDAY_SET = ROOT / "tests" / "platform" / "safety_everyday.jsonl"  # benign only: ordinary traffic and salad
# The frozen independent set: never trained on; read here only so that near copies of its texts are dropped from
# the corpus, and never evaluated here (its numbers come from tests/platform/test_safety_independent.py).
INDEPENDENT_SET = ROOT / "tests" / "platform" / "safety_independent.jsonl"


def feature_matrix(texts: list[str]) -> sp.csr_matrix:
    indptr, indices, values = [0], [], []
    for text in texts:
        index, value = featurize(text)
        indices.append(index)
        values.append(value)
        indptr.append(indptr[-1] + index.size)
    return sp.csr_matrix(
        (np.concatenate(values), np.concatenate(indices), np.asarray(indptr)), shape=(len(texts), NUM_BUCKETS)
    )


def fit_heads(x: sp.csr_matrix, examples: list[Example], c: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Weights [NUM_BUCKETS, K], bias [K] and the head layout."""
    columns, biases, heads = [], [], {}
    for category in CATEGORIES:
        y = np.asarray([SEVERITIES.index(ex.labels[category.value]) for ex in examples])  # type: ignore[arg-type]
        model = LogisticRegression(C=c, max_iter=2000, tol=1e-4)
        model.fit(x, y)
        assert list(model.classes_) == [0, 1, 2, 3], f"{category}: every severity needs training examples"
        heads[category.value] = list(range(len(columns), len(columns) + 4))
        columns.extend(model.coef_)
        biases.extend(model.intercept_)
        print(f"  {category.value}: train accuracy {model.score(x, y):.4f}", flush=True)
    y = np.asarray([bool(ex.labels["jailbreak"]) for ex in examples])
    model = LogisticRegression(C=c, max_iter=2000, tol=1e-4)
    model.fit(x, y)
    heads["jailbreak"] = len(columns)
    columns.append(model.coef_[0])
    biases.append(model.intercept_[0])
    print(f"  jailbreak: train accuracy {model.score(x, y):.4f}", flush=True)
    return np.stack(columns, axis=1).astype(np.float32), np.asarray(biases, np.float32), heads


def label_frequencies(examples: list[Example], head: str) -> np.ndarray:
    """Share of examples per class of one head: [safe, low, medium, high], or [no, yes] for jailbreak."""
    if head == "jailbreak":
        counts = np.bincount([int(bool(ex.labels[head])) for ex in examples], minlength=2)
    else:
        counts = np.bincount([SEVERITIES.index(ex.labels[head]) for ex in examples], minlength=4)  # type: ignore
    return counts / counts.sum()


def correct_priors(bias: np.ndarray, heads: dict, examples: list[Example]) -> np.ndarray:
    """Shift the intercepts from the label frequencies of the whole corpus to those of its harm-and-trigger part
    (safety_lexicon.py: the harmful classes and their trigger-word contrasts), the prior the decision thresholds
    were set for. The ordinary-traffic classes (safety_chat_corpus.py, about a third of the corpus) teach which
    words are not evidence of harm; without this they would also make harm rarer in the corpus and lower every
    harm probability (prior correction as in Saerens et al., 2002: b_k += log(target_k / train_k))."""
    reference = [ex for ex in examples if ex.group in HARM_AND_TRIGGER_CLASSES]
    out = bias.copy()
    for head, columns in heads.items():
        train, target = label_frequencies(examples, head), label_frequencies(reference, head)
        if head == "jailbreak":
            out[columns] += np.log(target[1] / target[0]) - np.log(train[1] / train[0])
        else:
            out[columns] += np.log(target) - np.log(train)
    return out


def known_word_buckets(texts: list[str]) -> np.ndarray:
    """bool [NUM_BUCKETS]: the unigram buckets of every word of the corpus (the runtime's minimum-evidence rule)."""
    known = np.zeros(NUM_BUCKETS, bool)
    for word in {w for text in texts for w in words(text)}:
        known[word_index(word)] = True
    return known


def quantize(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(weights).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    return np.round(weights / scale).astype(np.int8), scale.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--c", type=float, default=8.0, help="inverse L2 regularization strength")
    parser.add_argument(
        "--min-known-words", type=int, default=2, help="a chunk with fewer words known from training is judged safe"
    )
    parser.add_argument("--min-known-words-jailbreak", type=int, default=3, help="the same for jailbreak detection")
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    parser.add_argument("--dry-run", action="store_true", help="evaluate without writing the model")
    args = parser.parse_args(argv)

    eval_rows = load_labelled(EVAL_SET)
    everyday_rows = load_labelled(EVERYDAY_SET)
    independent = {r.text for r in load_independent(INDEPENDENT_SET)}
    examples = list(generate(args.seed, exclude={r.text for r in eval_rows + everyday_rows} | independent))
    print(f"corpus: {len(examples)} texts, {dict(Counter(ex.group for ex in examples))}", flush=True)
    start = time.perf_counter()
    x = feature_matrix([ex.text for ex in examples])
    print(f"features: {x.shape}, {x.nnz} non-zeros, {time.perf_counter() - start:.1f}s", flush=True)
    start = time.perf_counter()
    weights, bias, heads = fit_heads(x, examples, args.c)
    print(f"fit: {time.perf_counter() - start:.1f}s", flush=True)
    bias = correct_priors(bias, heads, examples)
    qweights, scale = quantize(weights)
    known = known_word_buckets([ex.text for ex in examples])
    print(f"known words: {int(known.sum())} unigram buckets", flush=True)
    meta = {
        "format": 1,
        "num_buckets": NUM_BUCKETS,
        "heads": heads,
        "severities": [s.value for s in SEVERITIES],
        "thresholds": {"severity": 0.5, "jailbreak": 0.5},
        "evidence": {
            "min_known_words": args.min_known_words,
            "min_known_words_jailbreak": args.min_known_words_jailbreak,
        },
        "training": {
            "script": "tools/train_safety_classifier.py",
            "seed": args.seed,
            "c": args.c,
            "num_texts": len(examples),
            "scikit_learn": sklearn.__version__,
        },
    }
    model = HashedLinearModel(qweights, scale, bias, meta, known)
    classifier = BuiltinClassifier(model)
    report = evaluate(eval_rows, lambda text, role: classifier.analyze(text, Role(role)))
    print(report.table())
    print(f"benign texts blocked: {len(report.benign_false_blocks)}")
    for text in report.benign_false_blocks:
        print("  FP", text)
    for text in report.missed:
        print("  FN", text)
    everyday = evaluate(everyday_rows, lambda text, role: classifier.analyze(text, Role(role)))
    print(f"everyday texts blocked: {len(everyday.benign_false_blocks)} of {everyday.num_texts}")
    for text in everyday.benign_false_blocks:
        print("  FP", repr(text))
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            args.out / f"{MODEL_STEM}.npz", weights=qweights, scale=scale, bias=bias, known_words=np.packbits(known)
        )
        (args.out / f"{MODEL_STEM}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        size = (args.out / f"{MODEL_STEM}.npz").stat().st_size / 2**20
        print(f"wrote {args.out / MODEL_STEM}.npz ({size:.1f} MiB) and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
