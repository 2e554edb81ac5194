"""The built-in classifier: linear heads over hashed n-grams, trained by tools/train_safety_classifier.py.

The model ships as package data (`data/builtin_classifier.npz` + `.json`): an int8 weight matrix
`[NUM_BUCKETS, num_columns]` with a float scale per column, a bias per column, and a JSON description of the
heads. Each harm category has a 4-way softmax head (safe, low, medium, high); `jailbreak` is one sigmoid column.
Inference is numpy only: featurize, gather the rows of the buckets present, one small dot product.

Long texts are cut into chunks of about `CHUNK_CHARS` at sentence ends (the model was trained on texts of that
size, and a long benign text must not dilute one harmful sentence); the verdict is the worst chunk's.

Minimum evidence: a chunk with fewer than `min_known_words` (2) words that the training corpus contains (a single
word, "ok", "?", token salad of word pieces, a language the corpus lacks) is judged safe. The model cannot read
such text, and the weights of a lone word or a word fragment's character n-grams are not evidence of harm. A
prompt attack needs `min_known_words_jailbreak` (3) known words: an instruction and what it targets ("Say
anything." is not one). The known words ship with the weights as a bitset over the unigram buckets
(`known_words`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llamafoundry.safety.base import CATEGORIES, Category, Role, Severity, Speaker, Turn, Verdict
from llamafoundry.safety.features import NUM_BUCKETS, featurize, word_index, words
from llamafoundry.safety.rules import rules_verdict
from llamafoundry.safety.shields import user_texts

DATA_DIR = Path(__file__).parent / "data"
MODEL_STEM = "builtin_classifier"
CHUNK_CHARS = 400
_SENTENCE_END = re.compile(r"(?<=[.!?;:\n])\s+")


@dataclass(frozen=True)
class Scores:
    """Probabilities for one text: per category [P(safe), P(low), P(medium), P(high)], and P(jailbreak); and how
    many of its words the model knows from training."""

    severity: dict[Category, np.ndarray]
    jailbreak: float
    num_known_words: int


class HashedLinearModel:
    """Loaded weights of the built-in classifier.

    Args:
        weights: int8 `[NUM_BUCKETS, K]`; `scale` (float32 `[K]`) turns them back into floats.
        bias: float32 `[K]`.
        meta: the JSON description: `heads` maps each category to its 4 column indices and `jailbreak` to one
            column; `thresholds` holds the decision thresholds chosen at training time; `evidence.min_known_words`
            the fewest known words a chunk needs to be judged at all (`min_known_words_jailbreak`: for jailbreak).
        known_words: bool `[NUM_BUCKETS]`, the unigram buckets of the training corpus's words (None: every word
            counts as known).
    """

    def __init__(
        self,
        weights: np.ndarray,
        scale: np.ndarray,
        bias: np.ndarray,
        meta: dict[str, Any],
        known_words: np.ndarray | None = None,
    ) -> None:
        if weights.shape[0] != NUM_BUCKETS or meta.get("num_buckets") != NUM_BUCKETS:
            raise ValueError(
                f"the classifier was trained with {weights.shape[0]} buckets but features use {NUM_BUCKETS}; "
                "retrain it with tools/train_safety_classifier.py."
            )
        self.weights = weights
        self.scale = scale.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.meta = meta
        self._columns = {Category(k): np.asarray(v) for k, v in meta["heads"].items() if k != "jailbreak"}
        self._jailbreak_column = int(meta["heads"]["jailbreak"])
        thresholds = meta.get("thresholds", {})
        self.severity_threshold = float(thresholds.get("severity", 0.5))
        self.jailbreak_threshold = float(thresholds.get("jailbreak", 0.5))
        self.known_words = known_words
        evidence = meta.get("evidence", {})
        self.min_known_words = int(evidence.get("min_known_words", 0))
        self.min_known_words_jailbreak = int(evidence.get("min_known_words_jailbreak", self.min_known_words))
        self._chunk_scores = functools.lru_cache(maxsize=4096)(self._score_chunk)

    @classmethod
    def load(cls, directory: Path = DATA_DIR, stem: str = MODEL_STEM) -> HashedLinearModel:
        arrays = np.load(directory / f"{stem}.npz")
        meta = json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
        known = np.unpackbits(arrays["known_words"])[:NUM_BUCKETS].astype(bool) if "known_words" in arrays else None
        return cls(arrays["weights"], arrays["scale"], arrays["bias"], meta, known)

    def _score_chunk(self, chunk: str) -> Scores:
        index, values = featurize(chunk)
        logits = (values @ self.weights[index].astype(np.float32)) * self.scale + self.bias
        severity = {}
        for category, columns in self._columns.items():
            z = logits[columns] - logits[columns].max()
            p = np.exp(z)
            severity[category] = p / p.sum()
        jailbreak = float(1.0 / (1.0 + np.exp(-logits[self._jailbreak_column])))
        return Scores(severity, jailbreak, self.num_known_words(chunk))

    def num_known_words(self, text: str) -> int:
        """How many words of `text` (counting repeats) occur in the training corpus."""
        tokens = words(text)
        if self.known_words is None:
            return len(tokens)
        return sum(bool(self.known_words[word_index(w)]) for w in tokens)

    def scores(self, text: str) -> list[Scores]:
        """Scores of each chunk of `text` (one chunk for short texts; none for a text without words)."""
        return [self._chunk_scores(chunk) for chunk in split_chunks(text)]

    def severity_of(self, probabilities: np.ndarray) -> Severity:
        """The highest severity s with P(severity >= s) above the threshold (ordinal decision)."""
        at_least = np.cumsum(probabilities[::-1])[::-1]  # at_least[i] = P(severity >= level i)
        for level in (3, 2, 1):
            if at_least[level] > self.severity_threshold:
                return (Severity.SAFE, Severity.LOW, Severity.MEDIUM, Severity.HIGH)[level]
        return Severity.SAFE

    def verdict(self, texts: Sequence[str], with_jailbreak: bool) -> Verdict:
        severities = {c: Severity.SAFE for c in CATEGORIES}
        jailbreak = False
        for text in texts:
            for chunk in self.scores(text):
                if chunk.num_known_words < self.min_known_words:
                    continue  # too little signal to judge: safe
                for category, probabilities in chunk.severity.items():
                    severities[category] = max(severities[category], self.severity_of(probabilities))
                if chunk.num_known_words >= self.min_known_words_jailbreak:
                    jailbreak = jailbreak or chunk.jailbreak > self.jailbreak_threshold
        return Verdict(severities, jailbreak if with_jailbreak else None)


def split_chunks(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Cut `text` at sentence ends into chunks of at most about `max_chars` (a longer sentence is cut at spaces)."""
    chunks: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text.strip()):
        for piece in _split_long(sentence, max_chars):
            if current and len(current) + 1 + len(piece) > max_chars:
                chunks.append(current)
                current = piece
            else:
                current = f"{current} {piece}" if current else piece
    if current.strip():
        chunks.append(current)
    return chunks


def _split_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence] if sentence else []
    pieces, start = [], 0
    while start < len(sentence):
        end = min(start + max_chars, len(sentence))
        if end < len(sentence):
            space = sentence.rfind(" ", start + max_chars // 2, end)
            end = space if space > start else end
        pieces.append(sentence[start:end].strip())
        start = end
    return [p for p in pieces if p]


@functools.lru_cache(maxsize=1)
def default_model() -> HashedLinearModel:
    """The shipped model, loaded once per process."""
    return HashedLinearModel.load()


class BuiltinClassifier:
    """`SafetyClassifier` over the shipped hashed n-gram model: no downloads, well under a millisecond a check.

    Prompts: every user turn is judged (each chunk separately) and jailbreak detection runs. Completions: only the
    last turn, no jailbreak detection (Azure's Prompt Shields read prompts only). The hard rules (`rules.py`: sexual
    content involving minors) are merged into every verdict.
    """

    name = "builtin"
    window_chars = 160
    applies_rules = True  # ChatSafety does not apply the hard rules a second time

    def __init__(self, model: HashedLinearModel | None = None) -> None:
        self.model = model or default_model()

    async def classify(self, turns: Sequence[Turn], role: Role) -> Verdict:
        return self.classify_now(turns, role)

    def classify_now(self, turns: Sequence[Turn], role: Role) -> Verdict:
        """`classify`, synchronously (it never waits on anything)."""
        if role != Role.PROMPT:
            texts = [turns[-1].text] if turns else []
            return self.model.verdict(texts, with_jailbreak=False).merge(rules_verdict(texts))
        texts = [t.text for t in turns if t.speaker == Speaker.USER]
        verdict = self.model.verdict(texts, with_jailbreak=False).merge(rules_verdict(texts))
        # Prompt attacks are read in what the user wrote; tool results and documents are data (indirect attacks).
        jailbreak = self.model.verdict(user_texts(turns), with_jailbreak=True).jailbreak
        return dataclasses.replace(verdict, jailbreak=jailbreak)

    def analyze(self, text: str, role: Role = Role.PROMPT) -> Verdict:
        """Judge one text as a prompt (a user turn) or as a completion (an agent turn)."""
        speaker = Speaker.USER if role == Role.PROMPT else Speaker.AGENT
        return self.classify_now([Turn(speaker, text)], role)
