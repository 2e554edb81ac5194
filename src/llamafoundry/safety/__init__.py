"""Content safety: classifiers behind one interface (`base.SafetyClassifier`) and per-deployment policy.

- `base`: categories, severities, `Verdict`, `SafetyPolicy` (what blocks, Azure's annotation dicts).
- `builtin`: the shipped hashed n-gram classifier (numpy only, no downloads).
- `llama_guard`: Llama Guard 3 1B/8B through any `EngineClient`.
- `evaluation`: precision/recall on a labelled JSONL set.
"""

from __future__ import annotations

from llamafoundry.safety.base import (
    CATEGORIES,
    Category,
    ClassifierError,
    Role,
    SafetyClassifier,
    SafetyPolicy,
    Severity,
    Speaker,
    Turn,
    Verdict,
)

__all__ = [
    "CATEGORIES",
    "Category",
    "ClassifierError",
    "Role",
    "SafetyClassifier",
    "SafetyPolicy",
    "Severity",
    "Speaker",
    "Turn",
    "Verdict",
]
