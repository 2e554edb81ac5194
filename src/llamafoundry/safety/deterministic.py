"""The deterministic layers every check runs beside the classifier: custom blocklists, the hard rules (`rules.py`)
and, on prompts, prompt shields (`shields.py`). `service.safety.ChatSafety` merges their verdict into the
classifier's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llamafoundry.safety.base import CATEGORIES, Role, SafetyPolicy, Speaker, Turn, Verdict
from llamafoundry.safety.blocklists import matched_lists
from llamafoundry.safety.rules import rules_verdict
from llamafoundry.safety.shields import shield

TAIL_CHARS = 512  # a streamed completion's blocklist and rule check reads its end: terms are local


def rule_verdict(
    policy: SafetyPolicy, turns: Sequence[Turn], role: Role, with_rules: bool = True
) -> tuple[Verdict, list[Turn]]:
    """What the deterministic checks find in a prompt (every caller turn) or a completion (the last turn), and the
    decoded text of encoded prompts, for the classifier to judge as one more user turn. `with_rules=False` leaves
    the hard rules to a classifier that applies them itself."""
    jailbreak: bool | None = None
    indirect: bool | None = None
    decoded: list[Turn] = []
    if role == Role.PROMPT:
        texts = [t.text for t in turns if t.speaker == Speaker.USER]
        found = shield(turns)
        jailbreak, indirect = found.jailbreak, found.indirect_attack
        decoded = [Turn(Speaker.USER, d, "decoded") for d in found.decoded]
    else:
        texts = [turns[-1].text] if turns else []
    severities = rules_verdict([*texts, *(t.text for t in decoded)] if with_rules else []).severities
    lists = matched_lists(policy.blocklists, texts)
    return Verdict({c: severities[c] for c in CATEGORIES}, jailbreak, {}, indirect, lists), decoded


def completion_block(policy: SafetyPolicy, text: str) -> dict[str, Any] | None:
    """Annotations when the blocklists or the hard rules block the end of completion `text`, else None. Cheap and
    synchronous: the asynchronous streaming mode runs it before every delta it sends."""
    tail = text[-TAIL_CHARS:]
    verdict = Verdict(rules_verdict([tail]).severities, None, {}, None, matched_lists(policy.blocklists, [tail]))
    return policy.annotations(verdict, Role.COMPLETION) if policy.is_blocked(verdict, Role.COMPLETION) else None
