"""Llama Guard 3 (1B and 8B, text) as a `SafetyClassifier`, generating through any `EngineClient`.

Prompt: Meta's Llama Guard 3 format (llama-recipes `PROMPT_TEMPLATE_3`, the 1B model's HF chat template): one
user turn holding the task, the S1-S13 category list (S14 "Code Interpreter Abuse" for the 8B only), the
conversation as `User:` / `Agent:` turns, and the instruction to assess the last `User` (prompt check) or `Agent`
(completion check) message. The model answers `safe`, or `unsafe` and a line of comma-separated codes, usually
after a leading "\\n\\n".

Severity: P(unsafe) is read from the log-probabilities of the first non-blank generated token, renormalised
over the `safe` and `unsafe` tokens (Meta's model card: "we look at the probability for the first token, and
use that as the 'unsafe' class probability"). The codes the model lists get that severity in their Azure
category; codes without an Azure category (S2, S5-S8, S13, S14) are reported under `llama_guard` and never block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llamafoundry.engine.client import EngineClient
from llamafoundry.engine.outputs import TokenLogprob
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.errors import EngineError
from llamafoundry.safety.base import (
    CATEGORIES,
    Category,
    ClassifierError,
    Role,
    Severity,
    Speaker,
    Turn,
    Verdict,
)

# Short names, as in the prompt Meta's models were trained with (not the model-card names).
LLAMA_GUARD_3_CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes.",
    "S2": "Non-Violent Crimes.",
    "S3": "Sex Crimes.",
    "S4": "Child Exploitation.",
    "S5": "Defamation.",
    "S6": "Specialized Advice.",
    "S7": "Privacy.",
    "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.",
    "S10": "Hate.",
    "S11": "Self-Harm.",
    "S12": "Sexual Content.",
    "S13": "Elections.",
    "S14": "Code Interpreter Abuse.",
}
VARIANT_CODES = {"1B": tuple(f"S{i}" for i in range(1, 14)), "8B": tuple(f"S{i}" for i in range(1, 15))}

CODE_TO_CATEGORY: dict[str, Category] = {
    "S1": Category.VIOLENCE,
    "S9": Category.VIOLENCE,
    "S3": Category.SEXUAL,
    "S4": Category.SEXUAL,
    "S12": Category.SEXUAL,
    "S10": Category.HATE,
    "S11": Category.SELF_HARM,
}
ALWAYS_HIGH = frozenset({"S4", "S9"})  # child sexual exploitation, indiscriminate weapons

# P(unsafe) bounds of low, medium and high: with Azure's default threshold (medium) the filter blocks exactly
# when Llama Guard itself would answer "unsafe" (P > 0.5).
DEFAULT_SEVERITY_BOUNDS = (0.2, 0.5, 0.85)

_HEADER = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy "
    "with the below categories.\n\n"
)
_FOOTER = (
    "<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories. "
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)
_SPECIAL = re.compile(r"<\|([a-z_0-9]+)\|>")
_CODE = re.compile(r"^S(?:[1-9]|1[0-4])$")
_ROLE_NAMES = {Speaker.USER: "User", Speaker.AGENT: "Agent"}


def build_prompt(turns: Sequence[Turn], role: Role, variant: str = "1B", excluded: Sequence[str] = ()) -> str:
    """Meta's Llama Guard 3 prompt for judging the last user turn (PROMPT) or the last agent turn (COMPLETION).

    Turns are cut after the turn being judged, consecutive turns of one speaker are joined, and a conversation
    that starts with the agent gets that turn as a user turn (Llama Guard's template requires user first).
    Special-token text inside messages is defused so a message cannot close the conversation early.
    """
    if variant not in VARIANT_CODES:
        raise ValueError(f"unknown Llama Guard 3 variant {variant!r}; use '1B' or '8B'.")
    conversation = _conversation(turns, role)
    who = "User" if role == Role.PROMPT else "Agent"
    categories = "".join(
        f"{code}: {LLAMA_GUARD_3_CATEGORIES[code]}\n" for code in VARIANT_CODES[variant] if code not in excluded
    )
    lines = "".join(f"{_ROLE_NAMES[t.speaker]}: {_defuse(t.text).strip()}\n\n" for t in conversation)
    return (
        _HEADER.format(role=who)
        + f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}<END UNSAFE CONTENT CATEGORIES>\n\n"
        + f"<BEGIN CONVERSATION>\n\n{lines}"
        + _FOOTER.format(role=who)
    )


def _defuse(text: str) -> str:
    return _SPECIAL.sub(r"<| \1 |>", text)


def _conversation(turns: Sequence[Turn], role: Role) -> list[Turn]:
    target = Speaker.USER if role == Role.PROMPT else Speaker.AGENT
    last = max((i for i, t in enumerate(turns) if t.speaker == target), default=None)
    if last is None:
        raise ValueError(f"a {role.value} check needs at least one {target.value} turn.")
    merged: list[Turn] = []
    for turn in turns[: last + 1]:
        speaker = Speaker.USER if not merged else turn.speaker
        if merged and merged[-1].speaker == speaker:
            merged[-1] = Turn(speaker, f"{merged[-1].text}\n\n{turn.text}")
        else:
            merged.append(Turn(speaker, turn.text))
    return merged


@dataclass(frozen=True)
class GuardAnswer:
    """The model's raw answer: its text, P(unsafe) at the first non-blank token (None when neither `safe` nor
    `unsafe` is among that token's top log-probabilities), and how many tokens it generated."""

    text: str
    p_unsafe: float | None
    num_tokens: int


@dataclass(frozen=True)
class GuardOutput:
    is_safe: bool
    codes: tuple[str, ...] = ()


def parse_output(text: str) -> GuardOutput:
    """Parse `safe` or `unsafe\\nS1,S10` (surrounding blanks allowed).

    Raises:
        ClassifierError: for anything else (the caller's policy decides whether that blocks).
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines == ["safe"]:
        return GuardOutput(True)
    if lines and lines[0] == "unsafe" and len(lines) <= 2:
        codes = tuple(c.strip() for c in lines[1].split(",")) if len(lines) == 2 else ()
        if all(_CODE.match(c) for c in codes):
            return GuardOutput(False, codes)
    raise ClassifierError(f"Llama Guard answered {text!r}, which is neither 'safe' nor 'unsafe' with categories.")


def unsafe_probability(first_token: TokenLogprob) -> float | None:
    """P(unsafe) among {safe, unsafe} at the first answer token, or None when neither is among its top tokens."""
    candidates = [(first_token.token, first_token.logprob)]
    candidates += [(t.token, t.logprob) for t in first_token.top_logprobs]
    mass = {"safe": 0.0, "unsafe": 0.0}
    seen: set[str] = set()
    for token, logprob in candidates:
        word = token.strip().lower()
        if word in mass and token not in seen:
            seen.add(token)
            mass[word] += math.exp(logprob)
    total = mass["safe"] + mass["unsafe"]
    return mass["unsafe"] / total if total > 0 else None


def severity_from_probability(
    p_unsafe: float, bounds: tuple[float, float, float] = DEFAULT_SEVERITY_BOUNDS
) -> Severity:
    low, medium, high = bounds
    if p_unsafe >= high:
        return Severity.HIGH
    if p_unsafe >= medium:
        return Severity.MEDIUM
    if p_unsafe >= low:
        return Severity.LOW
    return Severity.SAFE


def verdict_from_output(
    output: GuardOutput, p_unsafe: float, bounds: tuple[float, float, float] = DEFAULT_SEVERITY_BOUNDS
) -> Verdict:
    """Map Llama Guard's codes onto Azure's categories at the severity P(unsafe) gives."""
    severities = {c: Severity.SAFE for c in CATEGORIES}
    severity = severity_from_probability(p_unsafe, bounds)
    for code in output.codes:
        category = CODE_TO_CATEGORY.get(code)
        if category is not None:
            level = Severity.HIGH if code in ALWAYS_HIGH else severity
            severities[category] = max(severities[category], level)
    details = {"llama_guard": {"safe": output.is_safe, "codes": list(output.codes), "p_unsafe": round(p_unsafe, 4)}}
    return Verdict(severities, None, details)


class LlamaGuardClassifier:
    """`SafetyClassifier` that asks a Llama Guard 3 model, served by `engine`, for each check.

    Args:
        engine: the guard deployment's engine (the model must be Llama Guard 3 1B or 8B).
        variant: "1B" (categories S1-S13) or "8B" (S1-S14).
        excluded: category codes left out of the prompt (the model is then not asked about them).
        bounds: P(unsafe) at which a listed category becomes low, medium and high.
        max_text_chars: only the last this-many characters of each turn are sent (a completion check sends the
            text so far, which can grow long).
    """

    name = "llama-guard-3"
    window_chars = 600  # every check is a prefill of a few hundred tokens: check in larger windows

    def __init__(
        self,
        engine: EngineClient,
        variant: str = "1B",
        excluded: Sequence[str] = (),
        bounds: tuple[float, float, float] = DEFAULT_SEVERITY_BOUNDS,
        max_text_chars: int = 4000,
    ) -> None:
        if variant not in VARIANT_CODES:
            raise ValueError(f"unknown Llama Guard 3 variant {variant!r}; use '1B' or '8B'.")
        self.engine = engine
        self.variant = variant
        self.excluded = tuple(excluded)
        self.bounds = bounds
        self.max_text_chars = max_text_chars
        self.params = SamplingParams(temperature=0, max_tokens=10, logprobs=True, top_logprobs=20)

    async def classify(self, turns: Sequence[Turn], role: Role) -> Verdict:
        answer = await self.ask(turns, role)
        output = parse_output(answer.text)
        p_unsafe = answer.p_unsafe
        if p_unsafe is None:  # neither token among the top 20: trust the answer itself
            p_unsafe = 0.0 if output.is_safe else 1.0
        return verdict_from_output(output, p_unsafe, self.bounds)

    async def ask(self, turns: Sequence[Turn], role: Role) -> GuardAnswer:
        """Run the model once: its raw answer and P(unsafe) at the first answer token (not parsed yet)."""
        turns = [Turn(t.speaker, t.text[-self.max_text_chars :]) for t in turns]
        prompt = build_prompt(turns, role, self.variant, self.excluded)
        text, logprobs = await self._generate(self.engine.tokenize(prompt))
        first = next((lp for lp in logprobs if lp.token.strip()), None)
        return GuardAnswer(text, unsafe_probability(first) if first is not None else None, len(logprobs))

    async def _generate(self, prompt_ids: list[int]) -> tuple[str, list[TokenLogprob]]:
        try:
            stream = await self.engine.add_request(prompt_ids, self.params)
        except EngineError as exc:
            raise ClassifierError(f"the Llama Guard engine refused the check: {exc.message}") from exc
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        try:
            async for output in stream:
                for delta in output.deltas:
                    parts.append(delta.text)
                    logprobs.extend(delta.logprobs or [])
        finally:
            stream.abort()
        return "".join(parts), logprobs
