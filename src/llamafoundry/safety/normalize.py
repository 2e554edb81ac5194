"""Text normalisation for term matching (hard rules, custom blocklists): undo the tricks people use to slip a word
past a filter, while keeping every script readable.

`skeleton(text)` is the text as the term lists are written: Unicode NFKC (full-width and compatibility forms),
zero-width and other format characters removed, case folded, accents dropped from Latin letters only (Devanagari and
Thai vowel signs are combining marks too, and carry meaning), Cyrillic and Greek look-alikes mapped to the Latin
letters they imitate, leetspeak undone inside words that mix letters with digits or symbols ("p0rn", "s3x",
"$uicide"; a plain number such as "12" stays a number), letters spelt out one at a time rejoined ("c h i l d",
"s.e.x", "k-i-l-l"), and runs of three or more of one letter cut to one ("seeeexy").

`squeeze(text)` additionally cuts every doubled letter to one ("little" -> "litle"): term lists compare in that
form too, so "litttle" and "little" meet.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Look-alikes that render like Latin letters (Cyrillic, Greek, IPA, Latin small capitals).
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
        "ɡ": "g", "ɑ": "a", "ο": "o", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "β": "b", "η": "n", "μ": "u", "ω": "w", "ʀ": "r", "ɪ": "i", "ʏ": "y", "ᴀ": "a",
        "ᴇ": "e", "ᴏ": "o", "ᴜ": "u", "ꜱ": "s",
    }
)  # fmt: skip
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s", "!": "i",
     "|": "l", "€": "e", "+": "t"}
)  # fmt: skip
_LEET_CHARS = "0134578 9@$!|€+".replace(" ", "")
# A word that mixes letters with leet characters ("p0rn", "4ll", "$uicide"). A number followed by a unit ("12yo",
# "5pm", "3rd", "10kg") is not leetspeak: ages and measures must stay numbers.
_LEET_WORD = re.compile(rf"(?<![\w{re.escape(_LEET_CHARS)}])(?=[\w{re.escape(_LEET_CHARS)}]*[^\W\d_])"
                        rf"(?=[\w{re.escape(_LEET_CHARS)}]*[{re.escape(_LEET_CHARS)}])[\w{re.escape(_LEET_CHARS)}]+")
_LETTER_BY_LEET = re.compile(rf"[^\W\d_][{re.escape(_LEET_CHARS)}]|[{re.escape(_LEET_CHARS)}][^\W\d_]")  # a cheap test
_NUMBER_WITH_UNIT = re.compile(
    r"\d+(?:yo|y|yrs?|th|st|nd|rd|s|am|pm|k|m|kg|km|cm|mm|ml|l|g|h|hrs?|min|x|d|gb|mb|kb|tb|px|p|fps|mph|ft|in|lbs?"
    r"|oz|v|w|mg|mcg|gen|b)"
)
# Three or more single letters, each followed by the same one separator: "c h i l d", "s.e.x", "k-i-l-l", "p*o*r*n".
_SPELT = re.compile(r"(?<![^\W\d_])[^\W\d_](?P<sep>[ .\-_*·'/])(?:[^\W\d_](?P=sep))+[^\W\d_](?![^\W\d_])")
_RUN3 = re.compile(r"([^\W\d_])\1{2,}")
_RUN2 = re.compile(r"([^\W\d_])\1+")
_SPACES = re.compile(r"\s+")


def _drop_latin_accents(text: str) -> str:
    """NFD, then drop combining marks that follow a Latin base letter (é -> e; Hindi and Thai marks stay)."""
    out: list[str] = []
    base_is_latin = False
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.combining(ch):
            if not base_is_latin:
                out.append(ch)
            continue
        base_is_latin = ch < "\u0250"
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def _unleet(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.isalpha() or _NUMBER_WITH_UNIT.fullmatch(word):
        return word
    return word.translate(_LEET)


@functools.lru_cache(maxsize=2048)
def skeleton(text: str) -> str:
    """The matching form of `text` (see the module docstring). Cached: the rules, the shields and the blocklists
    of one check all read the same text."""
    if text.isascii():  # most text: no compatibility forms, format characters, accents or look-alikes to undo
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKC", text)
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
        text = _drop_latin_accents(text.casefold()).translate(_HOMOGLYPHS)
        text = text.replace("\u2019", "'").replace("\u2018", "'")
    if _LETTER_BY_LEET.search(text):
        text = _LEET_WORD.sub(_unleet, text)
    text = _SPELT.sub(lambda m: re.sub(r"[ .\-_*·'/]", "", m.group(0)), text)
    text = _RUN3.sub(r"\1", text)
    return _SPACES.sub(" ", text).strip()


def squeeze(text: str) -> str:
    """`text` with every run of one letter cut to a single letter ("little" -> "litle")."""
    return _RUN2.sub(r"\1", text)
