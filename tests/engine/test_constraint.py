"""Constrained sampling on llguidance: one grammar state per sequence, as a token mask over numpy logits.

Runs on the packaged Llama 3 vocabulary (no weights) for the constraint itself, and on the tiny random-weight
GGUF through the engine: random weights are the hardest case, since nothing but the grammar shapes the output.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import numpy as np
import pytest

from llamafoundry.engine.constraint import ConstraintError, ConstraintVocab, grammar_error
from llamafoundry.engine.json_closing import LexState, json_levels_closed
from llamafoundry.engine.sampler import TokenSampler
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.errors import InvalidSamplingParams
from llamafoundry.model.gguf_builder import default_tokenizer_path
from llamafoundry.model.llamacpp import LlamaCppVocab
from llamafoundry.service.structured import schema_grammar, shortest_match_tokens
from tests.engine.test_engine_llamacpp import PROMPT, collect, run_engine, texts

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit"],
}
ASSISTANT_PROMPT = PROMPT + "<|start_header_id|>assistant<|end_header_id|>\n\n"
ANY_OBJECT = schema_grammar({"type": "object"}, "response_format")


@pytest.fixture(scope="module")
def vocab() -> LlamaCppVocab:
    return LlamaCppVocab(default_tokenizer_path())


@pytest.fixture(scope="module")
def constraints(vocab: LlamaCppVocab) -> ConstraintVocab:
    return ConstraintVocab(vocab)  # a vocabulary has every part of a runner the constraint reads


def lark(text: str) -> str:
    return str(llguidance.LLMatcher.grammar_from_lark(text))


def tokens_of(vocab: LlamaCppVocab, text: str) -> list[int]:
    return vocab.tokenize(text, add_bos=False, parse_special=False)


def test_the_mask_allows_exactly_the_continuations_of_a_match(
    vocab: LlamaCppVocab, constraints: ConstraintVocab
) -> None:
    constraint = constraints.compile(lark('start: "{\\"ok\\": " ("true" | "false") "}"'))
    for token in tokens_of(vocab, '{"ok": '):
        assert constraint.allows(token)
        constraint.accept(token)
    assert constraint.allows(tokens_of(vocab, "true")[0])
    assert not constraint.allows(tokens_of(vocab, "null")[0])
    masked = constraint.mask(np.zeros(vocab.vocab_size, dtype=np.float32))
    allowed = {vocab.token_bytes(int(t), True).decode() for t in np.flatnonzero(np.isfinite(masked))}
    assert allowed and all("true}".startswith(a) or "false}".startswith(a) for a in allowed)
    assert {"true", "false"} <= allowed


def test_mask_keeps_the_input_and_allows_every_end_token_once_complete(
    vocab: LlamaCppVocab, constraints: ConstraintVocab
) -> None:
    constraint = constraints.compile(lark('start: "hi"'))
    logits = np.arange(vocab.vocab_size, dtype=np.float32)
    before = logits.copy()
    assert not any(constraint.allows(t) for t in vocab.eog_token_ids)  # nothing written yet: no end
    constraint.mask(logits)
    np.testing.assert_array_equal(logits, before)
    constraint.accept(tokens_of(vocab, "hi")[0])
    done = np.flatnonzero(np.isfinite(constraint.mask(logits)))
    assert set(done.tolist()) == vocab.eog_token_ids  # <|eot_id|> as well as <|end_of_text|>
    assert all(constraint.allows(t) for t in vocab.eog_token_ids)


def test_a_clone_walks_on_its_own(vocab: LlamaCppVocab, constraints: ConstraintVocab) -> None:
    constraint = constraints.compile(lark('start: "a" ("b" | "c")'))
    constraint.accept(tokens_of(vocab, "a")[0])
    fork = constraint.clone()
    constraint.accept(tokens_of(vocab, "b")[0])
    assert fork.allows(tokens_of(vocab, "c")[0])  # the original's "b" did not move the fork
    assert not constraint.allows(tokens_of(vocab, "c")[0])


def test_a_compiled_grammar_is_reused_from_its_start(vocab: LlamaCppVocab, constraints: ConstraintVocab) -> None:
    grammar = lark('start: "x" "y"')
    first = constraints.compile(grammar)
    first.accept(tokens_of(vocab, "x")[0])
    again = constraints.compile(grammar)  # the cached prototype, not the state the first one reached
    assert again.allows(tokens_of(vocab, "x")[0]) and not again.allows(tokens_of(vocab, "y")[0])


def test_control_tokens_are_never_allowed_inside_constrained_text(
    vocab: LlamaCppVocab, constraints: ConstraintVocab
) -> None:
    constraint = constraints.compile(schema_grammar({"type": "string"}, "schema"))
    constraint.accept(tokens_of(vocab, '"')[0])
    control = 128010  # <|python_tag|> in Llama 3.1 (a reserved special token in the packaged Llama 3 tokenizer)
    assert vocab.is_control(control) and control not in vocab.eog_token_ids
    assert not constraint.allows(control)
    assert not np.isfinite(constraint.mask(np.zeros(vocab.vocab_size, dtype=np.float32))[control])


def test_a_refused_token_or_grammar_raises(vocab: LlamaCppVocab, constraints: ConstraintVocab) -> None:
    assert "(" in grammar_error(lark("start: ("))
    with pytest.raises(ConstraintError):
        constraints.compile(lark("start: ("))
    constraint = constraints.compile(lark('start: "a"'))
    with pytest.raises(ConstraintError):
        constraint.accept(tokens_of(vocab, "b")[0])


def sampled(vocab: LlamaCppVocab, constraints: ConstraintVocab, schema: Any, budget: int, seed: int) -> str:
    """What random logits (std 4) drawn through `schema`'s grammar write within `budget` tokens, the closing
    window sized by the schema as the service sizes it."""
    params = SamplingParams(temperature=1.0, grammar="unused", closing_tokens=shortest_match_tokens(schema))
    constraint = constraints.compile(schema_grammar(schema, "schema"))
    sampler = TokenSampler(params, seed=seed, constraint=constraint, max_new_tokens=budget)
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for _ in range(budget):
        token = sampler.sample(rng.standard_normal(vocab.vocab_size).astype(np.float32) * 4)
        if token in vocab.eog_token_ids:
            break
        sampler.accept(token)
        out.append(token)
    return b"".join(vocab.token_bytes(t, True) for t in out).decode()


def test_the_sampler_only_draws_allowed_tokens_and_closes_before_the_budget(
    vocab: LlamaCppVocab, constraints: ConstraintVocab
) -> None:
    for seed in range(3):
        jsonschema.validate(json.loads(sampled(vocab, constraints, WEATHER, 60, seed)), WEATHER)


PROFILE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "n": {"type": "integer"},
    },
    "required": ["name", "tags", "n"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("budget", [16, 20, 24, 30, 40])
def test_required_keys_are_written_out_before_a_small_budget_ends(
    vocab: LlamaCppVocab, constraints: ConstraintVocab, budget: int
) -> None:
    """Three required keys need ~20 tokens to write; a window of a quarter of the budget (8 to 10 here) left
    the output cut after '"tags": [], "' in 16 of these 30 runs. The window now holds the shortest match."""
    for seed in range(6):
        jsonschema.validate(json.loads(sampled(vocab, constraints, PROFILE, budget, seed)), PROFILE)


EVENTS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"}, "at": {"type": "string", "format": "date-time"}},
        "required": ["id", "at"],
    },
}
ADDRESSED = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}, "city": {"type": "string"}},
            "required": ["zip", "city"],
        },
    },
    "required": ["name", "age", "address"],
}


@pytest.mark.parametrize(("schema", "budget"), [(EVENTS, 60), (EVENTS, 120), (ADDRESSED, 40), (ADDRESSED, 60)])
def test_closing_finishes_the_item_it_is_in_and_writes_no_filler(
    vocab: LlamaCppVocab, constraints: ConstraintVocab, schema: dict[str, Any], budget: int
) -> None:
    """Reported: an array of objects with uuid and date-time strings ended cut inside a new item at every budget
    up to 300 tokens, and the closer wrote whitespace, the longest digits an integer allows ("-113676731707287")
    and a comma that opened one more item. It skips whitespace, ends numbers, prefers no comma, and its window
    covers finishing one item."""
    for seed in range(3):
        jsonschema.validate(json.loads(sampled(vocab, constraints, schema, budget, seed)), schema)


def test_json_levels_closed_counts_strings_objects_numbers_and_escapes() -> None:
    in_string = LexState(in_string=True)
    assert json_levels_closed('"}', in_string) == (2, LexState())
    assert json_levels_closed('\\"', in_string) == (0, in_string)
    assert json_levels_closed('{"a', LexState()) == (-2, in_string)
    assert json_levels_closed('"', LexState(in_string=True, escaped=True)) == (0, in_string)
    assert json_levels_closed("-12", LexState()) == (-1, LexState(in_number=True))  # a number is open until it ends
    assert json_levels_closed("3}", LexState(in_number=True)) == (2, LexState())
    assert json_levels_closed("5.0e-3}", LexState()) == (1, LexState())  # the number, then its object


def test_a_grammar_cannot_be_combined_with_ignore_eos() -> None:
    with pytest.raises(InvalidSamplingParams) as eos:
        SamplingParams(ignore_eos=True, grammar=ANY_OBJECT)
    assert eos.value.param == "ignore_eos"


# ---- through the engine, on the tiny random-weight model --------------------------------------------------


def outputs_of(model: Path, requests: list[dict[str, Any]], **settings: Any) -> list[dict[int, str]]:
    async def body(engine: Any) -> list[dict[int, str]]:
        results = await asyncio.gather(*(collect(engine, ASSISTANT_PROMPT, **r) for r in requests))
        return [texts(r) for r in results]

    return run_engine(model, body, ctx_size=512, parallel=8, **settings)


def test_every_choice_of_every_batched_request_matches_its_schema(tiny_model_path: Path) -> None:
    weather = schema_grammar(WEATHER, "schema")
    closing = shortest_match_tokens(WEATHER)
    requests = [
        {"grammar": weather, "closing_tokens": closing, "n": 3, "temperature": 1.0, "seed": 1, "max_tokens": 60},
        {"grammar": ANY_OBJECT, "n": 2, "temperature": 0.8, "top_p": 0.9, "seed": 2, "max_tokens": 60},
        {"grammar": weather, "closing_tokens": closing, "temperature": 0, "max_tokens": 60, "presence_penalty": 1.5},
        {"grammar": weather, "closing_tokens": closing, "n": 1, "best_of": 3, "temperature": 1.0, "seed": 5,
         "max_tokens": 60, "logprobs": True, "top_logprobs": 2},  # fmt: skip
        {"temperature": 1.0, "seed": 4, "max_tokens": 20},  # unconstrained neighbour
    ]
    weather3, object2, greedy, best, _ = outputs_of(tiny_model_path, requests)
    for text in [*weather3.values(), greedy[0], best[0]]:
        jsonschema.validate(json.loads(text), WEATHER)
    for text in object2.values():
        assert isinstance(json.loads(text), dict)
    assert len(set(weather3.values())) > 1  # each fork sampled its own way through the grammar


@pytest.mark.parametrize("budget", [24, 60])
def test_every_beam_of_a_constrained_beam_search_is_complete_json(tiny_model_path: Path, budget: int) -> None:
    """Beam search was refused with a grammar; each beam now walks its own grammar state and closes in time."""
    schema = {**WEATHER, "required": ["city", "unit", "days"]}
    request = {"grammar": schema_grammar(schema, "schema"), "closing_tokens": shortest_match_tokens(schema),
               "use_beam_search": True, "best_of": 3, "n": 2, "temperature": 0, "max_tokens": budget}  # fmt: skip
    (beams,) = outputs_of(tiny_model_path, [request])
    assert sorted(beams) == [0, 1]
    for text in beams.values():
        jsonschema.validate(json.loads(text), schema)


def test_constrained_greedy_output_is_the_same_alone_batched_or_drafted(tiny_model_path: Path) -> None:
    request = {"grammar": schema_grammar(WEATHER, "schema"), "temperature": 0, "max_tokens": 40}
    alone = outputs_of(tiny_model_path, [request])[0]
    crowd = outputs_of(tiny_model_path, [request, {**request, "n": 3, "temperature": 1.0, "seed": 9}, request])
    plain = outputs_of(tiny_model_path, [request], speculative_tokens=0)[0]  # the others drafted (the default)
    assert crowd[0] == alone and crowd[2] == alone and plain == alone
    jsonschema.validate(json.loads(alone[0]), WEATHER)
