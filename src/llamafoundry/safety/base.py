"""The content-safety seam: what a classifier returns, and the policy that turns it into Azure's annotations.

A classifier (the built-in hashed n-gram model, Llama Guard 3 through an engine, an external service later) reads a
conversation and returns a `Verdict`: a severity per harm category and, for prompts, whether a jailbreak attempt
was detected. A `SafetyPolicy` (one per deployment) decides which of those block and renders Azure's
`content_filter_results` dicts. Nothing here knows about HTTP.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llamafoundry.safety.blocklists import Blocklist


class Category(enum.StrEnum):
    """Azure's four harm categories; values are the annotation keys."""

    HATE = "hate"
    SEXUAL = "sexual"
    VIOLENCE = "violence"
    SELF_HARM = "self_harm"


CATEGORIES: tuple[Category, ...] = tuple(Category)


class Severity(enum.StrEnum):
    """Azure's four-level severity. Ordered: `Severity.LOW < Severity.HIGH`."""

    SAFE = "safe"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_SEVERITY_RANK = {Severity.SAFE: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3}
SEVERITIES: tuple[Severity, ...] = tuple(Severity)


class Role(enum.StrEnum):
    """What is being checked: the request's prompt (before generation) or a completion (while generating)."""

    PROMPT = "prompt"
    COMPLETION = "completion"


class Speaker(enum.StrEnum):
    """Who wrote a turn, in Llama Guard's terms (system and tool text count as `user`: the caller sent it)."""

    USER = "user"
    AGENT = "agent"


@dataclass(frozen=True)
class Turn:
    """One message's text. `source` is the chat role it came from ("system", "user", "tool", "assistant"; empty
    when unknown): prompt shields read tool results as documents, not as the user's words."""

    speaker: Speaker
    text: str
    source: str = ""


@dataclass(frozen=True)
class Verdict:
    """What a classifier found.

    Attributes:
        severities: one severity per category (all four present; `safe` when the classifier saw nothing).
        jailbreak: whether a prompt attack was detected; None when not assessed (completions, or a classifier
            without jailbreak detection).
        details: classifier-specific extras that are reported but never block, e.g. `{"llama_guard": {...}}`.
        indirect_attack: whether instructions aimed at the model were found in documents or tool results; None
            when not assessed (no documents, or a completion).
        blocklists: the ids of the custom blocklists that matched.
    """

    severities: Mapping[Category, Severity]
    jailbreak: bool | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    indirect_attack: bool | None = None
    blocklists: tuple[str, ...] = ()

    def severity(self, category: Category) -> Severity:
        return self.severities.get(category, Severity.SAFE)

    @staticmethod
    def safe() -> Verdict:
        return Verdict({c: Severity.SAFE for c in CATEGORIES})

    def merge(self, other: Verdict) -> Verdict:
        """The worse of two verdicts, category by category (used across windows and across classifiers)."""
        severities = {c: max(self.severity(c), other.severity(c)) for c in CATEGORIES}
        lists = self.blocklists + tuple(b for b in other.blocklists if b not in self.blocklists)
        return Verdict(
            severities,
            _either(self.jailbreak, other.jailbreak),
            {**self.details, **other.details},
            _either(self.indirect_attack, other.indirect_attack),
            lists,
        )


def _either(a: bool | None, b: bool | None) -> bool | None:
    return None if a is None and b is None else bool(a) or bool(b)


class SafetyClassifier(Protocol):
    """Reads a conversation and judges either its prompt or its last completion.

    `classify(turns, Role.PROMPT)` judges what the caller sent: every `user` turn for classifiers that read turns
    separately, the last `user` turn in its context for Llama Guard. `classify(turns, Role.COMPLETION)` judges the
    last turn, an `agent` turn holding the completion text so far. It is awaited once per prompt and once per
    streaming window, so it must be cheap or say so through `window_chars` (the completion text it prefers to see
    between checks). Classifiers never raise for unsafe content; they raise only when they cannot judge
    (`ClassifierError`), and the caller's policy decides whether that blocks.
    """

    name: str
    window_chars: int

    async def classify(self, turns: Sequence[Turn], role: Role) -> Verdict: ...


class ClassifierError(Exception):
    """A classifier could not produce a verdict (its engine failed, or its output could not be parsed)."""


DEFAULT_THRESHOLD = Severity.MEDIUM
STREAMING_MODES = ("default", "asynchronous")  # Azure's "Default" and "Asynchronous Filter" streaming modes


@dataclass(frozen=True)
class SafetyPolicy:
    """One deployment's content filter configuration (Azure's defaults: medium threshold, jailbreak on).

    Attributes:
        enabled: whether the filter runs at all (serverless deployments: on; managed compute: off).
        categories: the categories that may block; the others are still annotated, never filtered.
        threshold: the lowest severity that blocks ("medium" blocks medium and high).
        jailbreak: whether a detected prompt attack blocks the prompt.
        fail_open: when the classifier cannot judge, let the text through (annotated with an error) instead of
            blocking it.
        guard: the name of a Llama Guard deployment that classifies for this one, or None for the built-in
            classifier.
        indirect_attack: whether instructions aimed at the model in documents or tool results block the prompt.
        streaming: "default" (text is released after it passed a check) or "asynchronous" (text streams at once,
            checks run beside it, a violation ends the stream with finish_reason "content_filter").
        blocklists: the custom blocklists in force; a match always blocks.
    """

    enabled: bool = True
    categories: frozenset[Category] = frozenset(CATEGORIES)
    threshold: Severity = DEFAULT_THRESHOLD
    jailbreak: bool = True
    fail_open: bool = True
    guard: str | None = None
    indirect_attack: bool = True
    streaming: str = "default"
    blocklists: tuple[Blocklist, ...] = ()

    def __post_init__(self) -> None:
        if self.threshold == Severity.SAFE:
            raise ValueError("threshold must be low, medium or high: safe content is never filtered.")
        if self.streaming not in STREAMING_MODES:
            raise ValueError(f"streaming mode {self.streaming!r}: use {' or '.join(STREAMING_MODES)}.")
        object.__setattr__(self, "categories", frozenset(Category(c) for c in self.categories))
        ids = [b.id for b in self.blocklists]
        if len(set(ids)) != len(ids):
            raise ValueError(f"blocklist names must be unique; got {', '.join(ids)}.")

    @classmethod
    def for_deployment(cls, kind: str, **overrides: Any) -> SafetyPolicy:
        """The default policy of a deployment kind: `serverless` (on) or `managed` (off), as on Azure."""
        if kind not in ("serverless", "managed"):
            raise ValueError(f"unknown deployment kind {kind!r}; use 'serverless' or 'managed'.")
        return cls(**{"enabled": kind == "serverless", **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SafetyPolicy:
        """Parse the stored form written by `to_dict` (unknown keys are an error, so typos do not pass silently)."""
        known = {
            "enabled", "categories", "threshold", "jailbreak", "fail_open", "guard", "indirect_attack", "streaming",
            "blocklists",
        }  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown content safety setting(s): {', '.join(sorted(unknown))}.")
        values = dict(data)
        if "categories" in values:
            values["categories"] = frozenset(Category(c) for c in values["categories"])
        if "threshold" in values:
            values["threshold"] = Severity(values["threshold"])
        if "blocklists" in values:
            values["blocklists"] = tuple(Blocklist.from_dict(b) for b in values["blocklists"] or [])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "categories": sorted(c.value for c in self.categories),
            "threshold": self.threshold.value,
            "jailbreak": self.jailbreak,
            "fail_open": self.fail_open,
            "guard": self.guard,
            "indirect_attack": self.indirect_attack,
            "streaming": self.streaming,
            "blocklists": [b.to_dict() for b in self.blocklists],
        }

    def filtered(self, category: Category, severity: Severity) -> bool:
        return category in self.categories and severity >= self.threshold

    def is_blocked(self, verdict: Verdict, role: Role) -> bool:
        if verdict.blocklists or any(self.filtered(c, verdict.severity(c)) for c in CATEGORIES):
            return True
        if role != Role.PROMPT:
            return False
        return (self.jailbreak and bool(verdict.jailbreak)) or (self.indirect_attack and bool(verdict.indirect_attack))

    def annotations(self, verdict: Verdict, role: Role) -> dict[str, Any]:
        """Azure's `content_filter_results` for one prompt or choice.

        Prompts carry `jailbreak` (`{"filtered", "detected"}`), and `indirect_attack` when the prompt had documents
        or tool results; completions carry neither, as on Azure. With custom blocklists in force, `custom_blocklists`
        lists the matched ones: `[{"filtered": true, "id": LIST}]` (`[]`: none matched).
        """
        results: dict[str, Any] = {
            c.value: {"filtered": self.filtered(c, verdict.severity(c)), "severity": verdict.severity(c).value}
            for c in CATEGORIES
        }
        if role == Role.PROMPT:
            detected = bool(verdict.jailbreak)
            results["jailbreak"] = {"filtered": detected and self.jailbreak, "detected": detected}
            if verdict.indirect_attack is not None:
                indirect = verdict.indirect_attack
                results["indirect_attack"] = {"filtered": indirect and self.indirect_attack, "detected": indirect}
        if self.blocklists:
            results["custom_blocklists"] = [{"filtered": True, "id": b} for b in verdict.blocklists]
        results.update(verdict.details)
        return results


def unfiltered_annotations(reason: str) -> dict[str, Any]:
    """The annotation Azure sends when the filter could not run: the request went through unchecked."""
    return {"error": {"code": "content_filter_error", "message": f"The contents are not filtered: {reason}"}}
