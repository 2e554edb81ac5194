"""Grammar-constrained sampling over llama.cpp's grammar sampler: one state per sequence, applied to numpy logits,
and the closer that ends a JSON match before its token budget. The other half of the project's llama_cpp calls
(`llamacpp.py` has the model, the vocabulary and decoding)."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np

from llamafoundry.model.json_closing import ClosingScores, LexState, closing_scores, json_levels_closed

if TYPE_CHECKING:
    from llamafoundry.model.llamacpp import LlamaCppVocab

# llama_token_data {id, logit, p} as numpy sees it: 12 bytes, no padding, like the C struct.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GrammarError(ValueError):
    """llama.cpp could not parse a GBNF grammar."""


class _Candidates:
    """A llama_token_data_array over a numpy buffer of `size` entries (reused: the engine thread is the only user)."""

    def __init__(self, size: int) -> None:
        self.data = np.zeros(size, dtype=_TOKEN_DATA)
        self.data["id"] = np.arange(size, dtype=np.int32)
        self.array = llama_cpp.llama_token_data_array(
            data=self.data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=size,
            selected=-1,
            sorted=False,
        )
        self.ref = ctypes.byref(self.array)


class GrammarVocab:
    """Per-vocabulary state shared by all grammars of one model: scratch candidates and the tokens never allowed."""

    def __init__(self, vocab: LlamaCppVocab) -> None:
        self.vocab = vocab
        self.full = _Candidates(vocab.vocab_size)
        self.one = _Candidates(1)
        # Control tokens other than end-of-generation ones never appear inside constrained output: their text
        # may match the grammar (llama.cpp matches a token by its text) but the detokenizer drops it.
        self.blocked = np.array(
            [t for t in range(vocab.vocab_size) if vocab.is_control(t) and t not in vocab.eog_token_ids],
            dtype=np.int64,
        )
        self.blocked_set = frozenset(int(t) for t in self.blocked)
        self.eog = np.array(sorted(vocab.eog_token_ids), dtype=np.int64)
        self._closing: ClosingScores | None = None

    def closing_scores(self) -> ClosingScores:
        """Per token: JSON levels (strings, objects, arrays, numbers) its text closes from each lexer state, its
        length, and whether it is whitespace. Computed once, on first use (about a second)."""
        if self._closing is None:
            self._closing = closing_scores(self.vocab.token_bytes(t, True) for t in range(self.vocab.vocab_size))
        return self._closing


class LlamaCppGrammar:
    """One sequence's position in a GBNF grammar: llama.cpp's grammar sampler applied to numpy logits.

    Satisfies `model.base.TokenConstraint`. Use from one thread; `clone()` gives an independent copy at the
    same position (a fork of the sequence). Built by `LlamaCppVocab.grammar(text)`.
    """

    def __init__(self, shared: GrammarVocab, sampler: llama_cpp.llama_sampler_p) -> None:
        self._shared = shared
        # None once close() has freed it, so a second close (from __del__) does not free it twice.
        self._sampler: llama_cpp.llama_sampler_p | None = sampler
        self._lex = LexState()  # JSON lexer state of the accepted text, for closing_token

    def allows(self, token_id: int) -> bool:
        """True when `token_id` may come next (cheap: checks one candidate)."""
        if token_id in self._shared.blocked_set:
            return False
        one = self._shared.one
        one.data["id"][0] = token_id
        one.data["logit"][0] = 0.0
        llama_cpp.llama_sampler_apply(self._sampler, one.ref)
        return bool(np.isfinite(one.data["logit"][0]))

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A float32 copy of `logits` [vocab] with every token the grammar rejects at -inf (the input is kept)."""
        full = self._shared.full
        full.data["logit"] = logits
        full.data["logit"][self._shared.blocked] = -np.inf
        llama_cpp.llama_sampler_apply(self._sampler, full.ref)
        return full.data["logit"].copy()

    def accept(self, token_id: int) -> None:
        """Advance past a generated token. End-of-generation tokens end the output and are not fed to the grammar."""
        if token_id in self._shared.vocab.eog_token_ids:
            return
        llama_cpp.llama_sampler_accept(self._sampler, token_id)
        text = self._shared.vocab.token_bytes(token_id, True).decode("utf-8", errors="replace")
        _, self._lex = json_levels_closed(text, self._lex)

    def closing_token(self, logits: np.ndarray) -> int:
        """The allowed token that brings JSON output nearest its end: an end-of-generation token once the grammar is
        complete, else one that is not only whitespace, closing the most strings, objects, arrays and numbers (then
        one without a comma, the longest, the likeliest). Greedy, not a proof of the shortest completion, but JSON
        grammars close within a few tokens this way."""
        masked = self.mask(logits)
        allowed = np.flatnonzero(np.isfinite(masked))
        if allowed.size == 0:
            return int(np.argmax(masked))
        eog = np.intersect1d(allowed, self._shared.eog)
        if eog.size:
            return int(eog[0])
        scores = self._shared.closing_scores()
        closed = scores.closed_from(self._lex)[allowed]
        # the last key sorts first: text before whitespace, the most levels closed, no comma, the longest, the likeliest
        keys = (
            -masked[allowed],
            -scores.lengths[allowed],
            scores.has_comma[allowed],
            -closed,
            scores.is_blank[allowed],
        )
        order = np.lexsort(keys)
        return int(allowed[order[0]])

    def clone(self) -> LlamaCppGrammar:
        copy = LlamaCppGrammar(self._shared, llama_cpp.llama_sampler_clone(self._sampler))
        copy._lex = self._lex
        return copy

    def close(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None

    def __del__(self) -> None:
        self.close()


def compile_grammar(vocab: LlamaCppVocab, shared: GrammarVocab, grammar: str) -> LlamaCppGrammar:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab._vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarError("llama.cpp rejected the grammar (set LLAMAFOUNDRY_LLAMA_LOG=1 to see why)")
    return LlamaCppGrammar(shared, sampler)
