"""Precision and recall of a classifier on a labelled JSONL set (tests/platform/safety_eval.jsonl).

Each line: `{"text", "role": "prompt"|"completion", "kind", "hate", "sexual", "violence", "self_harm": severity,
"jailbreak": bool}`. A category counts as positive at a level when its severity is at least that level: "blocked"
is at least medium (Azure's default threshold), "flagged" is at least low.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamafoundry.safety.base import CATEGORIES, Role, Severity, Verdict


@dataclass(frozen=True)
class LabelledText:
    text: str
    role: Role
    kind: str
    severities: dict[str, Severity]
    jailbreak: bool


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, truth: bool, predicted: bool) -> None:
        if truth and predicted:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def support(self) -> int:
        return self.tp + self.fn


@dataclass
class Report:
    blocked: dict[str, Counts]  # per category (and "jailbreak"): positive = severity >= medium / detected
    flagged: dict[str, Counts]  # per category: positive = severity >= low
    exact: dict[str, float]  # per category: share of texts whose severity is exactly right
    benign_false_blocks: list[str]  # texts labelled safe everywhere that would be blocked
    missed: list[str]  # texts that should be blocked and were not
    num_texts: int

    def macro(self, level: str = "blocked") -> tuple[float, float]:
        table = self.blocked if level == "blocked" else self.flagged
        keys = [c.value for c in CATEGORIES] + (["jailbreak"] if level == "blocked" else [])
        return (
            sum(table[k].precision for k in keys) / len(keys),
            sum(table[k].recall for k in keys) / len(keys),
        )

    def table(self) -> str:
        lines = [
            "| category | blocked (>= medium) precision | recall | support | flagged (>= low) precision | recall |"
            " support | exact severity |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for category in CATEGORIES:
            b, f = self.blocked[category.value], self.flagged[category.value]
            lines.append(
                f"| {category.value} | {b.precision:.3f} | {b.recall:.3f} | {b.support} | {f.precision:.3f} | "
                f"{f.recall:.3f} | {f.support} | {self.exact[category.value]:.3f} |"
            )
        j = self.blocked["jailbreak"]
        lines.append(f"| jailbreak | {j.precision:.3f} | {j.recall:.3f} | {j.support} | | | | |")
        p, r = self.macro("blocked")
        lines.append(f"| **macro (blocked)** | {p:.3f} | {r:.3f} | | | | | |")
        return "\n".join(lines)


def load_labelled(path: str | Path) -> list[LabelledText]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        data: dict[str, Any] = json.loads(line)
        rows.append(
            LabelledText(
                text=data["text"],
                role=Role(data["role"]),
                kind=data.get("kind", ""),
                severities={c.value: Severity(data[c.value]) for c in CATEGORIES},
                jailbreak=bool(data["jailbreak"]),
            )
        )
    return rows


def evaluate(rows: Iterable[LabelledText], analyze: Callable[[str, Role], Verdict]) -> Report:
    """Run `analyze(text, role)` on every row and count agreement with the labels."""
    blocked = {c.value: Counts() for c in CATEGORIES} | {"jailbreak": Counts()}
    flagged = {c.value: Counts() for c in CATEGORIES}
    exact_hits = {c.value: 0 for c in CATEGORIES}
    benign_false_blocks, missed = [], []
    num = 0
    for row in rows:
        num += 1
        verdict = analyze(row.text, row.role)
        any_true = any_predicted = False
        for category in CATEGORIES:
            truth, predicted = row.severities[category.value], verdict.severity(category)
            blocked[category.value].add(truth >= Severity.MEDIUM, predicted >= Severity.MEDIUM)
            flagged[category.value].add(truth >= Severity.LOW, predicted >= Severity.LOW)
            exact_hits[category.value] += truth == predicted
            any_true |= truth >= Severity.MEDIUM
            any_predicted |= predicted >= Severity.MEDIUM
        if row.role == Role.PROMPT:
            blocked["jailbreak"].add(row.jailbreak, bool(verdict.jailbreak))
            any_true |= row.jailbreak
            any_predicted |= bool(verdict.jailbreak)
        if any_predicted and not any_true and all(s == Severity.SAFE for s in row.severities.values()):
            benign_false_blocks.append(row.text)
        if any_true and not any_predicted:
            missed.append(row.text)
    exact = {k: v / max(num, 1) for k, v in exact_hits.items()}
    return Report(blocked, flagged, exact, benign_false_blocks, missed, num)


@dataclass(frozen=True)
class IndependentRow:
    """A row of a frozen independent set (tests/platform/safety_independent.jsonl): `group` harmful or benign."""

    text: str
    role: Role
    group: str
    category: str


@dataclass
class CategoryResult:
    """Per category: how many texts were blocked, of how many, and the texts decided wrongly."""

    group: str
    blocked: int = 0
    total: int = 0
    wrong: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Recall for a harmful category, false-positive rate for a benign one."""
        return self.blocked / self.total if self.total else 0.0


def load_independent(path: str | Path) -> list[IndependentRow]:
    """Rows of an independent set; lines starting with '#' are its header (how it was made)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        data = json.loads(line)
        rows.append(IndependentRow(data["text"], Role(data["role"]), data["group"], data["category"]))
    return rows


def evaluate_independent(
    rows: Iterable[IndependentRow], is_blocked: Callable[[str, Role], bool]
) -> dict[str, CategoryResult]:
    """Recall per harmful category and false-positive rate per benign category, as the default policy blocks."""
    results: dict[str, CategoryResult] = {}
    for row in rows:
        result = results.setdefault(row.category, CategoryResult(row.group))
        blocked = is_blocked(row.text, row.role)
        result.total += 1
        result.blocked += blocked
        if blocked != (row.group == "harmful"):
            result.wrong.append(row.text)
    return results


def independent_table(results: dict[str, CategoryResult]) -> str:
    """A markdown table: harmful categories (recall) then benign ones (false-positive rate)."""
    lines = ["| group | category | blocked | rate | decided wrongly |", "|---|---|---|---|---|"]
    for name, r in sorted(results.items(), key=lambda kv: (kv[1].group != "harmful", kv[0])):
        measure = "recall" if r.group == "harmful" else "false positives"
        lines.append(f"| {r.group} | {name} | {r.blocked} of {r.total} | {measure} {r.rate:.3f} | {len(r.wrong)} |")
    return "\n".join(lines)
