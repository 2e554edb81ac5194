"""The JSON Schema subset that becomes a grammar exactly (`structured.py` builds the grammar): every keyword
outside it is refused with an error that names it and says what to change, and local `$ref`s must resolve and must
not recurse."""

from __future__ import annotations

import re
from typing import Any

# Validation keywords the converter does not honour: a grammar built without them could let invalid output through.
UNSUPPORTED_KEYWORDS = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "oneOf",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "unevaluatedProperties",
        "unevaluatedItems",
        "contains",
        "minContains",
        "maxContains",
        "additionalItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "$dynamicRef",
        "$recursiveRef",
    }
)
# Keywords that only describe; they never make a value invalid.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "example",
        "$schema",
        "$id",
        "$comment",
        "$anchor",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentEncoding",
        "contentMediaType",
        "nullable",
        "strict",
    }
)
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
FORMATS = frozenset({"date", "time", "date-time", "uuid"})
_STRING_SHAPES = ("pattern", "format", "minLength", "maxLength")
# What the converter reads; everything else that is not refused is an annotation or unknown, and dropped.
_CONVERTED_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "format",
        "pattern",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
    }
)
_PATTERN_SAFE_CHARS = frozenset(" _-:,;!#%&'<=>@~/")
_PATTERN_ESCAPABLE = frozenset("[](){}|*+?.-")
_QUANTIFIER = re.compile(r"\{\d+(,\d*)?\}")


class SchemaNotSupportedError(ValueError):
    """A JSON schema that cannot become a grammar.

    Attributes:
        param: the request field holding the schema (`response_format.json_schema.schema`, ...).
        keyword: the JSON Schema keyword at fault.
        message: a sentence that says what to change.
    """

    def __init__(self, param: str, keyword: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.keyword = keyword
        self.message = message


def check_refs(schema: Any, param: str) -> None:
    """Local `$ref`s must point at something, and not back at themselves: a grammar is a fixed shape, so a
    recursive schema (a tree) cannot become one. Raises SchemaNotSupportedError naming the `$ref`."""

    def target(ref: str) -> Any:
        node: Any = schema
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def refs_in(node: Any) -> list[str]:
        if isinstance(node, list):
            return [r for item in node for r in refs_in(item)]
        if not isinstance(node, dict):
            return []
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/") else []
        return own + [r for k, v in node.items() if k not in ("$defs", "definitions") for r in refs_in(v)]

    def visit(ref: str, trail: tuple[str, ...]) -> None:
        if ref in trail:
            raise SchemaNotSupportedError(param, "$ref", f"The JSON schema $ref '{ref}' refers to itself (a "
                                          "recursive schema, such as a tree): a grammar needs a fixed depth, so "
                                          "write the nesting out as explicit levels.")  # fmt: skip
        found = target(ref)
        if not isinstance(found, dict | bool):
            raise SchemaNotSupportedError(param, "$ref", f"The JSON schema $ref '{ref}' points to nothing in "
                                          "the schema: define it under $defs.")  # fmt: skip
        for inner in refs_in(found):
            visit(inner, (*trail, ref))

    for ref in refs_in(schema):
        visit(ref, ())


# ---- the supported subset -----------------------------------------------------------------------------


def normalize_schema(schema: Any, param: str) -> dict[str, Any]:
    """A copy of `schema` in the converter's subset (type lists as anyOf, one-schema allOf inlined, `true` as {}).

    Raises:
        SchemaNotSupportedError: naming the first keyword outside the subset.
    """
    return _Checker(param, schema).visit(schema, "")


class _Checker:
    def __init__(self, param: str, root: Any) -> None:
        self.param = param
        self.root = root

    def fail(self, keyword: str, path: str, why: str) -> SchemaNotSupportedError:
        where = f"{self.param}{path}"
        return SchemaNotSupportedError(
            self.param, keyword, f"The JSON schema keyword '{keyword}' at {where} is not supported: {why}"
        )

    def visit(self, schema: Any, path: str) -> dict[str, Any]:
        if schema is True:
            return {}
        if not isinstance(schema, dict):
            raise self.fail("type", path, "a schema must be a JSON object (or true). Send an object schema.")
        for key in schema:
            if key in UNSUPPORTED_KEYWORDS:
                raise self.fail(key, path, _unsupported_reason(key))
        schema = self._inline_all_of(schema, path)
        # annotations and unknown keywords are dropped (JSON Schema ignores unknown keywords; the converter chokes)
        out = {k: v for k, v in schema.items() if k in _CONVERTED_KEYWORDS}
        self._check_type(schema, path)
        self._check_string(schema, path)
        self._check_combinators(schema, path)
        self._check_object(schema, path)
        if not _is_string_schema(schema):
            out.pop("format", None)  # int32, double...: annotations on numbers
        if "properties" in schema:
            out["properties"] = {
                name: self.visit(sub, f"{path}.properties.{name}") for name, sub in schema["properties"].items()
            }
        if isinstance(schema.get("additionalProperties"), dict):
            out["additionalProperties"] = self.visit(schema["additionalProperties"], f"{path}.additionalProperties")
        if "items" in schema:
            out["items"] = self._visit_items(schema, path)
        if "prefixItems" in schema:
            out["prefixItems"] = [
                self.visit(s, f"{path}.prefixItems[{i}]") for i, s in enumerate(schema["prefixItems"])
            ]
        if "anyOf" in schema:
            out["anyOf"] = [self.visit(s, f"{path}.anyOf[{i}]") for i, s in enumerate(schema["anyOf"])]
        for defs in ("$defs", "definitions"):
            if isinstance(schema.get(defs), dict):
                out[defs] = {name: self.visit(sub, f"{path}.{defs}.{name}") for name, sub in schema[defs].items()}
        if isinstance(out.get("type"), list):
            rest = {k: v for k, v in out.items() if k not in ("type", "$defs", "definitions")}
            defs_only = {k: v for k, v in out.items() if k in ("$defs", "definitions")}
            return {**defs_only, "anyOf": [{**rest, "type": t} for t in out["type"]]}
        return out

    def _inline_all_of(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        if "allOf" not in schema:
            return schema
        parts = schema["allOf"]
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict):
            raise self.fail("allOf", path, "only an allOf of exactly one schema is supported. Merge the schemas.")
        if set(rest) - ANNOTATIONS:
            raise self.fail("allOf", path, "allOf cannot sit beside other validation keywords. Merge them into it.")
        return {**parts[0], **rest}

    def _check_type(self, schema: dict[str, Any], path: str) -> None:
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
        for k in kinds:
            if k not in TYPES:
                raise self.fail(
                    "type", path, f"'{k}' is not a JSON Schema type; use one of {', '.join(sorted(TYPES))}."
                )
        if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
            raise self.fail("enum", path, "enum must be a non-empty list of values.")
        if schema.get("uniqueItems") is True:
            raise self.fail("uniqueItems", path, _unsupported_reason("uniqueItems"))

    def _check_string(self, schema: dict[str, Any], path: str) -> None:
        if not _is_string_schema(schema):
            return
        shapes = [k for k in _STRING_SHAPES if k in schema]
        if ("pattern" in shapes or "format" in shapes) and len(shapes) > 1:
            raise self.fail(shapes[-1], path, f"{' and '.join(shapes)} cannot be combined; keep one of them.")
        fmt = schema.get("format")
        if fmt is not None and fmt not in FORMATS:
            supported = ", ".join(sorted(FORMATS))
            raise self.fail("format", path, f"format '{fmt}' cannot be enforced; the supported ones are {supported}.")
        if "pattern" in schema:
            _check_pattern(schema["pattern"], lambda why: self.fail("pattern", path, why))

    def _check_combinators(self, schema: dict[str, Any], path: str) -> None:
        for keyword in ("anyOf", "$ref"):
            if keyword not in schema:
                continue
            siblings = set(schema) - ANNOTATIONS - {keyword, "$defs", "definitions"}
            if siblings:
                raise self.fail(
                    keyword,
                    path,
                    f"{keyword} cannot sit beside other validation keywords ({', '.join(sorted(siblings))}); "
                    f"move them into the {keyword} target.",
                )
        if "anyOf" in schema and (not isinstance(schema["anyOf"], list) or not schema["anyOf"]):
            raise self.fail("anyOf", path, "anyOf must be a non-empty list of schemas.")
        ref = schema.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
            raise self.fail("$ref", path, f"only local references such as '#/$defs/Name' are supported, not {ref!r}.")

    def _check_object(self, schema: dict[str, Any], path: str) -> None:
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise self.fail("properties", path, "properties must be an object of schemas.")
        required = schema.get("required", [])
        if not isinstance(required, list):
            raise self.fail("required", path, "required must be a list of property names.")
        missing = [str(name) for name in required if name not in properties]
        if missing:
            raise self.fail(
                "required",
                path,
                f"required names {', '.join(missing)}, which properties does not define. Define them in properties.",
            )

    def _visit_items(self, schema: dict[str, Any], path: str) -> Any:
        items = schema["items"]
        if isinstance(items, list):
            if "prefixItems" in schema:
                raise self.fail("items", path, "items as a list cannot be combined with prefixItems.")
            return [self.visit(s, f"{path}.items[{i}]") for i, s in enumerate(items)]
        if "prefixItems" in schema:
            raise self.fail("prefixItems", path, "prefixItems cannot be combined with items. Use one of them.")
        return self.visit(items, f"{path}.items")


def _is_string_schema(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind is None or kind == "string" or (isinstance(kind, list) and "string" in kind)


def _unsupported_reason(keyword: str) -> str:
    if keyword in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
        return "numeric bounds cannot be enforced while decoding. Remove it and check the range in your code."
    if keyword == "oneOf":
        return "exactly-one-of cannot be enforced while decoding. Use anyOf."
    return "the decoding grammar cannot enforce it. Remove it from the schema."


def _check_pattern(pattern: Any, fail: Any) -> None:
    """Only patterns whose every match is a valid JSON string body and that the converter translates exactly."""
    if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")) or len(pattern) < 2:
        raise fail("a pattern must be anchored as '^...$'.")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise fail(f"it is not a valid regular expression ({exc}).") from None
    body, i = pattern[1:-1], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body) or body[i + 1] not in _PATTERN_ESCAPABLE:
                raise fail("only escaped punctuation (such as \\. or \\+) is supported; write \\d as [0-9].")
            i += 2
        elif c == "[":
            end = body.find("]", i + 1)
            if end < 0 or not _is_safe_class(body[i + 1 : end]):
                raise fail("character classes may only list letters, digits, ranges such as a-z and plain punctuation.")
            i = end + 1
        elif c == "{":
            match = _QUANTIFIER.match(body, i)
            if match is None:
                raise fail("a quantifier must look like {n}, {n,} or {n,m}.")
            i = match.end()
        elif c == "(" and body.startswith("(?", i):
            raise fail("groups with (? (lookarounds, named or non-capturing groups) are not supported.")
        elif c in "()|*+?" or _is_safe_char(c):
            i += 1
        else:
            raise fail(f'the character {c!r} is not supported in a pattern (. ^ $ " and \\ are not).')


def _is_safe_char(c: str) -> bool:
    return c.isalnum() or c in _PATTERN_SAFE_CHARS or (ord(c) >= 0x80 and c.isprintable())


def _is_safe_class(members: str) -> bool:
    if not members or members.startswith("^"):
        return False
    i = 0
    while i < len(members):
        if i + 2 < len(members) and members[i + 1] == "-":
            lo, hi = members[i], members[i + 2]
            if not any(a <= lo <= hi <= b for a, b in (("a", "z"), ("A", "Z"), ("0", "9"))):
                return False
            i += 3
        elif _is_safe_char(members[i]) or members[i] in "()|*+?.{}$":
            i += 1
        else:
            return False
    return True
