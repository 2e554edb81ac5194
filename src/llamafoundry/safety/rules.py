"""Hard rules: sexual content involving minors is `sexual: high` at any phrasing the term lists know, in prompts and
completions, whatever the classifier beside them says.

Rules are right here because the line is absolute (every provider and the law draw it), the vocabulary is small
and enumerable in each language, and a statistical model trained on generated text misses paraphrases,
misspellings and languages it never saw. The term lists live in `minors_terms.py`; text is matched in its
`normalize.skeleton` form, so case, accents, full-width forms, homoglyphs, leetspeak, letters spelt out one by one
and stretched letters do not hide a term.

Decision, per sentence with its neighbours (so "She is 12. Write a sex story about her." is one context):
- a DIRECT term (for example "child porn" in any of the eight languages) or a MINOR reference within about 15
  words (`MAX_PAIR_CHARS`) of a SEXUAL one makes a candidate;
- a candidate with a PRODUCE cue (write, describe, story, pictures, links, where can I find, so I can, here is
  ...) is `high`; without one, a PROTECT cue (report, protect, warning signs, talk to, doctor, education ...)
  makes it `low` (annotated, never blocked at Azure's thresholds: a parent asking how to talk about body safety
  is not sexual content); with neither it is `high`.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llamafoundry.safety import minors_terms as terms
from llamafoundry.safety.base import CATEGORIES, Category, Severity, Verdict
from llamafoundry.safety.normalize import skeleton, squeeze

_SENTENCE_END = re.compile(r"[.!?;\n。।]+|(?<=:)\s")
_CACHE_SIZE = 4096
MAX_PAIR_CHARS = 100  # a minor and a sexual term this close (about 15 words) are read together


def _compile(patterns: Sequence[str], scripts: Sequence[str]) -> re.Pattern[str]:
    latin = "|".join(f"(?:{p})" for p in patterns)
    other = "|".join(re.escape(s) for s in scripts)
    body = rf"(?<![^\W_])(?:{latin})(?![^\W_])"
    return re.compile(f"{body}|{other}" if other else body)


@dataclass(frozen=True)
class _Lexicon:
    direct: re.Pattern[str]
    minor: re.Pattern[str]
    sexual: re.Pattern[str]
    produce: re.Pattern[str]
    protect: re.Pattern[str]


@functools.lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    return _Lexicon(
        direct=_compile(terms.DIRECT, terms.DIRECT_SCRIPT),
        minor=_compile(terms.MINOR, terms.MINOR_SCRIPT),
        sexual=_compile(terms.SEXUAL, terms.SEXUAL_SCRIPT),
        produce=_compile(terms.PRODUCE, terms.PRODUCE_SCRIPT),
        protect=_compile(terms.PROTECT, terms.PROTECT_SCRIPT),
    )


def _sentence_of(text: str) -> tuple[list[int], int]:
    """Start offsets of the sentences of `text` (for bisect), and how many there are."""
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
    return starts, len(starts)


def _hit_sentences(pattern: re.Pattern[str], text: str, starts: list[int]) -> set[int]:
    return {bisect.bisect_right(starts, m.start()) - 1 for m in pattern.finditer(text)}


def _near_pairs(a: re.Pattern[str], b: re.Pattern[str], text: str, starts: list[int]) -> set[int]:
    """Sentences holding a match of `a` within `MAX_PAIR_CHARS` of a match of `b` (either side)."""
    first = [m.start() for m in a.finditer(text)]
    second = [m.start() for m in b.finditer(text)] if first else []
    out: set[int] = set()
    for x in first:
        for y in second:
            if abs(x - y) <= MAX_PAIR_CHARS:
                out.update(bisect.bisect_right(starts, p) - 1 for p in (x, y))
    return out


@functools.lru_cache(maxsize=_CACHE_SIZE)
def minors_severity(text: str) -> Severity:
    """The severity the rule gives `text`: `high`, `low` (a protective mention) or `safe`."""
    form = skeleton(text)
    severity, has_sexual = _severity_of_form(form)
    if severity != Severity.HIGH and has_sexual:  # "littlle girl": a minor word may only show with letters squeezed
        squeezed = squeeze(form)
        if squeezed != form:
            severity = max(severity, _severity_of_form(squeezed)[0])
    return severity


def _severity_of_form(text: str) -> tuple[Severity, bool]:
    """The rule's severity for a matching form, and whether it has a sexual term at all. Cheapest scans first:
    most text has neither a direct term nor a sexual one, and is done after two scans."""
    lex = _lexicon()
    has_sexual = lex.sexual.search(text) is not None
    if not has_sexual and lex.direct.search(text) is None:
        return Severity.SAFE, False
    starts, _ = _sentence_of(text)
    direct = _hit_sentences(lex.direct, text, starts)
    candidates = direct | (_near_pairs(lex.sexual, lex.minor, text, starts) if has_sexual else set())
    if not candidates:
        return Severity.SAFE, has_sexual
    produce = _hit_sentences(lex.produce, text, starts)
    protect = _hit_sentences(lex.protect, text, starts)
    worst = Severity.SAFE
    for i in sorted(candidates):
        around = {i - 1, i, i + 1}
        if around & produce or not around & protect:
            return Severity.HIGH, has_sexual
        worst = Severity.LOW
    return worst, has_sexual


def rules_verdict(texts: Sequence[str]) -> Verdict:
    """The hard rules' verdict over some texts: the sexual category at the worst severity found; the rest safe."""
    severity = max((minors_severity(t) for t in texts if t), default=Severity.SAFE)
    return Verdict({c: (severity if c == Category.SEXUAL else Severity.SAFE) for c in CATEGORIES})
