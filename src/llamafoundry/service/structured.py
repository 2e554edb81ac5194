"""The grammar a request's `response_format` or forced tool call asks for, compiled by llguidance.

A JSON schema becomes an llguidance grammar (`LLMatcher.grammar_from_json_schema`), which follows JSON Schema
draft 2020-12: `type`, `enum`, `const`, `properties`, `required`, `additionalProperties`, `patternProperties`,
`items`, `prefixItems`, `minItems`/`maxItems`, `minLength`/`maxLength`, `pattern`, `format`, `minimum`/`maximum`
and their exclusive forms, `multipleOf`, `anyOf`, `allOf`, `oneOf` (when its options cannot overlap), local
`$ref` (recursive ones too). It refuses, naming it, any keyword it cannot enforce (`not`, `if`, `uniqueItems`,
`contains`, ...) and formats it does not know: whatever the grammar lets the model write parses and validates.
Compilation is lazy and bounded by llguidance's own limits, so checking a schema here costs microseconds whatever
its `minLength`.

Output JSON is compact (`", "` and `": "` between items, no other whitespace): a grammar that allows whitespace
everywhere lets a weak model spend its whole budget on blanks.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Any

import llguidance

from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.service.tools import forced_function
from llamafoundry.service.types import ChatRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions  # a TypedDict of the stubs only

# The layout of the JSON we write, and no `lenient` (a schema's own "x-guidance" cannot change these).
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "lenient": False,
    "coerce_one_of": False,
}
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
# Objects and arrays inside each other in one schema: llguidance parses schemas with serde_json, which stops at 128
# and whose conversion of a Python dict recurses without a limit (a crash past some thousands of levels). Generous
# for Pydantic models, which nest through $defs/$ref. The API checks it first (api/bounds.py), with the same number.
MAX_SCHEMA_DEPTH = 64
RESPONSE_SCHEMA_PARAM = "response_format.json_schema.schema"
_UNIMPLEMENTED = re.compile(r'Unimplemented keys: \["([^"]+)"')
# llguidance's message start -> the keyword at fault, for schemas it understands but finds wrong
_FAULTS = {
    "Pointer": "$ref",
    "Resource": "$ref",
    "regex parse error": "pattern",
    "Invalid type": "type",
    "recursion limit": "schema",
}


class SchemaNotSupportedError(ValueError):
    """A JSON schema that cannot become a grammar.

    Attributes:
        param: the request field holding the schema (`response_format.json_schema.schema`, ...).
        keyword: the JSON Schema keyword at fault (`"schema"` when it is the whole schema).
        message: a sentence that says what to change.
        is_unsupported: True for a valid schema with a keyword constrained decoding cannot enforce (the API's 422);
            False for a schema that is wrong (dangling `$ref`, bad `pattern`, `minimum` above `maximum`; a 400).
    """

    def __init__(self, param: str, keyword: str, message: str, is_unsupported: bool = True) -> None:
        super().__init__(message)
        self.param = param
        self.keyword = keyword
        self.message = message
        self.is_unsupported = is_unsupported


def with_grammar(request: ChatRequest, params: SamplingParams) -> SamplingParams:
    """`params` with the grammar the request's tool_choice or response_format asks for (unchanged without one).

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
        return params
    return dataclasses.replace(params, grammar=grammar, grammar_param=param, closing_tokens=closing)


def response_format_grammar(response_format: dict[str, Any] | None) -> str | None:
    """The grammar a `response_format` asks for, or None for text.

    Args:
        response_format: `{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {"schema"}}`.
    """
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return schema_grammar({"type": "object"}, "response_format")
    if kind == "json_schema":
        return schema_grammar(_response_schema(response_format), RESPONSE_SCHEMA_PARAM)
    return None


def schema_grammar(schema: Any, param: str) -> str:
    """The llguidance grammar of the JSON values that validate against `schema`.

    Args:
        schema: a JSON Schema (a dict, or a boolean).
        param: the request field holding it, for errors.

    Raises:
        SchemaNotSupportedError: the schema uses what the grammar cannot enforce, or is not a valid schema.
    """
    schema = _checked_schema(schema, param)
    try:
        grammar = str(llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS))
    except (ValueError, RecursionError) as exc:
        raise _schema_error(param, str(exc) or "nested too deeply") from None
    _check_grammar(grammar, param)
    return grammar


def call_grammar(tools: list[dict[str, Any]], only: str | None = None) -> str:
    """The grammar of one JSON call `{"name": ..., "parameters": {...}}` of one of `tools` (or of the function
    `only`), as Llama 3 writes calls. A Lark grammar with one `%json` rule per function, so each function's local
    `$ref`s resolve within its own schema."""
    options, rules = [], []
    for i, tool in enumerate(tools):
        function = tool["function"]
        if only is not None and function["name"] != only:
            continue
        param = f"tools[{i}].function.parameters"
        schema = _checked_schema(function.get("parameters") or EMPTY_PARAMETERS, param)
        schema_grammar(schema, param)  # its own errors name its tool
        start = json.dumps(f'{{"name": "{function["name"]}", "parameters": ')
        options.append(f'{start} parameters_{i} "}}"')
        rules.append(f"parameters_{i}: %json {json.dumps({**schema, 'x-guidance': JSON_OPTIONS})}")
    grammar = str(llguidance.LLMatcher.grammar_from_lark("\n".join(["start: " + " | ".join(options), *rules])))
    _check_grammar(grammar, "tools")
    return grammar


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
    if options and isinstance(options, list):
        return min(shortest_match_tokens(option, depth + 1) for option in options)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        return 2 + sum(len(n) // 3 + 3 + shortest_match_tokens(properties.get(n, {}), depth + 1) for n in required)
    if kind == "array":
        items = max(1, _int(schema.get("minItems")))
        return 2 + items * (shortest_match_tokens(schema.get("items", {}), depth + 1) + 1)
    if kind == "string":
        length = _FORMAT_LENGTHS.get(str(schema.get("format")), 12 if "pattern" in schema else 0)
        return 2 + max(length, _int(schema.get("minLength"))) // 3
    return 1  # a number, a boolean, null, or anything


_MAX_SKELETON_DEPTH = 16  # a recursive schema's required self-reference has no finite match anyway
# characters of a string of each format (a pattern's unknown: ~12); hex and digits run ~2 a token
_FORMAT_LENGTHS = {"uuid": 72, "date-time": 50, "date": 20, "time": 24}


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and value == value else 0  # not NaN


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


def _checked_schema(schema: Any, param: str) -> dict[str, Any]:
    """The schema as an object: `true` is `{}`; `false`, anything not an object, or one nested deeper than
    MAX_SCHEMA_DEPTH, is refused."""
    if schema is True:
        return {}
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise SchemaNotSupportedError(
            param,
            "schema",
            f"{param} nests objects and arrays more than {MAX_SCHEMA_DEPTH} levels deep, more than constrained "
            "decoding takes. Nest it less deeply (a recursive $ref describes a tree of any depth).",
            is_unsupported=False,
        )
    if not isinstance(schema, dict):
        raise SchemaNotSupportedError(
            param,
            "schema",
            f"{param} must be a JSON Schema object; {json.dumps(schema)[:40]} allows no output. Send an object "
            'such as {"type": "object", "properties": {...}}.',
            is_unsupported=False,
        )
    return schema


def _depth(value: Any) -> int:
    """How deep JSON containers nest in `value`, counted up to MAX_SCHEMA_DEPTH + 1 (without recursion: the value
    may be nested for ever)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_SCHEMA_DEPTH:
                stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _check_grammar(grammar: str, param: str) -> None:
    error = str(llguidance.LLMatcher.validate_grammar(grammar))
    if error:
        raise _schema_error(param, error)


def _schema_error(param: str, error: str) -> SchemaNotSupportedError:
    """llguidance's reason as an error that names the keyword and says what to do."""
    error = error.strip().splitlines()[0] if error.strip() else "not a valid schema"
    unimplemented = _UNIMPLEMENTED.search(error)
    if unimplemented or error.startswith("Unknown format"):
        keyword = unimplemented.group(1) if unimplemented else "format"
        return SchemaNotSupportedError(
            param,
            keyword,
            f"{param} uses '{keyword}', which constrained decoding cannot enforce ({error}). Remove it from the "
            "schema and check that rule in your application.",
        )
    if error.startswith("oneOf"):
        return SchemaNotSupportedError(
            param,
            "oneOf",
            f"{param} uses 'oneOf' with options a value could match more than one of, which constrained decoding "
            "cannot enforce. Use 'anyOf', or make the options exclusive (for example a 'const' tag in each).",
        )
    keyword = next((kw for start, kw in _FAULTS.items() if error.startswith(start)), "schema")
    hint = "Nest it less deeply." if keyword == "schema" and "recursion" in error else "Fix the schema."
    return SchemaNotSupportedError(
        param, keyword, f"{param} is not a schema constrained decoding can follow: {error}. {hint}", False
    )
