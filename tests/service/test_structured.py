"""JSON Schema -> grammar: what is supported produces only valid JSON, what is not is refused by keyword.

Validity is checked the strict way: random logits (any token the grammar allows may come) drive llama.cpp's
grammar sampler over the real Llama 3 vocabulary, and every output must parse and validate with `jsonschema`.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import numpy as np
import pytest

from llamafoundry.engine.sampler import TokenSampler
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.model.gguf_builder import default_tokenizer_path
from llamafoundry.model.llamacpp import LlamaCppVocab
from llamafoundry.service.structured import (
    SchemaNotSupportedError,
    json_object_grammar,
    response_format_grammar,
    schema_grammar,
)

SUPPORTED: list[dict[str, Any]] = [
    {"type": "object"},
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 12, "description": "annotations are fine"},
            "age": {"type": "integer"},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "nothing": {"type": "null"},
            "maybe": {"type": ["string", "null"], "maxLength": 5},
        },
        "required": ["name", "age", "ok"],
        "additionalProperties": False,
        "title": "Person",
    },
    {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"enum": ["a", "b", 3, None]}, "minItems": 1, "maxItems": 3},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"const": "x"}]},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
            "when": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
        },
        "required": ["tags", "pair", "code", "when", "id"],
    },
    {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/Point"},
            "b": {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}], "default": None},
            "c": {"allOf": [{"$ref": "#/$defs/Point"}], "description": "pydantic v1 style"},
            "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["a", "b", "c", "extra"],
    },
    {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 4},
    {"enum": ["red", "green"]},
]

REFUSED = [
    ({"type": "integer", "minimum": 0}, "minimum"),
    ({"type": "number", "exclusiveMaximum": 1}, "exclusiveMaximum"),
    ({"type": "integer", "multipleOf": 2}, "multipleOf"),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf"),
    ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "not"),
    ({"if": {}, "then": {}}, "if"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties"),
    ({"type": "object", "minProperties": 1}, "minProperties"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "array", "contains": {"type": "string"}}, "contains"),
    ({"type": "string", "format": "email"}, "format"),
    ({"type": "string", "pattern": "^.+$"}, "pattern"),
    ({"type": "string", "pattern": "[a-z]+"}, "pattern"),
    ({"type": "string", "pattern": "^\\d+$"}, "pattern"),
    ({"type": "string", "pattern": "^[^a]$"}, "pattern"),
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, "maxLength"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "required"),
    ({"allOf": [{"type": "string"}, {"maxLength": 2}]}, "allOf"),
    ({"anyOf": [{"type": "string"}], "maxLength": 2}, "anyOf"),
    ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ({"type": "date"}, "type"),
]


@pytest.fixture(scope="module")
def vocab() -> LlamaCppVocab:
    return LlamaCppVocab(default_tokenizer_path())


def random_outputs(vocab: LlamaCppVocab, grammar_text: str, count: int, max_tokens: int = 80) -> list[str]:
    """Outputs of random logits pushed through the grammar, each closed within its token budget."""
    outputs = []
    for seed in range(count):
        params = SamplingParams(temperature=1.0, grammar=grammar_text)
        sampler = TokenSampler(params, seed, constraint=vocab.grammar(grammar_text), max_new_tokens=max_tokens)
        rng = np.random.default_rng(seed)
        pieces = []
        for _ in range(max_tokens):
            token = sampler.sample(rng.standard_normal(vocab.vocab_size).astype(np.float32) * 3)
            if token in vocab.eog_token_ids:
                break
            sampler.accept(token)
            pieces.append(vocab.token_bytes(token, True))
        else:
            pytest.fail(f"the output did not end within {max_tokens} tokens: {b''.join(pieces)!r}")
        outputs.append(b"".join(pieces).decode("utf-8"))
    return outputs


@pytest.mark.parametrize("schema", SUPPORTED, ids=range(len(SUPPORTED)))
def test_whatever_the_grammar_lets_through_validates(vocab: LlamaCppVocab, schema: dict[str, Any]) -> None:
    for text in random_outputs(vocab, schema_grammar(schema, "schema"), count=4):
        jsonschema.validate(json.loads(text), schema)


def test_json_object_is_any_object_and_strings_never_hold_raw_control_characters(vocab: LlamaCppVocab) -> None:
    for text in random_outputs(vocab, json_object_grammar(), count=6):
        assert isinstance(json.loads(text), dict)  # json.loads refuses raw control characters in strings


@pytest.mark.parametrize(("schema", "keyword"), REFUSED, ids=[k for _, k in REFUSED])
def test_what_the_grammar_cannot_enforce_is_refused_by_keyword(schema: dict[str, Any], keyword: str) -> None:
    with pytest.raises(SchemaNotSupportedError) as caught:
        schema_grammar({"type": "object", "properties": {"v": schema}, "required": ["v"]}, "response_format")
    assert caught.value.keyword == keyword and caught.value.param == "response_format"
    assert f"'{keyword}'" in caught.value.message and "response_format.properties.v" in caught.value.message


def test_response_formats() -> None:
    assert response_format_grammar(None) is None and response_format_grammar({"type": "text"}) is None
    assert response_format_grammar({"type": "json_object"}) == json_object_grammar()
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": [1, 2]}, "strict": True}}
    assert response_format_grammar(fmt) == schema_grammar({"enum": [1, 2]}, "x")
    with pytest.raises(SchemaNotSupportedError) as caught:
        response_format_grammar({"type": "json_schema", "json_schema": {"name": "x", "schema": {"minimum": 1}}})
    assert caught.value.param == "response_format.json_schema.schema"


def test_recursive_and_dangling_refs_are_refused_with_what_to_do() -> None:
    """A tree schema got "could not be turned into a grammar ('#/$defs/node')", a dangling $ref a dump of the
    converter's internals."""
    tree = {
        "$defs": {"node": {"type": "object", "properties": {"children": {"type": "array",
                                                                          "items": {"$ref": "#/$defs/node"}}}}},
        "$ref": "#/$defs/node",
    }  # fmt: skip
    with pytest.raises(SchemaNotSupportedError) as caught:
        schema_grammar(tree, "response_format.json_schema.schema")
    assert caught.value.keyword == "$ref" and "refers to itself" in caught.value.message
    with pytest.raises(SchemaNotSupportedError) as caught:
        schema_grammar({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}, "schema")
    assert caught.value.keyword == "$ref" and "points to nothing" in caught.value.message
    shared = {"$defs": {"pt": {"type": "number"}}, "type": "object",
              "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"$ref": "#/$defs/pt"}}}  # fmt: skip
    assert schema_grammar(shared, "schema")  # one definition used twice is no recursion
