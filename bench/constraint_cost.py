"""Per-token cost of constrained decoding over the real Llama 3 vocabulary (128,256 tokens): llguidance, as the
engine runs it (`engine/constraint.py`), against llama.cpp's GBNF grammar sampler, which it replaced (issue 22).

    python bench/constraint_cost.py
    python bench/constraint_cost.py --gguf ../shared/models/llama3-tokenizer.gguf --repeats 5

Both walk the same JSON document token by token (the one `json.dumps` writes, which both grammars accept), for a
JSON schema and for free JSON (`json_object`). Per token: the full mask (every token of the vocabulary checked,
what the sampler pays when the model's own choice is refused), checking the chosen token alone (what it pays
otherwise), and advancing past it. The GBNF side is rebuilt here from llama-cpp-python's public calls, as the
engine used them before (its `LlamaCppGrammar`): control tokens blocked, then `llama_sampler_apply` over all
candidates, or over one.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp
import llguidance
import numpy as np
from llama_cpp.llama_grammar import SchemaConverter

from llamafoundry.engine.constraint import ConstraintVocab
from llamafoundry.model.gguf_builder import default_tokenizer_path
from llamafoundry.model.llamacpp import LlamaCppVocab
from llamafoundry.service.structured import schema_grammar

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "email": {"type": "string"},
        "tags": {"type": "array", "items": {"enum": ["admin", "staff", "guest"]}},
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["street", "city", "zip"],
        },
    },
    "required": ["name", "age", "email", "tags", "address"],
}
DOCUMENT = {
    "name": "Ada Lovelace",
    "age": 36,
    "email": "ada@example.org",
    "tags": ["admin", "guest"],
    "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH"},
}
CASES = {"JSON schema (5 required keys, nested)": SCHEMA, "free JSON (json_object)": {"type": "object"}}
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GbnfWalker:
    """llama.cpp's grammar sampler over numpy logits, as the engine ran it before llguidance."""

    def __init__(self, vocab: LlamaCppVocab, schema: dict[str, Any]) -> None:
        converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        converter.visit(converter.resolve_refs(schema, "input"), "")
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            vocab._vocab, converter.format_grammar().encode(), b"root"
        )
        self._blocked = np.array(
            [t for t in range(vocab.vocab_size) if vocab.is_control(t) and t not in vocab.eog_token_ids]
        )
        self._full, self._full_ref = _candidates(vocab.vocab_size)
        self._one, self._one_ref = _candidates(1)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        self._full["logit"] = logits
        self._full["logit"][self._blocked] = -np.inf
        llama_cpp.llama_sampler_apply(self._sampler, self._full_ref)
        return self._full["logit"].copy()

    def allows(self, token: int) -> bool:
        self._one["id"][0], self._one["logit"][0] = token, 0.0
        llama_cpp.llama_sampler_apply(self._sampler, self._one_ref)
        return bool(np.isfinite(self._one["logit"][0]))

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._sampler, token)


def _candidates(size: int) -> tuple[np.ndarray, Any]:
    data = np.zeros(size, dtype=_TOKEN_DATA)
    data["id"] = np.arange(size, dtype=np.int32)
    array = llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(llama_cpp.llama_token_data_p), size=size, selected=-1, sorted=False
    )
    return data, ctypes.byref(array)  # byref keeps `array` alive


def walk(make: Callable[[], Any], tokens: list[int], logits: np.ndarray) -> tuple[float, float, float]:
    """Microseconds per token: full mask, one-token check, accept. Each token must be allowed."""
    constraint = make()
    mask_s = check_s = accept_s = 0.0
    for token in tokens:
        start = time.perf_counter()
        masked = constraint.mask(logits)
        checked = time.perf_counter()
        allowed = constraint.allows(token)
        accepting = time.perf_counter()
        constraint.accept(token)
        mask_s, check_s = mask_s + checked - start, check_s + accepting - checked
        accept_s += time.perf_counter() - accepting
        assert allowed and np.isfinite(masked[token]), f"token {token} refused"
    return mask_s * 1e6 / len(tokens), check_s * 1e6 / len(tokens), accept_s * 1e6 / len(tokens)


def best_of(repeats: int, run: Callable[[], tuple[float, float, float]]) -> tuple[float, float, float]:
    results = [run() for _ in range(repeats)]
    return min(r[0] for r in results), min(r[1] for r in results), min(r[2] for r in results)


def run(args: argparse.Namespace) -> int:
    vocab = LlamaCppVocab(args.gguf)
    tokens = vocab.tokenize(json.dumps(DOCUMENT), add_bos=False, parse_special=False)
    logits = np.random.default_rng(0).standard_normal(vocab.vocab_size).astype(np.float32)
    constraints = ConstraintVocab(vocab)
    start = time.perf_counter()
    constraints.compile(schema_grammar({"type": "object"}, "x"))
    print(f"llguidance tokenizer for {vocab.vocab_size:,} tokens, built once per model: "
          f"{time.perf_counter() - start:.2f} s; document: {len(tokens)} tokens\n")  # fmt: skip
    print("| case | engine | full mask (µs/token) | check the chosen token (µs) | accept (µs) | compile (ms) |")
    print("|---|---|---|---|---|---|")
    for name, schema in CASES.items():
        grammar = schema_grammar(schema, "x")
        engines: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {  # (compile afresh, a walker)
            "llguidance": (
                lambda grammar=grammar: llguidance.LLMatcher(constraints.tokenizer, grammar),
                lambda grammar=grammar: constraints.compile(grammar),
            ),
            "llama.cpp GBNF (before)": (lambda schema=schema: GbnfWalker(vocab, schema),) * 2,
        }
        for engine, (compile_afresh, make) in engines.items():
            start = time.perf_counter()
            compile_afresh()
            compile_ms = (time.perf_counter() - start) * 1e3
            mask, check, accept = best_of(args.repeats, lambda make=make: walk(make, tokens, logits))
            print(f"| {name} | {engine} | {mask:,.0f} | {check:.1f} | {accept:.1f} | {compile_ms:.2f} |")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gguf", default=str(default_tokenizer_path()), help="a GGUF with the Llama 3 vocabulary")
    parser.add_argument("--repeats", type=int, default=3, help="walks per engine and case (the fastest counts)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
