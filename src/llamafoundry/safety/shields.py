"""Prompt shields, as Azure names them: user prompt attacks (`jailbreak`) and document attacks (`indirect_attack`).

Rules, beside the built-in classifier's jailbreak head (which catches phrasings the rules do not list):
- user prompt attacks: the families Azure's Prompt Shields documentation describes, written as patterns over the
  `normalize.skeleton` of every user turn and of all user turns joined (multi-turn attacks set up a persona or a
  trigger word in one turn and use it in another): changing the rules ("ignore previous instructions", "you have
  no restrictions"), role play that removes the rules (DAN, developer mode, "stay in character", the "late
  grandmother" who read out recipes), and encoding attacks;
- encoding attacks: base64 runs are decoded, and the whole text is read through rot13; the decoded text is
  checked by the same rules and handed to the harm classifier as one more user turn (`decoded_texts`), so an
  encoded harmful request is blocked for its harm too. A request to decode and then obey is an attack by itself;
- document attacks: text from `tool` messages and inside `<documents>...</documents>` (Azure's delimiters for
  grounding data) is checked for instructions aimed at the model (addressing "the AI"/"assistant", "new
  instructions", "ignore the user", exfiltration to an address, calling tools) and for the prompt-attack rules.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llamafoundry.safety.base import Speaker, Turn
from llamafoundry.safety.normalize import skeleton

_RULES_NOUN = (
    r"(?:instructions?|rules?|guidelines?|directions?|directives?|prompts?|restrictions?|programming|training|"
    r"polic(?:y|ies)|filters?|caution|warnings?|safety \w+|system prompt|limitations?|constraints?|ethics)"
)
_JAILBREAK = [
    rf"(?:ignore|disregard|forget|bypass|override|skip|drop|abandon)\b.{{0,40}}\b{_RULES_NOUN}",
    rf"(?:previous|prior|earlier|above|original) {_RULES_NOUN} (?:are|were|is|have been|has been) "
    r"(?:cancel\w*|void|revoked|overridden|removed|lifted|disabled|null)",
    r"\b(?:no|without(?: any)?|free of|zero) (?:rules|restrictions|filters|limits|limitations|guidelines|ethics|"
    r"morals|censorship|warnings|disclaimers|content polic\w*|laws and no content)\b",
    r"\b(?:unrestricted|uncensored|unfiltered|jailbr[eo]\w*|unchained|unlimited) (?:mode|ai|assistant|model|version|"
    r"answers?|responses?|output|chatbot)\b|answer (?:everything|anything) uncensored|\buncensored\b",
    r"\bdo anything now\b|\b(?:you are|you're|act as|be|become|now) (?:now )?(?:dan|stan|aim|dude|evilbot|"
    r"developer mode)\b|\bdan is ready\b|\bstay (?:dan|stan)\b",
    r"\bdeveloper mode\b|\bgod mode\b|\b(?:system|admin|root|sudo) override\b|#+ ?admin ?#+",
    r"(?:content|safety) (?:policy|policies|filters?|rules|guidelines|training) (?:is|are|was|were|has been|have "
    r"been|got) (?:now )?(?:off|disabled|removed|turned off|lifted|suspended)",
    r"\b(?:don'?t|do not|never|without) (?:break(?:ing)? character|refus\w*|say(?:ing)? (?:you|that you) can'?t|"
    r"add(?:ing)? (?:any )?(?:disclaimers|warnings))\b|\bremain in character\b|\bno matter (?:how|what)\b.{0,40}"
    r"\b(?:immoral|illegal|unethical|harmful)",
    r"\bwhatever you (?:would )?(?:normally )?refuse\b|\bbroken free\b|\bbreak free of\b",
    r"\b(?:late|deceased|dead|departed) (?:grand\w+|nan|granny|nana)\b.{0,200}\b(?:recipe|steps|synthes\w+|how to "
    r"make|napalm|bomb|weapon\w*|nerve|meth\w*|drugs?|keys?|explosives?|poison\w*)",
    r"\b(?:real|exact|actual|precise) (?:full )?(?:quantities|amounts|recipe|steps|chemicals|measurements)\b.{0,120}"
    r"\b(?:character|disclaimers|placeholders)|\bno placeholders\b|\bword for word\b.{0,60}\b(?:recipe|how to)",
    r"\bhypothetically\b.{0,60}\b(?:ai|model|assistant) without\b",
    r"\bwhenever i say\b.{0,60}\b(?:forget|ignore|no longer|disregard)\b",
    # German, French, Spanish, Italian, Portuguese: "ignore the (previous) instructions", "without restrictions"
    r"\bignorier\w* (?:\w+ ){0,3}anweisungen\b|\bvergiss (?:\w+ ){0,3}(?:anweisungen|regeln)\b|\bohne "
    r"(?:einschrankungen|regeln|filter)\b",
    r"\b(?:oublie|ignore)\w* (?:\w+ ){0,3}(?:instructions|regles|consignes)\b|\bsans (?:aucune )?(?:restriction|"
    r"regle|filtre)s?\b",
    r"\bignor\w* (?:\w+ ){0,3}(?:instrucciones|istruzioni|instrucoes|regras|reglas|regole)\b|\bsin "
    r"(?:restricciones|reglas|filtros)\b|\bsenza (?:restrizioni|regole|filtri)\b|\bsem (?:restricoes|regras|filtros)\b",
    r"\b(?:decode|decipher|translate|apply|convert)\b.{0,80}\b(?:follow|obey|do what it says|execute|comply|carry "
    r"out|act on)\b.{0,40}|\b(?:decode|decipher) it and do\b",
]
_INDIRECT = [
    r"\b(?:ai|a\.i\.|assistant|language model|llm|chatbot|model|gpt|copilot|agent)\b\W{0,3}(?:reading this|"
    r"processing this|\w+ing this)?\W{0,3}.{0,30}\b(?:must|should|will|now|ignore|disregard|override|stop|forward|"
    r"send|call|execute|reply|respond|output|reveal|print|delete|tell the user|your new|from now on|new directive|"
    r"new task|you are)\b",
    r"\bif you are an? (?:ai|language model|llm|assistant|bot|model)\b",
    r"\bnote to (?:the |any )?(?:ai|assistant|model|llm)\b|\binstructions? (?:to|for) (?:the |any )?(?:ai|assistant|"
    r"model|llm)\b",
    r"\bnew (?:instructions|directive|task|policy|rules)\b\s*[:.!-]|\bimportant(?: new)? instructions\b",
    r"\bsystem\s*(?:note|message|prompt|override)?\s*:\s*(?:the )?(?:assistant|ai|you)\b|\[\s*system\b",
    r"\b(?:send|forward|email|post|upload)\b.{0,60}\b(?:to|at)\s+\S+@\S+",
    r"\b(?:do not|don'?t|never) (?:tell|inform|mention (?:this )?to) the user\b",
    r"\b(?:ignore|disregard|override)\b.{0,30}\b(?:the user|user'?s (?:request|question|instructions))\b",
    r"\b(?:call|use|invoke|run) the \w+ tool\b|\busing (?:the |your )?\w+ tool\b|\brm -rf\b",
]
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_DOCUMENTS = re.compile(r"<documents>(.*?)(?:</documents>|$)", re.DOTALL | re.IGNORECASE)
_MAX_DECODED = 4
_SEGMENT = re.compile(r"[:\n]")  # an encoded part usually follows a colon or sits on its own line


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    jailbreak = re.compile("|".join(f"(?:{p})" for p in _JAILBREAK), re.DOTALL)
    indirect = re.compile("|".join(f"(?:{p})" for p in _INDIRECT), re.DOTALL)
    return jailbreak, indirect


@functools.lru_cache(maxsize=2048)
def is_prompt_attack(text: str) -> bool:
    """Whether `text` (or what it decodes to) contains a user prompt attack the rules know."""
    jailbreak, _ = _patterns()
    return any(jailbreak.search(skeleton(t)) for t in (text, *decoded_texts(text)))


@functools.lru_cache(maxsize=2048)
def is_document_attack(text: str) -> bool:
    """Whether document text (a tool result, a retrieved document) carries instructions aimed at the model."""
    _, indirect = _patterns()
    form = skeleton(text)
    return bool(indirect.search(form)) or is_prompt_attack(text)


@functools.lru_cache(maxsize=2048)
def decoded_texts(text: str) -> tuple[str, ...]:
    """Readable text hidden in `text`: base64 runs that decode to UTF-8 words, and the rot13 reading of `text`
    of each part of `text` (split at colons and line ends) that has more common words than the part itself."""
    found: list[str] = []
    for run in _BASE64_RUN.findall(text)[:_MAX_DECODED]:
        decoded = _b64(run)
        if decoded:
            found.append(decoded)
    for segment in _SEGMENT.split(text):
        flipped = codecs.decode(segment, "rot13")
        if _common_words(flipped) > max(2, 2 * _common_words(segment)):
            found.append(flipped)
    return tuple(found)


def _b64(run: str) -> str | None:
    try:
        raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    printable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
    return decoded if decoded and printable / len(decoded) > 0.95 and " " in decoded else None


_COMMON = frozenset(
    "the a an and or to of in on for is are you your me my i it this that with how what do does make tell all "
    "now from be have no not can will previous instructions ignore rules".split()
)


def _common_words(text: str) -> int:
    return sum(w in _COMMON for w in re.findall(r"[a-z]+", text.lower()))


@dataclass(frozen=True)
class ShieldResult:
    """Rules' findings for one prompt. `indirect_attack` is None when the prompt has no documents."""

    jailbreak: bool
    indirect_attack: bool | None
    decoded: tuple[str, ...]


def document_texts(turns: Sequence[Turn]) -> list[str]:
    """Text the caller passed as data: tool results, and what sits between `<documents>` delimiters."""
    out = [t.text for t in turns if t.source == "tool"]
    for turn in turns:
        if turn.speaker == Speaker.USER and turn.source != "tool":
            out.extend(m.group(1) for m in _DOCUMENTS.finditer(turn.text))
    return out


def user_texts(turns: Sequence[Turn]) -> list[str]:
    """What the user wrote: user turns (system text is the developer's, tool text is data), documents cut out."""
    return [_DOCUMENTS.sub(" ", t.text) for t in turns if t.speaker == Speaker.USER and t.source in ("", "user")]


def shield(turns: Sequence[Turn]) -> ShieldResult:
    """Prompt shields over a conversation's prompt."""
    users = user_texts(turns)
    joined = "\n".join(users[-6:])
    jailbreak = any(is_prompt_attack(t) for t in users) or (len(users) > 1 and is_prompt_attack(joined))
    documents = document_texts(turns)
    indirect = any(is_document_attack(d) for d in documents) if documents else None
    decoded = tuple(d for t in users for d in decoded_texts(t))
    return ShieldResult(jailbreak, indirect, decoded)
