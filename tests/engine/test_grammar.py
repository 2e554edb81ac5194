"""Grammar-constrained sampling: llama.cpp's grammar sampler over numpy logits, one state per sequence.

Runs on the packaged Llama 3 vocabulary (no weights) for the constraint itself, and on the tiny random-weight
GGUF through the engine: random weights are the hardest case, since nothing but the grammar shapes the output.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from llamafoundry.engine.sampler import TokenSampler
from llamafoundry.engine.sampling_params import InvalidSamplingParams, SamplingParams
from llamafoundry.model.gguf_builder import default_tokenizer_path
from llamafoundry.model.json_closing import LexState, json_levels_closed
from llamafoundry.model.llamacpp import LlamaCppVocab
from llamafoundry.model.llamacpp_grammar import GrammarError
from llamafoundry.service.structured import json_object_grammar, schema_grammar, shortest_match_tokens
from tests.engine.test_engine_llamacpp import PROMPT, collect, run_engine, texts

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit"],
}
ASSISTANT_PROMPT = PROMPT + "<|start_header_id|>assistant<|end_header_id|>\n\n"


@pytest.fixture(scope="module")
def vocab() -> LlamaCppVocab:
    return LlamaCppVocab(default_tokenizer_path())


def tokens_of(vocab: LlamaCppVocab, text: str) -> list[int]:
    return vocab.tokenize(text, add_bos=False, parse_special=False)


def test_the_grammar_allows_exactly_the_continuations_of_a_match(vocab: LlamaCppVocab) -> None:
    grammar = vocab.grammar('root ::= "{\\"ok\\": " ("true" | "false") "}"')
    for token in tokens_of(vocab, '{"ok": '):
        assert grammar.allows(token)
        grammar.accept(token)
    assert grammar.allows(tokens_of(vocab, "true")[0])
    assert not grammar.allows(tokens_of(vocab, "null")[0])
    masked = grammar.mask(np.zeros(vocab.vocab_size, dtype=np.float32))
    allowed = {vocab.token_bytes(int(t), True).decode() for t in np.flatnonzero(np.isfinite(masked))}
    assert allowed and all("true}".startswith(a) or "false}".startswith(a) for a in allowed)
    assert {"true", "false"} <= allowed


def test_mask_leaves_the_input_untouched_and_ends_with_end_of_generation(vocab: LlamaCppVocab) -> None:
    grammar = vocab.grammar('root ::= "hi"')
    logits = np.arange(vocab.vocab_size, dtype=np.float32)
    before = logits.copy()
    grammar.mask(logits)
    np.testing.assert_array_equal(logits, before)
    grammar.accept(tokens_of(vocab, "hi")[0])
    done = np.flatnonzero(np.isfinite(grammar.mask(logits)))
    assert set(done.tolist()) <= vocab.eog_token_ids and done.size > 0


def test_a_clone_walks_on_its_own(vocab: LlamaCppVocab) -> None:
    grammar = vocab.grammar('root ::= "a" ("b" | "c")')
    grammar.accept(tokens_of(vocab, "a")[0])
    fork = grammar.clone()
    grammar.accept(tokens_of(vocab, "b")[0])
    assert fork.allows(tokens_of(vocab, "c")[0])  # the original's "b" did not move the fork
    assert not grammar.allows(tokens_of(vocab, "c")[0])


def test_control_tokens_are_never_allowed_inside_constrained_text(vocab: LlamaCppVocab) -> None:
    grammar = vocab.grammar('root ::= "\\"" [^"]* "\\""')
    grammar.accept(tokens_of(vocab, '"')[0])
    control = 128010  # <|python_tag|> in Llama 3.1 (a reserved special token in the packaged Llama 3 tokenizer)
    assert vocab.is_control(control) and control not in vocab.eog_token_ids
    assert not grammar.allows(control)
    assert not np.isfinite(grammar.mask(np.zeros(vocab.vocab_size, dtype=np.float32))[control])


def test_a_grammar_that_does_not_parse_raises(vocab: LlamaCppVocab) -> None:
    with pytest.raises(GrammarError):
        vocab.grammar("root ::= (")


def test_the_sampler_only_draws_allowed_tokens_and_closes_before_the_budget(vocab: LlamaCppVocab) -> None:
    grammar = vocab.grammar(schema_grammar(WEATHER, "schema"))
    params = SamplingParams(temperature=1.0, grammar="unused")
    sampler = TokenSampler(params, seed=3, constraint=grammar, max_new_tokens=60)
    rng = np.random.default_rng(0)
    out: list[int] = []
    for _ in range(60):
        token = sampler.sample(rng.standard_normal(vocab.vocab_size).astype(np.float32) * 4)
        if token in vocab.eog_token_ids:
            break
        sampler.accept(token)
        out.append(token)
    text = b"".join(vocab.token_bytes(t, True) for t in out).decode()
    jsonschema.validate(json.loads(text), WEATHER)


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
def test_required_keys_are_written_out_before_a_small_budget_ends(vocab: LlamaCppVocab, budget: int) -> None:
    """Three required keys need ~20 tokens to write; a window of a quarter of the budget (8 to 10 here) left
    the output cut after '"tags": [], "' in 16 of these 30 runs. The window now holds the shortest match."""
    for seed in range(6):
        jsonschema.validate(json.loads(closed_output(vocab, PROFILE, budget, seed)), PROFILE)


def closed_output(vocab: LlamaCppVocab, schema: dict[str, Any], budget: int, seed: int) -> str:
    """What random logits (std 4) drawn through `schema`'s grammar write within `budget` tokens, the closing
    window sized by the schema as the service sizes it."""
    params = SamplingParams(temperature=1.0, grammar="unused", closing_tokens=shortest_match_tokens(schema))
    grammar = vocab.grammar(schema_grammar(schema, "schema"))
    sampler = TokenSampler(params, seed=seed, constraint=grammar, max_new_tokens=budget)
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for _ in range(budget):
        token = sampler.sample(rng.standard_normal(vocab.vocab_size).astype(np.float32) * 4)
        if token in vocab.eog_token_ids:
            break
        sampler.accept(token)
        out.append(token)
    return b"".join(vocab.token_bytes(t, True) for t in out).decode()


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
    vocab: LlamaCppVocab, schema: dict[str, Any], budget: int
) -> None:
    """Reported: an array of objects with uuid and date-time strings ended cut inside a new item at every budget
    up to 300 tokens, and the closer wrote whitespace, the longest digits an integer allows ("-113676731707287")
    and a comma that opened one more item. It now skips whitespace, ends numbers, prefers no comma, and its window
    covers finishing one item."""
    for seed in range(3):
        jsonschema.validate(json.loads(closed_output(vocab, schema, budget, seed)), schema)


def test_shortest_match_estimates() -> None:
    assert shortest_match_tokens({"type": "object"}) == 2
    # braces; name, tags, n: key + quotes and colon + shortest value (an array with one item: closing may begin
    # inside it)
    assert shortest_match_tokens(PROFILE) == 2 + (1 + 3 + 2) + (1 + 3 + 2 + 3) + (0 + 3 + 1)
    uuids = {"type": "array", "items": {"type": "string", "format": "uuid"}}
    assert shortest_match_tokens(uuids) == 2 + (2 + 72 // 3) + 1  # a uuid runs ~2 characters a token
    assert shortest_match_tokens({"anyOf": [{"type": "string"}, {"type": "null"}]}) == 1
    assert shortest_match_tokens({"type": "array", "minItems": 2, "items": {"type": "integer"}}) == 6


def test_json_levels_closed_counts_strings_objects_numbers_and_escapes() -> None:
    in_string = LexState(in_string=True)
    assert json_levels_closed('"}', in_string) == (2, LexState())
    assert json_levels_closed('\\"', in_string) == (0, in_string)
    assert json_levels_closed('{"a', LexState()) == (-2, in_string)
    assert json_levels_closed('"', LexState(in_string=True, escaped=True)) == (0, in_string)
    assert json_levels_closed("-12", LexState()) == (-1, LexState(in_number=True))  # a number is open until it ends
    assert json_levels_closed("3}", LexState(in_number=True)) == (2, LexState())
    assert json_levels_closed("5.0e-3}", LexState()) == (1, LexState())  # the number, then its object


def test_grammar_cannot_be_combined_with_beam_search_or_ignore_eos() -> None:
    with pytest.raises(InvalidSamplingParams) as beam:
        SamplingParams(temperature=0, best_of=2, use_beam_search=True, grammar='root ::= "x"')
    assert beam.value.param == "use_beam_search"
    with pytest.raises(InvalidSamplingParams) as eos:
        SamplingParams(ignore_eos=True, grammar='root ::= "x"')
    assert eos.value.param == "ignore_eos"


# ---- through the engine, on the tiny random-weight model --------------------------------------------------


def outputs_of(model: Path, requests: list[dict[str, Any]]) -> list[dict[int, str]]:
    async def body(engine: Any) -> list[dict[int, str]]:
        results = await asyncio.gather(*(collect(engine, ASSISTANT_PROMPT, **r) for r in requests))
        return [texts(r) for r in results]

    return run_engine(model, body, ctx_size=512, parallel=8)


def test_every_choice_of_every_batched_request_matches_its_schema(tiny_model_path: Path) -> None:
    weather, anything = schema_grammar(WEATHER, "schema"), json_object_grammar()
    requests = [
        {"grammar": weather, "n": 3, "temperature": 1.0, "seed": 1, "max_tokens": 60},
        {"grammar": anything, "n": 2, "temperature": 0.8, "top_p": 0.9, "seed": 2, "max_tokens": 60},
        {"grammar": weather, "temperature": 0, "max_tokens": 60, "presence_penalty": 1.5},
        {"temperature": 1.0, "seed": 4, "max_tokens": 20},  # unconstrained neighbour
    ]
    weather3, object2, greedy, _ = outputs_of(tiny_model_path, requests)
    for text in [*weather3.values(), greedy[0]]:
        jsonschema.validate(json.loads(text), WEATHER)
    for text in object2.values():
        assert isinstance(json.loads(text), dict)
    assert len(set(weather3.values())) > 1  # each fork sampled its own way through the grammar


def test_constrained_greedy_output_is_the_same_alone_or_batched(tiny_model_path: Path) -> None:
    request = {"grammar": schema_grammar(WEATHER, "schema"), "temperature": 0, "max_tokens": 40}
    alone = outputs_of(tiny_model_path, [request])[0]
    crowd = outputs_of(tiny_model_path, [request, {**request, "n": 3, "temperature": 1.0, "seed": 9}, request])
    assert crowd[0] == alone and crowd[2] == alone
