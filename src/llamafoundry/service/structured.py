"""JSON Schema -> GBNF grammar for constrained decoding (response_format and required tool calls).

The grammar comes from llama.cpp's own converter (`llama_cpp.llama_grammar`). It silently ignores what it
cannot express, so a schema is checked first and every validation keyword outside the subset below is refused
with an error that names it: whatever the grammar lets the model write then parses and validates.

The subset is checked first (`schema_subset.py`). Supported: `type` (one or a list), `enum`, `const`,
`properties`, `required`, `additionalProperties`, `items`, `prefixItems`, `minItems`, `maxItems`, `minLength`,
`maxLength`, `format` (date, time, date-time, uuid), `pattern` (anchored `^...$`, literal characters, classes and
quantifiers only), `anyOf`, `allOf` with one schema, local `$ref` into `$defs`/`definitions`, and annotations
(`title`, `description`, `default`, ...).
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import PRIMITIVE_RULES, SchemaConverter

from llamafoundry.service.schema_subset import SchemaNotSupportedError, check_refs, normalize_schema

# JSON strings may not hold raw control characters; llama.cpp's converter allows them (its `char` is [^"\\]).
_JSON_CHAR_RULE = r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def schema_grammar(schema: Any, param: str) -> str:
    """GBNF (start rule `root`) for the JSON values that validate against `schema`.

    Args:
        schema: a JSON Schema (a dict, or a boolean `true`).
        param: the request field holding it, for errors.

    Raises:
        SchemaNotSupportedError: the schema uses what the grammar cannot express.
    """
    check_refs(schema, param)
    normalized = normalize_schema(schema, param)
    converter = _JsonConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = converter.resolve_refs(normalized, "input")
        converter.visit(resolved, "")
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        raise SchemaNotSupportedError(
            param, "schema", f"{param} could not be turned into a grammar ({exc}). Simplify the schema."
        ) from None
    return converter.format_grammar()


def shortest_match_tokens(schema: Any, depth: int = 0) -> int:
    """About how many Llama 3 tokens it takes to finish a JSON value valid for `schema` from anywhere inside it:
    braces, each required key (~3 characters a token, plus quotes and colon) and its shortest value, strings of a
    `format` at their fixed length, and one item of each array (closing may begin inside one, which must then be
    finished). The closing window of a constrained output must hold at least this, or the budget ends first."""
    if not isinstance(schema, dict) or depth > _MAX_SKELETON_DEPTH:
        return 1
    if "const" in schema or schema.get("enum"):
        value = schema["const"] if "const" in schema else schema["enum"][0]
        return len(json.dumps(value)) // 3 + 1
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return min(shortest_match_tokens(option, depth + 1) for option in options)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        return 2 + sum(len(n) // 3 + 3 + shortest_match_tokens(properties.get(n, {}), depth + 1) for n in required)
    if kind == "array":
        items = max(1, int(schema.get("minItems") or 0))
        return 2 + items * (shortest_match_tokens(schema.get("items", {}), depth + 1) + 1)
    if kind == "string":
        length = _FORMAT_LENGTHS.get(str(schema.get("format")), 12 if "pattern" in schema else 0)
        return 2 + max(length, int(schema.get("minLength") or 0)) // 3
    return 1  # a number, a boolean, null, or anything


_MAX_SKELETON_DEPTH = 16  # a recursive schema's required self-reference has no finite match anyway
# characters of a string of each format the grammar knows (a pattern's unknown: ~12); hex and digits run ~2 a token
_FORMAT_LENGTHS = {"uuid": 72, "date-time": 50, "date": 20, "time": 24}


def json_object_grammar() -> str:
    """GBNF for any JSON object (`response_format: {"type": "json_object"}`)."""
    return schema_grammar(JSON_OBJECT_SCHEMA, "response_format")


def response_format_grammar(response_format: dict[str, Any] | None) -> str | None:
    """The grammar a `response_format` asks for, or None for text.

    Args:
        response_format: `{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {"schema"}}`.
    """
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return json_object_grammar()
    if kind == "json_schema":
        assert response_format is not None
        spec = response_format.get("json_schema") or {}
        return schema_grammar(spec.get("schema", {}), "response_format.json_schema.schema")
    return None


class _JsonConverter(SchemaConverter):
    """llama.cpp's converter with a `char` rule that only writes what JSON allows inside a string."""

    def _add_rule(self, name: str, rule: str) -> str:
        if name == "char" and rule == PRIMITIVE_RULES["char"].content:
            rule = _JSON_CHAR_RULE
        return str(super()._add_rule(name, rule))
