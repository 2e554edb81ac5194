"""The grammar a request's `tool_choice` or `response_format` asks for: a forced call's JSON (`{"name": ...,
"parameters": {...}}` of the request's functions) or the response schema, and the closing window that lets it end
within `max_tokens`. The grammar itself is `structured.py`'s."""

from __future__ import annotations

import dataclasses
from typing import Any

from llamafoundry.service.schema_subset import normalize_schema
from llamafoundry.service.structured import response_format_grammar, schema_grammar, shortest_match_tokens
from llamafoundry.service.tools import forced_function
from llamafoundry.service.types import ChatRequest

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
_MAX_REF_DEPTH = 16


def constrain(request: ChatRequest) -> ChatRequest:
    """The request with the grammar its tool_choice or response_format asks for in its sampling params.

    A forced tool call wins over response_format (the call is the answer of this turn).

    Raises:
        SchemaNotSupportedError: a function's parameters or the response_format schema cannot become a grammar.
        InvalidSamplingParams: the grammar cannot be combined with another setting (beam search, ignore_eos).
    """
    forced = forced_function(request)
    grammar: str | None
    if forced is not None:
        only = None if forced == "*" else forced
        grammar, param = call_grammar(request.tools or [], only), "tool_choice"
        closing = _shortest_call_tokens(request.tools or [], only)
    else:
        grammar, param = response_format_grammar(request.response_format), "response_format"
        closing = shortest_match_tokens(_response_schema(request.response_format))
    if grammar is None:
        return request
    params = dataclasses.replace(request.params, grammar=grammar, grammar_param=param, closing_tokens=closing)
    return dataclasses.replace(request, params=params)


def _response_schema(response_format: dict[str, Any] | None) -> Any:
    if (response_format or {}).get("type") != "json_schema":
        return {"type": "object"}
    return ((response_format or {}).get("json_schema") or {}).get("schema", {})


def _shortest_call_tokens(tools: list[dict[str, Any]], only: str | None) -> int:
    """{"name": "<function>", "parameters": <its shortest arguments>}, for the function(s) the call may be."""
    lengths = [
        6 + len(function["name"]) // 3 + shortest_match_tokens(function.get("parameters") or EMPTY_PARAMETERS)
        for function in (tool["function"] for tool in tools)
        if only is None or function["name"] == only
    ]
    return min(lengths, default=0)


def call_grammar(tools: list[dict[str, Any]], only: str | None = None) -> str:
    """GBNF for one JSON call `{"name": ..., "parameters": {...}}` of one of `tools` (or of the function `only`)."""
    options = []
    for i, tool in enumerate(tools):
        function = tool["function"]
        if only is not None and function["name"] != only:
            continue
        param = f"tools[{i}].function.parameters"
        raw = function.get("parameters") or EMPTY_PARAMETERS
        if not function.get("strict"):
            raw = without_numeric_bounds(raw)
        parameters = normalize_schema(_inline_refs(raw, raw, 0), param)
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "parameters": parameters},
                "required": ["name", "parameters"],
            }
        )
    return schema_grammar(options[0] if len(options) == 1 else {"anyOf": options}, "tools")


NUMERIC_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> schema
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")


def without_numeric_bounds(schema: Any) -> Any:
    """The schema without `minimum`, `maximum`, `multipleOf` and the like, at every level (property names are kept,
    even one called "minimum"). A forced call of a function whose schema is not `strict` is decoded without them,
    as tool schemas are elsewhere (Pydantic's `Field(ge=1)` writes them); a grammar cannot enforce numeric ranges, so
    the application checks them, as it must for any model's arguments."""
    if isinstance(schema, list):
        return [without_numeric_bounds(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in NUMERIC_BOUNDS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: without_numeric_bounds(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS or key in _SCHEMA_VALUES:
            out[key] = without_numeric_bounds(value)
        else:
            out[key] = value
    return out


def _inline_refs(node: Any, root: Any, depth: int) -> Any:
    """Replace local `$ref`s by their targets, so a function's schema can sit inside the call's schema."""
    if isinstance(node, list):
        return [_inline_refs(item, root, depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and depth < _MAX_REF_DEPTH:
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline_refs({**target, **rest}, root, depth + 1)
    return {k: _inline_refs(v, root, depth) for k, v in node.items() if k not in ("$defs", "definitions")}
