"""Next-token sampling and log-probabilities over one row of raw logits (numpy only).

The engine thread calls `TokenSampler.sample` once per generated token per sequence, so nothing here sorts the
whole vocabulary on the common paths:

- the full distribution is drawn from with a two-level inverse CDF (block sums, then one block's cumsum);
- top_p first looks for a small top-k set (all tokens above a probability threshold) that holds the nucleus and
  sorts only that; when the nucleus is too large to sort cheaply it draws from the full distribution and rejects
  tokens outside the nucleus (at most 1/top_p draws expected), with an exact full sort as the last resort.

The nucleus is the smallest set of most likely tokens whose mass reaches top_p, ranking equal probabilities by
lower token id first; every path uses that same ranking, so they sample the same distribution.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from llamafoundry.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from llamafoundry.engine.constraint import GrammarConstraint

_BLOCK_SIZE = 256  # tokens per block of the two-level inverse CDF
_NUCLEUS_LOG_GAPS = (2.0, 5.0, 10.0, 16.0)  # candidate sets: tokens within this many nats of the most likely one
_MAX_SORTED_CANDIDATES = 4096
_MAX_REJECTION_DRAWS = 32
_TOP_K_LOGIT_GAPS = (1.0, 4.0, 16.0)  # candidate sets for top_k_logprobs, in raw-logit units
_MIN_CLOSING_WINDOW, _MAX_CLOSING_WINDOW = 8, 64  # tokens that close a constrained output before its budget ends
_CLOSING_MARGIN = 4  # tokens beyond the shortest match's estimate: the greedy closer is not always shortest
# Below this a temperature samples as 0 (argmax), as vLLM's _SAMPLING_EPS: 1/temperature overflows float32 from
# ~3e-39 on (and inf * 0 gives NaN weights), and long before that every token but the most likely weighs 0 anyway.
MIN_TEMPERATURE = 1e-5
# A smaller penalty (any float above 0 is valid) would divide a positive logit to infinity, or by float32's 0:
# no token could be sampled. Below this floor every penalty means the same (repeat), so it is one.
MIN_REPETITION_PENALTY = 1e-6


def choice_seed(seed: int, index: int) -> int:
    """The RNG seed of choice `index` of a request seeded `seed`: `seed` itself for the first choice (n=1 and
    choice 0 of n=N agree), a mix of both for the others, so that choice 1 of seed S is not choice 0 of seed S+1
    (with `seed + index`, requests with neighbouring seeds repeated each other's choices)."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


class TokenSampler:
    """Per-sequence sampling state (penalty counts, RNG).

    Order: logit_bias -> penalties (repetition, presence, frequency) -> banned tokens -> temperature -> min_p ->
    top_k -> top_p -> sample, then, with a constraint, a grammar check
    of the choice (resampled from the masked logits if refused). The caller passes each step's raw logits to
    `sample` and then the chosen token to `accept`, so presence/frequency penalties see every generated token.
    Same params and seed give the same token sequence for the same logits.
    """

    def __init__(
        self,
        params: SamplingParams,
        seed: int,
        banned_token_ids: Iterable[int] = (),
        constraint: GrammarConstraint | None = None,
        max_new_tokens: int | None = None,
        prompt_ids: Iterable[int] = (),
    ) -> None:
        """Set up one sequence's sampler.

        Args:
            params: the request's sampling settings.
            seed: RNG seed for this sequence (the engine derives one per choice).
            banned_token_ids: ids that are never sampled (the engine bans end-of-generation ids for ignore_eos).
            constraint: this sequence's own grammar state (`engine/constraint.py`), when the output must match one.
            max_new_tokens: the sequence's token budget; with a constraint, its last tokens close the match
                (`closing_window`) so that output cut by the budget still parses.
            prompt_ids: the prompt's tokens, which `repetition_penalty` penalizes too (as vLLM and transformers do).
        """
        self.constraint = constraint
        self._closing_from = (
            None
            if max_new_tokens is None
            else max(0, max_new_tokens - closing_window(max_new_tokens, params.closing_tokens))
        )
        self._num_generated = 0
        self._temperature = params.temperature if params.temperature >= MIN_TEMPERATURE else 0.0
        self._top_p = params.top_p
        self._presence_penalty = params.presence_penalty
        self._frequency_penalty = params.frequency_penalty
        self._banned_ids = np.unique(np.fromiter(banned_token_ids, dtype=np.int64))
        self._top_k = params.top_k
        self._min_p = params.min_p
        self._bias_ids = np.fromiter(params.logit_bias.keys(), dtype=np.int64, count=len(params.logit_bias))
        self._biases = np.fromiter(params.logit_bias.values(), dtype=np.float32, count=len(params.logit_bias))
        self._repetition_penalty = max(params.repetition_penalty, MIN_REPETITION_PENALTY)
        self._repeated = set(prompt_ids) if params.repetition_penalty != 1.0 else set()
        self._repeated_ids: np.ndarray | None = None  # `_repeated` as an array, rebuilt when it grows
        self._counts: dict[int, int] = {}  # generated token id -> times generated
        self._rng = np.random.default_rng(seed)

    def sample(self, logits: np.ndarray) -> int:
        """Choose the next token from one row of raw logits (never modified). A temperature below MIN_TEMPERATURE
        (0 included) is argmax.

        Args:
            logits: [vocab] float32 (or float64) raw logits from the model.

        Returns:
            the chosen token id.
        """
        adjusted = self._adjusted_logits(logits)
        if self.constraint is not None and self._closing_from is not None and self._num_generated >= self._closing_from:
            return self.constraint.closing_token(adjusted)
        token = self._choose(adjusted)
        if self.constraint is not None and not self.constraint.allows(token):
            # Only when the unconstrained choice is refused is the whole vocabulary masked (as llama.cpp's own
            # sampler does): without top_p this draws exactly from the distribution restricted to allowed tokens,
            # and checking one token costs a few microseconds against tens for a mask (docs/benchmarks.md).
            token = self._choose(self.constraint.mask(adjusted))
        return token

    def _choose(self, adjusted: np.ndarray) -> int:
        if self._temperature == 0.0:
            return int(np.argmax(adjusted))
        weights = unnormalized_probs(adjusted, self._temperature)
        if self._min_p > 0.0:  # weights are probabilities over the most likely one's: min_p is a threshold on them
            weights[weights < np.float32(self._min_p)] = 0.0
        if 0 < self._top_k < weights.size:
            kept = _top_k_ids(adjusted, self._top_k)
            only = np.zeros_like(weights)
            only[kept] = weights[kept]
            weights = only
        if self._top_p < 1.0:
            return sample_nucleus(weights, self._top_p, self._rng)
        return draw(weights, block_cdf(weights), self._rng.random())

    def accept(self, token_id: int) -> None:
        """Record a generated token for presence/frequency penalties (and advance the constraint past it)."""
        self._counts[token_id] = self._counts.get(token_id, 0) + 1
        self._num_generated += 1
        if self._repetition_penalty != 1.0 and token_id not in self._repeated:
            self._repeated.add(token_id)
            self._repeated_ids = None
        if self.constraint is not None:
            self.constraint.accept(token_id)

    def _adjusted_logits(self, logits: np.ndarray) -> np.ndarray:
        """Logits after biases, penalties and bans: one copy when anything applies, else the input itself."""
        has_penalty = bool(self._counts) and (self._presence_penalty != 0.0 or self._frequency_penalty != 0.0)
        has_repetition = self._repetition_penalty != 1.0 and bool(self._repeated)
        if not (has_penalty or has_repetition or self._banned_ids.size or self._bias_ids.size):
            return logits
        adjusted = logits.copy()  # the input is llama.cpp's buffer: never write to it
        adjusted[self._bias_ids] += self._biases
        if has_repetition:
            if self._repeated_ids is None:
                self._repeated_ids = np.fromiter(self._repeated, dtype=np.int64, count=len(self._repeated))
            seen = adjusted[self._repeated_ids]
            # CTRL's rule, as vLLM and transformers apply it: divide positive logits, multiply negative ones
            penalty = np.float32(self._repetition_penalty)
            adjusted[self._repeated_ids] = np.where(seen > 0, seen / penalty, seen * penalty)
        if has_penalty:
            ids = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.float64, count=len(self._counts))
            adjusted[ids] -= self._presence_penalty + self._frequency_penalty * counts  # every count is >= 1
        adjusted[self._banned_ids] = -np.inf
        return adjusted


def closing_window(max_new_tokens: int, closing_tokens: int = 0) -> int:
    """How many of a constrained sequence's last budgeted tokens go to closing its match: a quarter (8 to 64),
    and at least what the shortest match takes (`closing_tokens`, from the schema: its required keys) plus a few."""
    quarter = min(_MAX_CLOSING_WINDOW, max(_MIN_CLOSING_WINDOW, max_new_tokens // 4))
    return max(quarter, closing_tokens + _CLOSING_MARGIN if closing_tokens else 0)


def unnormalized_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """exp((logits - max) / temperature) as float32: the most likely token weighs 1, -inf logits weigh 0.

    Raises:
        ValueError: no token has a finite logit (every one banned or masked, or NaN from the model).
    """
    peak = np.max(logits)
    if not np.isfinite(peak):
        raise ValueError(f"no token can be sampled: the highest logit is {peak}")
    weights = np.subtract(logits, peak, dtype=np.float32)  # weights: [vocab]
    weights *= np.float32(1.0 / temperature)
    return np.exp(weights, out=weights)


def block_cdf(weights: np.ndarray) -> np.ndarray:
    """Cumulative sums of `weights` over consecutive blocks of _BLOCK_SIZE tokens.

    Returns:
        [num_blocks] float64; the last entry is the total weight.
    """
    starts = np.arange(0, weights.size, _BLOCK_SIZE)
    return np.cumsum(np.add.reduceat(weights, starts), dtype=np.float64)


def draw(weights: np.ndarray, cdf_of_blocks: np.ndarray, u: float) -> int:
    """The token at quantile `u` in [0, 1) of the distribution proportional to `weights` (never a zero weight).

    Args:
        weights: [vocab] non-negative, not all zero.
        cdf_of_blocks: `block_cdf(weights)`.
        u: a uniform draw in [0, 1).
    """
    block = _inverse_cdf(cdf_of_blocks, u * cdf_of_blocks[-1])
    start = block * _BLOCK_SIZE
    residual = u * cdf_of_blocks[-1] - (cdf_of_blocks[block - 1] if block else 0.0)
    within = np.cumsum(weights[start : start + _BLOCK_SIZE], dtype=np.float64)
    return start + _inverse_cdf(within, residual)


def _inverse_cdf(cdf: np.ndarray, target: float) -> int:
    """First index whose cumulative sum exceeds target, clamped so it never lands on a zero-weight entry."""
    target = min(max(target, 0.0), float(np.nextafter(cdf[-1], 0.0)))
    return int(np.searchsorted(cdf, target, side="right"))


def sample_nucleus(weights: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    """Draw from the smallest set of most likely tokens whose mass reaches top_p (at least one token).

    Args:
        weights: [vocab] float32 unnormalized probabilities, max 1 (from `unnormalized_probs`).
        top_p: nucleus mass in (0, 1).
        rng: the sequence's generator.
    """
    cdf_of_blocks = block_cdf(weights)
    target = top_p * cdf_of_blocks[-1]
    candidates = _small_nucleus_superset(weights, target)
    if candidates is not None:
        return _sample_sorted_nucleus(weights, candidates, target, rng)
    for _ in range(_MAX_REJECTION_DRAWS):
        token = draw(weights, cdf_of_blocks, rng.random())
        if _mass_ranked_above(weights, token) < target:
            return token
    return _sample_sorted_nucleus(weights, np.arange(weights.size), target, rng)


def _small_nucleus_superset(weights: np.ndarray, target: float) -> np.ndarray | None:
    """Ids (ascending) of a top-k set small enough to sort whose mass reaches target, or None if there is none."""
    for gap in _NUCLEUS_LOG_GAPS:
        is_candidate = weights >= np.float32(np.exp(-gap))
        if np.count_nonzero(is_candidate) > _MAX_SORTED_CANDIDATES:
            return None
        ids = np.flatnonzero(is_candidate)
        if weights[ids].sum(dtype=np.float64) >= target:
            return ids
    return None


def _sample_sorted_nucleus(weights: np.ndarray, ids: np.ndarray, target: float, rng: np.random.Generator) -> int:
    """Sort the candidate `ids` (ascending) by weight, cut the nucleus at `target` mass, draw from it."""
    ranked = ids[np.argsort(-weights[ids], kind="stable")]  # stable: equal weights keep lower id first
    cdf = np.cumsum(weights[ranked], dtype=np.float64)
    size = min(int(np.searchsorted(cdf, target, side="left")) + 1, cdf.size)
    return int(ranked[_inverse_cdf(cdf[:size], rng.random() * cdf[size - 1])])


def _mass_ranked_above(weights: np.ndarray, token: int) -> float:
    """Weight of the tokens ranked before `token`: heavier ones, and equal ones with a lower id."""
    weight = weights[token]
    # a dot with the mask, not weights[mask].sum(): boolean gathers of half the vocab are ~20x slower
    heavier = float(np.dot(weights, (weights > weight).astype(weights.dtype)))
    return heavier + float(weight) * int(np.count_nonzero(weights[:token] == weight))


def _logsumexp(logits: np.ndarray) -> float:
    """log(sum(exp(logits))) computed stably (numpy's pairwise float32 sum is accurate to ~1e-7 here)."""
    peak = float(np.max(logits))
    return peak + float(np.log(np.exp(np.subtract(logits, peak, dtype=np.float32)).sum()))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax of a [vocab] float32/float64 row, in the input's dtype."""
    # subtract the max first: x - max is exact near the top, where float32 x - logsumexp would round
    shifted = np.subtract(logits, np.max(logits), dtype=np.result_type(logits.dtype, np.float32))  # [vocab]
    shifted -= shifted.dtype.type(np.log(np.exp(shifted).sum()))
    return shifted


def top_k_logprobs(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely tokens under the log-softmax of the raw logits (used by beam search).

    Returns:
        ids: [k] int64, logprobs: [k] float64, sorted by logprob descending (equal ones: lower id first).
    """
    ids = _top_k_ids(logits, k)
    return ids, logits[ids].astype(np.float64) - _logsumexp(logits)


def token_logprob(logits: np.ndarray, token_id: int, num_top: int) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of `token_id` and the `num_top` most likely tokens, from the log-softmax of raw logits.

    Returns:
        (logprob of token_id, [(id, logprob)] of the num_top most likely tokens sorted descending).
    """
    log_norm = _logsumexp(logits)
    top: list[tuple[int, float]] = []
    if num_top > 0:
        ids = _top_k_ids(logits, num_top)
        top = [(int(i), float(logits[i]) - log_norm) for i in ids]
    return float(logits[token_id]) - log_norm, top


def _top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits sorted descending, equal logits by lower id; avoids partitioning the vocab."""
    k = min(k, logits.size)
    peak = np.max(logits)
    for gap in _TOP_K_LOGIT_GAPS:
        ids = np.flatnonzero(logits >= peak - gap)
        if ids.size >= k:
            break
    else:
        ids = np.arange(logits.size)
    if ids.size > k:
        values = logits[ids]
        kth = -np.partition(-values, k - 1)[k - 1]
        above, tied = ids[values > kth], ids[values == kth]
        ids = np.sort(np.concatenate([above, tied[: k - above.size]]))
    return ids[np.argsort(-logits[ids], kind="stable")]
