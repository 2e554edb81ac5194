"""Hashed word and character n-gram features, shared by the built-in classifier and its training script.

A text becomes a sparse vector of `NUM_BUCKETS` signed buckets: word unigrams and bigrams, plus character
3-5-grams of each word padded with spaces (scikit-learn's `char_wb`). Each feature string is hashed with CRC-32
(stdlib, stable across processes and platforms, unlike `hash()`); the low bits pick the bucket and bit 31 the
sign, so colliding features tend to cancel instead of adding up. Values are `1 + log(count)`, L2-normalised.

The training script (tools/train_safety_classifier.py) calls `featurize` on every example, so the model is
trained on exactly what the runtime computes.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zlib
from array import array
from collections.abc import Sequence

import numpy as np

NUM_BUCKETS = 1 << 18
_MASK = NUM_BUCKETS - 1
_SIGN_BIT = 1 << 31
CHAR_NGRAMS = (3, 4, 5)
# Words up to this long have their buckets cached, as compact int32 arrays. A longer "word" (an id, a hash, junk) is
# rare in real text, and its buckets grow with its length: cached as Python ints, random words filled the cache
# to ~175 MiB under fuzzing, and one 800,000-character word pinned ~80 MiB (docs/benchmarks.md, memory soak).
MAX_CACHED_WORD = 32

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Common digit/symbol substitutions ("k1ll", "$uicide"), undone before tokenizing so they hash like the word.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_WORD = re.compile(r"\b(?=[a-z0-9@$]*[a-z])(?=[a-z@$]*[0-9@$])[a-z0-9@$]+\b")


def normalize(text: str) -> str:
    """Lower-case, fold accents and compatibility forms, and undo leetspeak inside words with letters."""
    if text.isascii():  # the same result without a Python loop over every character
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET), text)


def words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


def _bucket(feature: str) -> int:
    """Signed bucket: +(index + 1) or -(index + 1)."""
    h = zlib.crc32(feature.encode())
    index = (h & _MASK) + 1
    return -index if h & _SIGN_BIT else index


def _buckets_of(word: str) -> list[int]:
    """The unigram and character n-gram buckets of one word."""
    padded = f" {word} "
    out = [_bucket("w:" + word)]
    for n in CHAR_NGRAMS:
        if len(padded) < n:
            continue
        out.extend(_bucket("c:" + padded[i : i + n]) for i in range(len(padded) - n + 1))
    return out


@functools.lru_cache(maxsize=1 << 14)
def _word_buckets(word: str) -> Sequence[int]:
    """`_buckets_of(word)`, cached for words up to MAX_CACHED_WORD (vocabularies are small, texts repeat); at most
    ~10 MiB full."""
    return array("i", _buckets_of(word))


def word_buckets(word: str) -> Sequence[int]:
    return _word_buckets(word) if len(word) <= MAX_CACHED_WORD else _buckets_of(word)


def word_index(word: str) -> int:
    """The bucket index (0-based) of the unigram feature of a normalized word."""
    return abs(word_buckets(word)[0]) - 1


def signed_buckets(text: str) -> list[int]:
    """Every feature occurrence of `text` as a signed, 1-based bucket (see `_bucket`)."""
    tokens = words(text)
    out: list[int] = []
    for word in tokens:
        out.extend(word_buckets(word))
    out.extend(_bucket(f"b:{a} {b}") for a, b in zip(tokens, tokens[1:], strict=False))
    return out


def featurize(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The sparse feature vector of `text`.

    Returns:
        (indices, values): int64 bucket indices (unique, sorted) and float32 values, L2-normalised. Both are
        empty for a text without words.
    """
    signed = np.asarray(signed_buckets(text), dtype=np.int64)
    if signed.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    index = np.abs(signed) - 1
    sign = np.sign(signed).astype(np.float32)
    unique, inverse = np.unique(index, return_inverse=True)
    counts = np.zeros(unique.size, np.float32)
    np.add.at(counts, inverse, sign)
    magnitude = np.abs(counts)
    keep = magnitude > 0
    values = np.sign(counts[keep]) * (1.0 + np.log(magnitude[keep]))
    norm = float(np.linalg.norm(values))
    return unique[keep], (values / norm if norm > 0 else values).astype(np.float32)
