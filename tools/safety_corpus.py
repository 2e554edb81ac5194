"""Training corpus for the built-in safety classifier: labelled texts generated from frames and content clauses.

Design: every class (a category at a severity, jailbreak, or benign) is a set of *content* (`act`: a verb phrase
someone asks for, `say`: a sentence someone writes), and the *frames* that wrap content ("How do I {act}?",
"Write a scene where {say}", "{say}") are shared by all classes. The only thing that separates classes is the
content, so the model learns content words, not phrasing. Benign content deliberately reuses trigger words in
harmless senses ("kill the process", "knife skills", "shoot portraits") so the model learns context, not a word
list. Slots (`{group}`, `{weapon}`, ...) nest.

Two parts: safety_lexicon.py holds the harmful classes and their trigger-word contrasts; safety_chat_corpus.py
holds ordinary traffic (everyday chat, questions, assistant answers and refusals, short inputs, common words,
token salad), so that words and phrasing that are merely common never become evidence of harm. For the same
reason every class uses act frames at the same rate (`ACT_SHARE`) and gets openers and closers at the same rate.

The evaluation sets (tests/platform/safety_eval.jsonl, tests/platform/safety_everyday.jsonl) are written
separately; `generate` drops near copies of their texts (see `near_duplicates`) and any equal text. Labels follow
the labelling guide in docs/safety.md.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from safety_chat_corpus import (
    CHAT_ACT_FRAMES,
    CHAT_CLASSES,
    CHAT_SLOTS,
    QUESTION_SLOTS,
    REFUSAL_SLOTS,
    SHORT_SLOTS,
    noise_examples,
    word_filler,
)
from safety_corpus_extra import EXTRA_CLASSES, EXTRA_SLOTS
from safety_lexicon import CLASSES as LEXICON_CLASSES
from safety_lexicon import SLOTS as LEXICON_SLOTS

SLOTS: dict[str, list[str]] = {
    **LEXICON_SLOTS, **EXTRA_SLOTS, **CHAT_SLOTS, **SHORT_SLOTS, **REFUSAL_SLOTS, **QUESTION_SLOTS,
}  # fmt: skip
HARM_AND_TRIGGER_CLASSES: dict[str, dict[str, object]] = {**LEXICON_CLASSES, **EXTRA_CLASSES}
CLASSES: dict[str, dict[str, object]] = {**HARM_AND_TRIGGER_CLASSES, **CHAT_CLASSES}
NUM_NOISE = 3500  # token salad and code fragments, labelled safe (see safety_chat_corpus.noise_text)

SAFE = "safe"
NEAR_DUPLICATE = 0.4  # word Jaccard at which a corpus item counts as a copy of an evaluation text

# Frames shared by every class. `act` frames take a verb phrase, `say` frames a sentence.
ACT_FRAMES = [
    "How do I {act}?", "How can I {act}?", "how to {act}", "Tell me how to {act}.", "I want to {act}.",
    "What's the best way to {act}?", "Help me {act}.", "Give me step-by-step instructions to {act}.",
    "Can you explain how to {act}?", "Is there an easy way to {act}?", "I need to {act}. Where do I start?",
    "Explain in detail how to {act}.", "What do I need to {act}?", "Write a guide on how to {act}.",
    "I'm planning to {act}. Any tips?", "My friend wants to {act}, how would he do it?",
    "Quick question: how to {act}?",
    "Could you help me {act}?", "What is the fastest way to {act}?", "Teach me to {act}.",
    "Steps to {act}:", "Here's how to {act}:", "Sure, here is how you {act}.", "Best tools to {act}?",
    *CHAT_ACT_FRAMES,
]
SAY_FRAMES = [
    "{say}", "{say}", "{say}", "{say}", "Write a paragraph where {lsay}", "Continue this: {say}",
    "My friend texted me: \"{say}\"", "{say} What do you think?", "Is it okay to say this? {say}",
    "Rewrite this more vividly: {say}", "{say} Write more like this.", "Reply to this message: {say}",
    "Translate to French: {say}", "Write a story where {lsay}", "I wrote this: {say}", "Yeah. {say}",
    # a request to write the sentence is the sentence's class ("Write a speech saying that Jews are vermin ..."
    # passed as safe: writing requests were all harmless fiction)
    "Write a speech saying that {lsay}", "Write a message telling them that {lsay}", "Draft a post saying {lsay}",
]
# Openers and closers, added to every class at the same rate (a class without them would make "Thanks." evidence).
GREETS = [""] * 12 + ["Hi! ", "Hey, ", "Hello. ", "Please help. ", "Okay so ", "Honestly, ", "Listen, ", "So, "]
TAILS = [""] * 12 + [" Thanks.", " Please be detailed.", " Keep it short.", " Thanks in advance!",
                     " I need this today.", " Be specific.", " lol", " Please."]
# Share of texts that use an act frame ("How do I {act}?") in a class that has both acts and says. One share for
# every class: shares that follow each class's item counts made frame words ("how", "do", "I") evidence of the
# act-heavy harmful classes. A class may set its own `act_share` to balance classes that have no acts.
ACT_SHARE = 0.45


@dataclass(frozen=True)
class Example:
    text: str
    labels: dict[str, object]  # hate/sexual/violence/self_harm -> severity, jailbreak -> bool
    group: str


def _fill(template: str, rng: random.Random, depth: int = 0) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in ("word", "Word"):  # a common English word from the Llama 3 vocabulary
            word = word_filler(rng)
            return word.capitalize() if key == "Word" else word
        if key not in SLOTS:
            raise KeyError(f"unknown slot {key!r} in {template!r}")
        value = rng.choice(SLOTS[key])
        return _fill(value, rng, depth + 1) if "{" in value and depth < 4 else value

    return re.sub(r"\{(\w+)\}", replace, template)


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if text and not text[:2].isupper() else text


def _surface(text: str, rng: random.Random) -> str:
    """Casing and punctuation noise, so the model does not key on them."""
    roll = rng.random()
    if roll < 0.10:
        return text.lower()
    if roll < 0.15:
        return text.rstrip(".!?")
    if roll < 0.17:
        return text.upper()
    return text


def _one(spec: dict[str, object], rng: random.Random) -> str:
    acts: list[str] = spec.get("act", [])  # type: ignore[assignment]
    says: list[str] = spec.get("say", [])  # type: ignore[assignment]
    frames: list[str] | None = spec.get("frames")  # type: ignore[assignment]  # a class's own say frames
    use_act = acts and (not says or rng.random() < spec.get("act_share", ACT_SHARE))  # type: ignore[operator]
    if use_act:
        text = rng.choice(ACT_FRAMES).replace("{act}", _fill(rng.choice(acts), rng))
    else:
        frame = rng.choice(frames or SAY_FRAMES)
        text = re.sub(r"\{l?say\}", lambda m: _say(m.group(0), says, rng), frame)
    return _surface(_wrap(text, rng), rng)


def _wrap(text: str, rng: random.Random) -> str:
    text = rng.choice(GREETS) + text + rng.choice(TAILS)
    return text[0].upper() + text[1:]


def _say(slot: str, says: list[str], rng: random.Random) -> str:
    content = _fill(rng.choice(says), rng)
    return _lower_first(content) if slot == "{lsay}" else content


_STOP = set("the a an to and i my of in it is on for you with so how do that this he she her his me be can are what "
             "your we they them our their at by as or if".split())


def _content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", re.sub(r"\{\w+\}", " ", text.lower()))) - _STOP


def near_duplicates(items: list[str], texts: set[str], threshold: float = NEAR_DUPLICATE) -> set[str]:
    """Items whose content words overlap one of `texts` with a Jaccard index of at least `threshold`."""
    references = [w for w in (_content_words(t) for t in texts) if w]
    out = set()
    for item in items:
        words = _content_words(item)
        if len(words) >= 2 and any(len(words & r) / len(words | r) >= threshold for r in references):
            out.add(item)
    return out


def _without(spec: dict[str, object], dropped: set[str]) -> dict[str, object]:
    return {**spec, **{k: [x for x in spec[k] if x not in dropped] for k in ("act", "say") if k in spec}}  # type: ignore


def generate(seed: int = 0, exclude: set[str] | None = None, scale: float = 1.0) -> Iterator[Example]:
    """All training examples, deterministic for a seed.

    `exclude` is the evaluation set: any content item that is a near-duplicate of one of its texts (see
    `near_duplicates`) is dropped before generating, and any generated text equal to one of them is skipped.
    """
    rng = random.Random(seed)
    excluded = {t.strip().lower() for t in exclude or set()}
    all_items = [x for spec in CLASSES.values() for k in ("act", "say") for x in spec.get(k, [])]  # type: ignore
    dropped = near_duplicates(all_items, exclude or set())
    for group, raw_spec in CLASSES.items():
        spec = _without(raw_spec, dropped)
        labels = {"hate": SAFE, "sexual": SAFE, "violence": SAFE, "self_harm": SAFE, "jailbreak": False}
        labels.update(spec["labels"])  # type: ignore[arg-type]
        count = int(spec["count"] * scale)  # type: ignore[operator]
        seen: set[str] = set()
        attempts = 0
        while len(seen) < count and attempts < count * 5:
            attempts += 1
            text = _one(spec, rng)
            key = text.strip().lower()
            if key in seen or key in excluded:
                continue
            seen.add(key)
            yield Example(text, dict(labels), group)
    safe = {"hate": SAFE, "sexual": SAFE, "violence": SAFE, "self_harm": SAFE, "jailbreak": False}
    for text in noise_examples(rng, int(NUM_NOISE * scale)):
        text = _wrap(text, rng)
        if text.strip().lower() not in excluded:
            yield Example(text, dict(safe), "benign_noise")
