"""Custom blocklists, as Azure AI Content Safety offers them: named lists of exact terms and regular expressions
whose match blocks a prompt or a completion, reported as `custom_blocklists: [{"filtered": true, "id": LIST}]`.

Scope: a list belongs to a deployment today (stored in its settings under `content_safety.blocklists`); the
policy of a deployment is given the lists in force for it (`SafetyPolicy.blocklists`), so lists of a wider scope
(a project) can later be added to that tuple without changing matching or reporting.

Matching:
- an exact term matches whole words, case-insensitively, in the text and in its `normalize.skeleton` form, so
  leetspeak, homoglyphs, accents and spelt-out letters do not get around it ("Fo0 B4r" matches "foo bar");
- a regular expression is compiled by RE2 (google-re2), a linear-time engine: no pattern can make a check take
  more than time proportional to the text, so a customer's pattern cannot stall the server (Python's `re`
  backtracks: `(a+)+$` on 30 "a"s and a "b" takes minutes). RE2 rejects what it cannot run in linear time
  (backreferences, lookaround) at creation, with its reason; patterns are case-insensitive, limited to 1,000
  characters and to RE2's memory budget. Regexes see the text and its skeleton, like terms.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2  # type: ignore[import-untyped]

from llamafoundry.safety.normalize import skeleton

MAX_ITEMS = 10_000  # Azure's limit per list
MAX_PATTERN_CHARS = 1000
MAX_TERM_CHARS = 128  # Azure's limit for an item
_LIST_ID = re.compile(r"^[0-9A-Za-z._~-]{1,64}$")  # the characters Azure allows in a blocklist name
_RE2_MAX_MEM = 8 << 20


class BlocklistError(ValueError):
    """A blocklist or item that cannot be stored; the message says what to change."""


@dataclass(frozen=True)
class BlocklistItem:
    """One entry: an exact term, or (is_regex) an RE2 regular expression."""

    pattern: str
    is_regex: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "is_regex": self.is_regex}


@dataclass(frozen=True)
class Blocklist:
    """A named list of items. `id` is reported in annotations, as Azure reports a list's name."""

    id: str
    items: tuple[BlocklistItem, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "description": self.description, "items": [i.to_dict() for i in self.items]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Blocklist:
        unknown = set(data) - {"id", "description", "items"}
        if unknown:
            raise BlocklistError(f"unknown blocklist field(s): {', '.join(sorted(unknown))}.")
        items = tuple(item_from_dict(i) for i in data.get("items") or [])
        return validated(cls(str(data["id"]), items, str(data.get("description") or "")))

    def matches(self, text: str) -> bool:
        return _matcher(self.items).matches(text)


def item_from_dict(data: Mapping[str, Any]) -> BlocklistItem:
    if isinstance(data, str):
        return BlocklistItem(data)
    unknown = set(data) - {"pattern", "is_regex"}
    if unknown:
        raise BlocklistError(f"unknown blocklist item field(s): {', '.join(sorted(unknown))}; use pattern, is_regex.")
    return BlocklistItem(str(data["pattern"]), bool(data.get("is_regex", False)))


def validated(blocklist: Blocklist) -> Blocklist:
    """`blocklist` if it can be stored and matched.

    Raises:
        BlocklistError: a bad name, too many items, an empty or overlong term, or a regex RE2 cannot run.
    """
    if not _LIST_ID.match(blocklist.id):
        raise BlocklistError(
            f"blocklist name {blocklist.id!r}: use 1-64 characters from 0-9, A-Z, a-z, '-', '.', '_' and '~'."
        )
    if len(blocklist.items) > MAX_ITEMS:
        raise BlocklistError(f"blocklist {blocklist.id}: at most {MAX_ITEMS} items per list.")
    for item in blocklist.items:
        check_item(item)
    return blocklist


def check_item(item: BlocklistItem) -> None:
    """Raises BlocklistError when `item` cannot be matched (the message says why and what to do)."""
    if not item.pattern.strip():
        raise BlocklistError("a blocklist item must not be empty.")
    if not item.is_regex:
        if len(item.pattern) > MAX_TERM_CHARS:
            raise BlocklistError(f"blocklist term {item.pattern[:40]!r}...: at most {MAX_TERM_CHARS} characters.")
        return
    if len(item.pattern) > MAX_PATTERN_CHARS:
        raise BlocklistError(f"regular expression {item.pattern[:40]!r}...: at most {MAX_PATTERN_CHARS} characters.")
    try:
        _compile_regex(item.pattern)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise BlocklistError(
            f"regular expression {item.pattern!r} is not accepted: {reason}. Patterns run on RE2 (linear time): "
            "backreferences and lookaround are not supported; rewrite it without them."
        ) from None


def _compile_regex(pattern: str) -> Any:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    return re2.compile(pattern, options)


class _Matcher:
    """Compiled form of a list's items: one RE2 alternation of the whole-word terms, and the regexes."""

    def __init__(self, items: Sequence[BlocklistItem]) -> None:
        terms = sorted({skeleton(i.pattern) for i in items if not i.is_regex} - {""})
        alternation = "|".join(re.escape(t) for t in terms)
        self._terms = _compile_regex(rf"(?:^|[^\pL\pN_])(?:{alternation})(?:$|[^\pL\pN_])") if terms else None
        self._regexes = [_compile_regex(i.pattern) for i in items if i.is_regex]

    def matches(self, text: str) -> bool:
        forms = _forms(text)
        if self._terms is not None and any(self._terms.search(f) for f in forms):
            return True
        return any(r.search(f) for r in self._regexes for f in forms)


@functools.lru_cache(maxsize=256)
def _matcher(items: tuple[BlocklistItem, ...]) -> _Matcher:
    return _Matcher(items)


@functools.lru_cache(maxsize=1024)
def _forms(text: str) -> tuple[str, ...]:
    plain = text.casefold()
    form = skeleton(text)
    return (plain,) if form == plain else (plain, form)


def matched_lists(blocklists: Iterable[Blocklist], texts: Iterable[str]) -> tuple[str, ...]:
    """The ids of the lists that match any of `texts`, in list order."""
    texts = [t for t in texts if t]
    return tuple(b.id for b in blocklists if any(b.matches(t) for t in texts))


def load_blocklist_file(path: Path) -> Blocklist:
    """A list from a text file (`serve --content-safety-blocklist FILE`): one term per line, `re:` starts a
    regular expression, `#` a comment; the list's name is the file's stem.

    Raises:
        FileNotFoundError: no such file. BlocklistError: an item or name that cannot be used (the line is named).
    """
    if not path.is_file():
        raise FileNotFoundError(f"--content-safety-blocklist {path}: no such file. Pass a text file, one term a line.")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        item = BlocklistItem(line[3:].strip(), True) if line.startswith("re:") else BlocklistItem(line)
        try:
            check_item(item)
        except BlocklistError as exc:
            raise BlocklistError(f"{path}:{number}: {exc}") from None
        items.append(item)
    return validated(Blocklist(path.stem, tuple(items)))
