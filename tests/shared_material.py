"""The reference material in `../shared` beside the checkout (the real Llama 3 tokenizer, golden vectors, Meta's
chat templates). A user's machine may not have it: the tests that need it skip there. Under `CI=true` its
absence is a failure, so a CI run without it cannot go green without those tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def require_shared(path: Path, what: str) -> Path:
    """`path` (under SHARED) when it exists; else a skip, or under CI=true a failure, naming `what` is missing."""
    if path.exists():
        return path
    message = f"{what} is absent at {path} (the shared reference folder beside the checkout)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must run with it")
    pytest.skip(message)
