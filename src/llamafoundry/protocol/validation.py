"""Pydantic validation errors -> one 400 that names the field (`param`), in the Azure envelope.

Pydantic locations carry union labels (`'str'`, `'list[...]'`) and discriminator tags (`'user'` in
`messages.0.user.content`); users know neither, so they are removed: `messages[0].content[1].text`.
"""

from __future__ import annotations

import re

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from llamafoundry.protocol.errors import ApiError

_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_PRIMITIVE_LABELS = frozenset({"str", "int", "bool", "float", "dict", "list", "none"})
# Containers whose items are discriminated unions: the tag follows the item index in the location.
_TAGGED_CONTAINERS = frozenset({"messages", "content"})
# Fields that are discriminated unions themselves: the tag follows the field name.
_TAGGED_FIELDS = frozenset({"response_format"})


def clean_location(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The location as the user wrote the body: union labels and discriminator tags removed."""
    labels_removed = [
        part for part in loc if isinstance(part, int) or (_FIELD_NAME.match(part) and part not in _PRIMITIVE_LABELS)
    ]
    cleaned: list[int | str] = []
    for i, part in enumerate(labels_removed):
        after_tagged_index = (
            i >= 2 and isinstance(labels_removed[i - 1], int) and labels_removed[i - 2] in _TAGGED_CONTAINERS
        )
        after_tagged_field = i == 1 and labels_removed[0] in _TAGGED_FIELDS
        if isinstance(part, str) and (after_tagged_index or after_tagged_field) and _is_tag_position(labels_removed, i):
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _is_tag_position(parts: list[int | str], i: int) -> bool:
    # The tag is the first element after `container, index`; a field of the item comes after the tag, or is
    # the last element when pydantic reports on the item itself (no tag then: the tag was unreadable).
    return i + 1 < len(parts)


def param_name(loc: tuple[int | str, ...]) -> str:
    """`('messages', 0, 'content')` -> `messages[0].content`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _describe(error: ErrorDetails, param: str) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _MISSING:
        return f"'{param}' is required."
    if kind == "union_tag_invalid":
        return f"{ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    if kind == "too_long" and "actual_length" in ctx:  # pydantic says "... at most N items after validation"
        return f"at most {ctx.get('max_length')} items are allowed, got {ctx['actual_length']}"
    message = re.sub(r"a valid dictionary or instance of \w+", "an object", error["msg"])
    message = message.replace("Input should", "it should", 1).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) <= 40):
        message += f" (got {value!r})"
    return message


_MISSING = frozenset({"missing", "union_tag_not_found"})


def _code(kinds: list[str]) -> str:
    if all(kind in _MISSING for kind in kinds):
        return "missing_required_parameter"
    if any(kind.endswith("_type") or kind.endswith("_parsing") for kind in kinds):
        return "invalid_type"
    return "invalid_value"


def validation_error(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> ApiError:
    """One 400 for all of `exc`'s errors: the first faulty field is `param`; every field is in `details`."""
    located: list[tuple[tuple[int | str, ...], ErrorDetails]] = []
    for error in exc.errors(include_url=False):
        loc = prefix + clean_location(error["loc"])
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += (str(error.get("ctx", {}).get("discriminator", "type")).strip("'"),)
        located.append((loc, error))
    # When one union member went deeper than another, the deeper error is the one that explains the fault.
    locs = {loc for loc, _ in located}
    located = [(loc, e) for loc, e in located if not any(len(o) > len(loc) and o[: len(loc)] == loc for o in locs)]

    groups: dict[tuple[int | str, ...], list[ErrorDetails]] = {}
    for loc, error in located:
        groups.setdefault(loc, []).append(error)
    details = [_detail(param_name(loc) or "body", errors) for loc, errors in groups.items()]
    first = details[0]
    return ApiError(
        400, first["code"], first["message"], first["target"], details=details if len(details) > 1 else None
    )


def _detail(param: str, errors: list[ErrorDetails]) -> dict[str, str]:
    texts = list(dict.fromkeys(_describe(e, param) for e in errors))
    if all(e["type"] in _MISSING for e in errors):
        message = texts[0]
    else:
        message = f"Invalid value for '{param}': " + "; or ".join(t.rstrip(".") for t in texts) + "."
    return {"code": _code([e["type"] for e in errors]), "message": message, "target": param}
