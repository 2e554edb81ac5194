"""Constrained decoding: one sequence's position in a grammar as a token mask over numpy logits, on llguidance.

llguidance (the structured-output engine of llama.cpp, vLLM and SGLang) compiles a grammar lazily: a JSON
schema or Lark grammar becomes lexer and parser states only as the output reaches them, within its own limits
(`LLParserLimits`: lexer fuel per step, Earley items per step, grammar size), so no schema makes it build an
unbounded automaton up front. The mask of a step is computed from the model's token byte strings (a trie over the
vocabulary, built once per model from `ModelRunner.token_bytes`).

`ConstraintVocab` is per model; `GrammarConstraint` per sequence (a fork of a sequence gets `clone()`). Both
run on the engine thread; admission checks a grammar with `grammar_error`, which needs no vocabulary.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import llguidance
import numpy as np

from llamafoundry.engine.json_closing import ClosingScores, LexState, closing_scores, json_levels_closed
from llamafoundry.model.base import ModelRunner

_CACHE_SIZE = 64  # compiled grammars kept per model (the same tools or schema arrive with every request)
_MAX_LOOKAHEAD = 32  # first characters the closer tries one token ahead (~0.1 ms each)
_ENDS = 1 << 20  # what ending the output scores for the closer's lookahead


class ConstraintError(ValueError):
    """llguidance refused a grammar (the service validates schemas first, so this is a last line)."""


def grammar_error(grammar: str) -> str:
    """Why llguidance refuses `grammar` (its own sentence), or "" when it compiles. Cheap: no vocabulary."""
    return str(llguidance.LLMatcher.validate_grammar(grammar))


class _VocabTokenizer:
    """What `llguidance.TokenizerWrapper` reads: the model's token byte strings, its special tokens and a
    tokenize function. Control tokens are marked special: llguidance then never lets grammar text match them."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self.tokens = [runner.token_bytes(t, True) for t in range(runner.vocab_size)]
        self.special_token_ids = [t for t in range(runner.vocab_size) if runner.is_control(t)]
        self.eos_token_id = min(runner.eog_token_ids) if runner.eog_token_ids else None
        self.bos_token_id = None

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._runner.tokenize(text, add_bos=False, parse_special=False)


class ConstraintVocab:
    """Per-model state shared by the constraints of all its sequences: the llguidance tokenizer (built on first
    use: about a second for a 128k vocabulary), end-of-generation ids, the closer's per-token scores and a cache
    of compiled grammars."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.vocab_size = runner.vocab_size
        self.eog = np.array(sorted(runner.eog_token_ids), dtype=np.int64)
        self._lock = threading.RLock()  # `compile` holds it while a new constraint reads `tokenizer`
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._closing: ClosingScores | None = None
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_VocabTokenizer(self.runner)))
            return self._tokenizer

    def compile(self, grammar: str) -> GrammarConstraint:
        """A fresh constraint at the start of `grammar` (an llguidance grammar: `LLMatcher.grammar_from_*`).

        Raises:
            ConstraintError: llguidance refused it (its message says why).
        """
        tokenizer = self.tokenizer
        with self._lock:
            prototype = self._compiled.get(grammar)
            if prototype is not None:
                self._compiled.move_to_end(grammar)
                return GrammarConstraint(self, prototype.deep_copy())
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)  # lazy: builds states as output needs them
        if matcher.is_error():
            raise ConstraintError(matcher.get_error())
        with self._lock:
            self._compiled[grammar] = matcher
            if len(self._compiled) > _CACHE_SIZE:
                self._compiled.popitem(last=False)
        return GrammarConstraint(self, matcher.deep_copy())

    def closing_scores(self) -> ClosingScores:
        """Per token: JSON levels its text closes from each lexer state, its length, whether it is whitespace.
        Computed once, on the first closing (about a second for a 128k vocabulary)."""
        if self._closing is None:
            runner = self.runner
            self._closing = closing_scores(runner.token_bytes(t, True) for t in range(runner.vocab_size))
        return self._closing


class GrammarConstraint:
    """Which tokens may come next in one sequence's output. Use from one thread.

    Per generated token the sampler calls `allows(token)` on its choice and, only when that is refused,
    `mask(logits)` and samples again; then `accept(token)`. End-of-generation tokens are allowed exactly when the
    output so far is complete.
    """

    def __init__(self, vocab: ConstraintVocab, matcher: llguidance.LLMatcher) -> None:
        self._vocab = vocab
        self._matcher = matcher
        self._lex = LexState()  # JSON lexer state of the accepted text, for closing_token
        self._bits = np.zeros((vocab.tokenizer.vocab_size + 31) // 32, dtype=np.int32)

    def allows(self, token_id: int) -> bool:
        """True when `token_id` may come next (cheap: checks one token, not the vocabulary)."""
        if token_id in self._vocab.runner.eog_token_ids:
            return bool(self._matcher.is_accepting())
        return bool(self._matcher.validate_tokens([token_id]) == 1)

    def allowed(self) -> np.ndarray:
        """[vocab] bool: the tokens that may come next."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        bits = np.unpackbits(self._bits.view(np.uint8), count=self._vocab.vocab_size, bitorder="little")
        allowed = bits.view(bool)
        if self._matcher.is_accepting():  # llguidance knows one end token; every end-of-generation id ends it
            allowed[self._vocab.eog] = True
        return allowed

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A float32 copy of `logits` [vocab] with every token the grammar refuses at -inf (the input is kept)."""
        return np.where(self.allowed(), logits, np.float32(-np.inf)).astype(np.float32, copy=False)

    def accept(self, token_id: int) -> None:
        """Advance past a generated token. End-of-generation tokens end the output and are not fed to the grammar.

        Raises:
            ConstraintError: the token was not allowed (a caller that did not ask `allows` or `mask`).
        """
        if token_id in self._vocab.runner.eog_token_ids:
            return
        if not self._matcher.consume_token(token_id):
            raise ConstraintError(self._matcher.get_error() or f"token {token_id} is not allowed here")
        text = self._vocab.runner.token_bytes(token_id, True).decode("utf-8", errors="replace")
        _, self._lex = json_levels_closed(text, self._lex)

    def closing_token(self, logits: np.ndarray) -> int:
        """The allowed token that brings JSON output nearest its end: an end-of-generation token once the output is
        complete, else one that is not only whitespace, closing the most strings, objects, arrays and numbers (then
        one without a comma, the longest, the likeliest). When none closes anything, the one after which the most
        can be closed (`_best_next`). Greedy, not a proof of the shortest completion, but JSON closes within a
        few tokens this way."""
        masked = self.mask(logits)
        allowed = np.flatnonzero(np.isfinite(masked))
        if allowed.size == 0:
            return int(np.argmax(masked))
        eog = np.intersect1d(allowed, self._vocab.eog)
        if eog.size:
            return int(eog[0])
        scores = self._vocab.closing_scores()
        closed = scores.closed_from(self._lex)
        # the last key sorts first: text before whitespace, the most levels closed, no comma, the longest, the likeliest
        keys: tuple[Any, ...] = (
            -masked[allowed],
            -scores.lengths[allowed],
            scores.has_comma[allowed],
            -closed[allowed],
            scores.is_blank[allowed],
        )
        ranked = allowed[np.lexsort(keys)]
        if closed[ranked[0]] > 0:
            return int(ranked[0])
        return self._best_next(scores, ranked)

    def _best_next(self, scores: ClosingScores, ranked: np.ndarray) -> int:
        """Of the best-ranked token for each first character, the one whose next step can close the most (an end
        of generation counts most). Inside a date-time's fraction, say, every digit token closes nothing and the
        longest would go on for ever, where "Z" lets the next token close the string."""
        _, firsts = np.unique(scores.first_chars[ranked], return_index=True)
        best, best_gain = int(ranked[0]), -1
        for token in ranked[np.sort(firsts)[:_MAX_LOOKAHEAD]]:
            ahead = self.clone()
            ahead.accept(int(token))
            after = ahead.allowed()
            gain = _ENDS if after[self._vocab.eog].any() else int(scores.closed_from(ahead._lex)[after].max(initial=0))
            if gain > best_gain:
                best, best_gain = int(token), gain
        return best

    def clone(self) -> GrammarConstraint:
        """An independent copy at the same position (a fork of the sequence)."""
        copy = GrammarConstraint(self._vocab, self._matcher.deep_copy())
        copy._lex = self._lex
        return copy
