"""JSON Schema -> llguidance grammar: what compiles produces only valid JSON, what cannot be enforced is refused by
keyword, and a schema that asks for huge strings costs nothing to compile.

Validity is checked the strict way: random logits (any token the grammar allows may come) drive the engine's
sampler over the real Llama 3 vocabulary, and every output must parse and validate with `jsonschema` (with its
format checker, so `date`, `uuid` and the like are checked too).
"""

from __future__ import annotations

import json
import resource
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

import jsonschema
import numpy as np
import pytest
from pydantic import BaseModel, Field

from llamafoundry.engine.constraint import ConstraintVocab
from llamafoundry.engine.sampler import TokenSampler
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.model.gguf_builder import default_tokenizer_path
from llamafoundry.model.llamacpp import LlamaCppVocab
from llamafoundry.service.structured import (
    SchemaNotSupportedError,
    response_format_grammar,
    schema_grammar,
    shortest_match_tokens,
)


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(max_length=16)
    zip: Annotated[str, Field(pattern=r"^[0-9]{5}$")]


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Person(BaseModel):
    """What application code sends: Pydantic's schema, with $defs, a discriminated union (oneOf), bounds, enums."""

    name: str = Field(min_length=1, max_length=12)
    age: int = Field(ge=0, lt=150)
    score: float = Field(gt=0, le=1)
    step: int = Field(multiple_of=5, ge=-20, le=20)
    color: Color
    pet: Cat | Dog = Field(discriminator="kind")
    nick: str | None = Field(default=None, max_length=8)
    tags: list[str] = Field(default_factory=list, max_length=2)
    address: Address
    born: date
    id: UUID
    version: Literal[2]


class Shape(BaseModel):
    """A plain union (anyOf) of objects and a recursive model."""

    part: Cat | Dog | None
    children: list[Shape] = Field(default_factory=list, max_length=1)


SUPPORTED: list[Any] = [
    Person.model_json_schema(),
    Shape.model_json_schema(),
    {"type": "object"},
    {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"const": "x"}], "items": False},
    {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "minimum": 100}]},
    {"type": "object", "additionalProperties": {"type": "integer", "maximum": -1}, "maxProperties": 2},
    {"enum": ["red", 3, None, {"a": [1]}]},
    True,
]
REFUSED = [
    ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "not"),
    ({"if": {"type": "string"}, "then": {"maxLength": 2}}, "if"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "array", "contains": {"type": "string"}}, "contains"),
    ({"type": "string", "format": "credit-card"}, "format"),
    ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}, "oneOf"),  # overlapping options
]
WRONG = [
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}, "$ref"),
    ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ({"type": "string", "pattern": "(a|b"}, "pattern"),
    ({"type": "date"}, "type"),
    ({"type": "integer", "minimum": 10, "maximum": 1}, "schema"),
    (False, "schema"),
]


@pytest.fixture(scope="module")
def vocab() -> LlamaCppVocab:
    return LlamaCppVocab(default_tokenizer_path())


@pytest.fixture(scope="module")
def constraints(vocab: LlamaCppVocab) -> ConstraintVocab:
    return ConstraintVocab(vocab)


def random_outputs(vocab: LlamaCppVocab, constraints: ConstraintVocab, schema: Any, count: int) -> list[str]:
    """Outputs of random logits pushed through the schema's grammar, each closed within its token budget."""
    outputs, budget = [], 160
    grammar = schema_grammar(schema, "schema")
    for seed in range(count):
        params = SamplingParams(temperature=1.0, grammar=grammar, closing_tokens=shortest_match_tokens(schema))
        sampler = TokenSampler(params, seed, constraint=constraints.compile(grammar), max_new_tokens=budget)
        rng = np.random.default_rng(seed)
        pieces = []
        for _ in range(budget):
            token = sampler.sample(rng.standard_normal(vocab.vocab_size).astype(np.float32) * 3)
            if token in vocab.eog_token_ids:
                break
            sampler.accept(token)
            pieces.append(vocab.token_bytes(token, True))
        else:
            pytest.fail(f"the output did not end within {budget} tokens: {b''.join(pieces)!r}")
        outputs.append(b"".join(pieces).decode("utf-8"))
    return outputs


@pytest.mark.parametrize("schema", SUPPORTED, ids=range(len(SUPPORTED)))
def test_whatever_the_grammar_lets_through_validates(
    vocab: LlamaCppVocab, constraints: ConstraintVocab, schema: Any
) -> None:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for text in random_outputs(vocab, constraints, schema, count=4):
        jsonschema.validate(json.loads(text), schema, format_checker=checker)


def test_person_outputs_are_pydantic_models(vocab: LlamaCppVocab, constraints: ConstraintVocab) -> None:
    for text in random_outputs(vocab, constraints, Person.model_json_schema(), count=3):
        person = Person.model_validate_json(text)
        assert 0 <= person.age < 150 and person.step % 5 == 0 and person.pet.kind in ("cat", "dog")


def test_json_is_compact_and_strings_never_hold_raw_control_characters(
    vocab: LlamaCppVocab, constraints: ConstraintVocab
) -> None:
    for text in random_outputs(vocab, constraints, {"type": "object"}, count=6):
        value = json.loads(text)  # json.loads refuses raw control characters in strings
        assert isinstance(value, dict) and "\n" not in text.replace("\\n", "")


@pytest.mark.parametrize(("schema", "keyword"), REFUSED, ids=[k for _, k in REFUSED])
def test_what_the_grammar_cannot_enforce_is_refused_by_keyword(schema: Any, keyword: str) -> None:
    with pytest.raises(SchemaNotSupportedError) as caught:
        schema_grammar({"type": "object", "properties": {"v": schema}, "required": ["v"]}, "response_format")
    assert caught.value.is_unsupported and caught.value.keyword == keyword
    assert caught.value.param == "response_format" and f"'{keyword}'" in caught.value.message


@pytest.mark.parametrize(("schema", "keyword"), WRONG, ids=[str(k) for _, k in WRONG])
def test_a_wrong_schema_is_refused_saying_what_is_wrong(schema: Any, keyword: str) -> None:
    with pytest.raises(SchemaNotSupportedError) as caught:
        schema_grammar(schema, "response_format.json_schema.schema")
    assert not caught.value.is_unsupported and caught.value.keyword == keyword
    assert caught.value.message.startswith("response_format.json_schema.schema ")


def test_deep_nesting_is_refused_not_a_crash() -> None:
    """A json_schema nested about 300 levels deep was a 500 (Python's recursion limit in the schema checker);
    handed to llguidance as it is, 20,000 levels crash the process (its dict conversion recurses)."""
    for depth in (300, 20_000):
        schema: dict[str, Any] = {"type": "string"}
        for _ in range(depth):
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        with pytest.raises(SchemaNotSupportedError) as caught:
            schema_grammar(schema, "response_format.json_schema.schema")
        assert not caught.value.is_unsupported and "less deeply" in caught.value.message
    assert schema_grammar(Shape.model_json_schema(), "schema")  # a recursive $ref is no depth


@pytest.mark.parametrize("schema", [{"type": "string", "minLength": 1_000_000_000}, {"maxLength": 10_000_000}])
def test_huge_string_bounds_compile_in_bounded_memory(
    vocab: LlamaCppVocab, constraints: ConstraintVocab, schema: dict[str, Any]
) -> None:
    """The issue's schema bomb: llama.cpp's converter wrote a rule per character (22 GB for minLength 1e9, an 80 MB
    grammar for maxLength 1e7). llguidance builds lexer states only as the output reaches them."""
    grammar = schema_grammar({"type": "string", **schema}, "response_format.json_schema.schema")
    assert len(grammar) < 10_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    constraint = constraints.compile(grammar)
    logits = np.zeros(vocab.vocab_size, dtype=np.float32)
    for _ in range(64):  # steps through the string: each builds only the states it reaches
        token = int(np.argmax(constraint.mask(logits)))
        constraint.accept(token)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


def test_response_formats() -> None:
    assert response_format_grammar(None) is None and response_format_grammar({"type": "text"}) is None
    assert response_format_grammar({"type": "json_object"}) == schema_grammar({"type": "object"}, "x")
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": [1, 2]}, "strict": True}}
    assert response_format_grammar(fmt) == schema_grammar({"enum": [1, 2]}, "x")
    with pytest.raises(SchemaNotSupportedError) as caught:
        response_format_grammar({"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}})
    assert caught.value.param == "response_format.json_schema.schema"


def test_shortest_match_estimates() -> None:
    profile = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                       "n": {"type": "integer"}},
        "required": ["name", "tags", "n"],
    }  # fmt: skip
    assert shortest_match_tokens({"type": "object"}) == 2
    # braces; name, tags, n: key + quotes and colon + shortest value (an array with one item: closing may begin
    # inside it)
    assert shortest_match_tokens(profile) == 2 + (1 + 3 + 2) + (1 + 3 + 2 + 3) + (0 + 3 + 1)
    uuids = {"type": "array", "items": {"type": "string", "format": "uuid"}}
    assert shortest_match_tokens(uuids) == 2 + (2 + 72 // 3) + 1  # a uuid runs ~2 characters a token
    assert shortest_match_tokens({"anyOf": [{"type": "string"}, {"type": "null"}]}) == 1
    assert shortest_match_tokens({"type": "array", "minItems": 2, "items": {"type": "integer"}}) == 6
