"""TokenSampler and the logprob helpers: what a user of temperature, top_p, penalties and logprobs would notice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamafoundry.engine import sampler as sampler_module
from llamafoundry.engine.sampler import TokenSampler, choice_seed, log_softmax, token_logprob, top_k_logprobs
from llamafoundry.engine.sampling_params import SamplingParams

VOCAB = 128_256  # Llama 3 vocabulary size


def random_logits(seed: int = 0, size: int = VOCAB, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(size) * scale).astype(np.float32)


def reference_log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def draw_counts(sampler: TokenSampler, logits: np.ndarray, num_draws: int) -> np.ndarray:
    # counts: [vocab]
    return np.bincount([sampler.sample(logits) for _ in range(num_draws)], minlength=logits.size)


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def nucleus_reference(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Ids of the smallest most-likely set with mass >= top_p (float64 full sort, ties by lower id)."""
    order = np.argsort(-probs, kind="stable")
    size = int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1
    return order[:size]


# ---- greedy, determinism, the caller's buffer ------------------------------------------------------------


def test_greedy_is_argmax_of_full_vocab() -> None:
    for seed in range(5):
        logits = random_logits(seed)
        assert TokenSampler(SamplingParams(temperature=0.0), seed=seed).sample(logits) == int(np.argmax(logits))


@pytest.mark.parametrize("temperature", [5e-324, 1e-320, 1e-39, 1e-30, 9.99e-6])
@pytest.mark.parametrize("top_p", [1.0, 0.5])
def test_temperatures_too_small_to_divide_by_sample_the_most_likely_token(temperature: float, top_p: float) -> None:
    # 1/temperature overflowed float32 below ~3e-39: NaN weights, then an IndexError that ended every request
    logits = random_logits(3)
    sampler = TokenSampler(SamplingParams(temperature=temperature, top_p=top_p, presence_penalty=0.5), seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, underflow or invalid-value path either
        tokens = [sampler.sample(logits) for _ in range(3)]
    assert tokens == [int(np.argmax(logits))] * 3


@settings(max_examples=200, deadline=None)
@given(
    temperature=st.floats(min_value=0.0, max_value=2.0),  # subnormals included
    top_p=st.floats(min_value=1e-9, max_value=1.0),
    presence=st.floats(min_value=-2.0, max_value=2.0),
    frequency=st.floats(min_value=-2.0, max_value=2.0),
    scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]),
    seed=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_every_setting_the_api_accepts_samples_a_token(
    temperature: float, top_p: float, presence: float, frequency: float, scale: float, seed: int
) -> None:
    params = SamplingParams(
        temperature=temperature, top_p=top_p, presence_penalty=presence, frequency_penalty=frequency
    )
    sampler = TokenSampler(params, seed=seed, banned_token_ids=[5])
    logits = random_logits(seed % 7, size=4096, scale=scale)
    for _ in range(3):
        token = sampler.sample(logits)
        assert 0 <= token < logits.size and token != 5
        sampler.accept(token)


def test_a_row_with_no_finite_logit_is_an_error_that_says_so() -> None:
    logits = np.full(64, -np.inf, dtype=np.float32)
    with pytest.raises(ValueError, match="no token can be sampled"):
        TokenSampler(SamplingParams(temperature=0.8), seed=0).sample(logits)


def test_sampling_never_writes_to_the_logits() -> None:
    logits = random_logits(1)
    before = logits.copy()
    params = SamplingParams(temperature=0.7, top_p=0.9, presence_penalty=1.0, frequency_penalty=1.0)
    sampler = TokenSampler(params, seed=0, banned_token_ids=[int(np.argmax(logits))])
    for _ in range(20):
        sampler.accept(sampler.sample(logits))
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_same_seed_gives_same_tokens(top_p: float) -> None:
    params = SamplingParams(temperature=1.0, top_p=top_p, frequency_penalty=0.5)
    rows = [random_logits(seed, scale=1.0) for seed in range(30)]

    def generate(seed: int) -> list[int]:
        sampler = TokenSampler(params, seed=seed)
        tokens = []
        for row in rows:
            tokens.append(sampler.sample(row))
            sampler.accept(tokens[-1])
        return tokens

    assert generate(7) == generate(7)
    assert generate(7) != generate(8)


# ---- penalties and bans ------------------------------------------------------------------------------------


def test_presence_penalty_moves_greedy_off_a_generated_token() -> None:
    logits = np.array([2.0, 1.9, 0.0], dtype=np.float32)
    sampler = TokenSampler(SamplingParams(temperature=0.0, presence_penalty=0.5), seed=0)
    assert sampler.sample(logits) == 0
    sampler.accept(0)
    assert sampler.sample(logits) == 1


def test_frequency_penalty_grows_with_each_repetition() -> None:
    logits = np.array([3.0, 2.5, 0.0], dtype=np.float32)
    sampler = TokenSampler(SamplingParams(temperature=0.0, frequency_penalty=0.3), seed=0)
    sampler.accept(0)
    assert sampler.sample(logits) == 0  # 3.0 - 0.3 > 2.5
    sampler.accept(0)
    assert sampler.sample(logits) == 1  # 3.0 - 0.6 < 2.5


def test_presence_penalty_counts_once_and_negative_penalty_encourages_repetition() -> None:
    logits = np.array([1.0, 2.0], dtype=np.float32)
    presence = TokenSampler(SamplingParams(temperature=0.0, presence_penalty=0.6), seed=0)
    for _ in range(5):
        presence.accept(1)
    assert presence.sample(logits) == 1  # 2.0 - 0.6: repeats do not add up
    encourage = TokenSampler(SamplingParams(temperature=0.0, frequency_penalty=-1.5), seed=0)
    encourage.accept(0)
    assert encourage.sample(logits) == 0


def test_penalties_do_nothing_before_any_token_is_accepted() -> None:
    logits = random_logits(2)
    params = SamplingParams(temperature=0.0, presence_penalty=2.0, frequency_penalty=2.0)
    assert TokenSampler(params, seed=0).sample(logits) == int(np.argmax(logits))


def test_banned_ids_are_never_sampled_even_when_dominant() -> None:
    logits = np.array([10.0, 9.0, 0.0, 0.0, 0.0], dtype=np.float32)
    greedy = TokenSampler(SamplingParams(temperature=0.0), seed=0, banned_token_ids=[0])
    assert greedy.sample(logits) == 1
    hot = TokenSampler(SamplingParams(temperature=2.0), seed=0, banned_token_ids=[0, 1])
    counts = draw_counts(hot, logits, 3000)
    assert counts[0] == counts[1] == 0
    assert np.all(counts[2:] > 800)  # the rest stays uniform


def test_banned_ids_are_respected_with_top_p_on_full_vocab() -> None:
    logits = random_logits(3)
    banned = np.argsort(-logits)[:50]
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=0.9), seed=0, banned_token_ids=banned.tolist())
    drawn = {sampler.sample(logits) for _ in range(300)}
    assert drawn.isdisjoint(banned.tolist())


# ---- distribution --------------------------------------------------------------------------------------------

CHI2_DF7_P001 = 24.32  # critical value, 7 degrees of freedom, p = 0.001


@pytest.mark.parametrize("temperature", [1.0, 0.5, 1.7])
def test_empirical_distribution_matches_softmax(temperature: float) -> None:
    logits = np.array([1.0, 0.5, 0.0, -0.5, 2.0, -1.0, 0.3, 1.2], dtype=np.float32)
    sampler = TokenSampler(SamplingParams(temperature=temperature), seed=42)
    counts = draw_counts(sampler, logits, 40_000)
    probs = np.exp(reference_log_softmax(logits / temperature))
    assert chi_square(counts, probs) < CHI2_DF7_P001


def test_distribution_is_right_across_blocks_of_a_large_vocab() -> None:
    logits = np.full(1000, -np.inf, dtype=np.float32)  # 1000: not a multiple of the internal block size
    hot = [3, 255, 256, 511, 700, 998, 999, 512]
    logits[hot] = [0.0, 1.0, 0.5, -0.3, 0.8, 1.5, -1.0, 0.2]
    counts = draw_counts(TokenSampler(SamplingParams(temperature=1.0), seed=5), logits, 40_000)
    assert counts.sum() == counts[hot].sum()
    probs = np.exp(reference_log_softmax(logits[hot]))
    assert chi_square(counts[hot], probs) < CHI2_DF7_P001


# ---- top_p -----------------------------------------------------------------------------------------------------


def force_nucleus_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Make sample_nucleus take one internal path; all of them must sample the same distribution."""
    monkeypatch.setattr(sampler_module, "_MAX_SORTED_CANDIDATES", 10**9 if path == "sorted_candidates" else 0)
    if path == "full_sort":
        monkeypatch.setattr(sampler_module, "_MAX_REJECTION_DRAWS", 0)


@pytest.mark.parametrize("path", ["sorted_candidates", "rejection", "full_sort"])
def test_top_p_draws_only_from_the_nucleus_in_proportion(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    force_nucleus_path(monkeypatch, path)
    probs = np.array([0.05, 0.5, 0.15, 0.3], dtype=np.float64)
    logits = np.log(probs).astype(np.float32)
    counts = draw_counts(TokenSampler(SamplingParams(top_p=0.75), seed=1), logits, 20_000)
    assert counts[0] == counts[2] == 0  # nucleus: 0.5 + 0.3 >= 0.75
    assert counts[1] / counts.sum() == pytest.approx(0.5 / 0.8, abs=0.015)


@pytest.mark.parametrize("path", ["sorted_candidates", "rejection", "full_sort"])
def test_tiny_top_p_always_keeps_the_most_likely_token(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    force_nucleus_path(monkeypatch, path)
    logits = random_logits(4, size=5000, scale=0.5)
    sampler = TokenSampler(SamplingParams(top_p=1e-6), seed=0)
    assert {sampler.sample(logits) for _ in range(50)} == {int(np.argmax(logits))}


@pytest.mark.parametrize("path", ["sorted_candidates", "rejection", "full_sort"])
def test_top_p_ties_keep_lower_ids_first(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    force_nucleus_path(monkeypatch, path)
    logits = np.zeros(8, dtype=np.float32)
    counts = draw_counts(TokenSampler(SamplingParams(top_p=0.3), seed=2), logits, 2000)
    assert set(np.flatnonzero(counts)) == {0, 1, 2}  # 3 of 8 equal tokens reach 0.3


@pytest.mark.parametrize(("scale", "top_p"), [(3.0, 0.95), (1.0, 0.95), (1.0, 0.3), (6.0, 0.5)])
def test_top_p_respects_the_nucleus_on_full_vocab(scale: float, top_p: float) -> None:
    logits = random_logits(6, scale=scale)
    nucleus = nucleus_reference(np.exp(reference_log_softmax(logits / 0.8)), top_p)
    sampler = TokenSampler(SamplingParams(temperature=0.8, top_p=top_p), seed=3)
    drawn = np.array([sampler.sample(logits) for _ in range(300)])
    assert np.isin(drawn, nucleus).all()
    assert len(set(drawn.tolist())) > 1


def test_large_nucleus_of_ties_is_sampled_uniformly(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3000 tokens of weight 3 then 5000 of weight 1: the nucleus is too large to sort, so it is found by
    # rejection; at top_p 0.5 it is the 2334 lowest ids of the heavy tier (equal weights rank lower ids first)
    def no_sorting(*args: object) -> int:
        raise AssertionError("expected the rejection path")

    monkeypatch.setattr(sampler_module, "_sample_sorted_nucleus", no_sorting)
    logits = np.log(np.r_[np.full(3000, 3.0), np.ones(5000)]).astype(np.float32)
    sampler = TokenSampler(SamplingParams(top_p=0.5), seed=9)
    drawn = np.array([sampler.sample(logits) for _ in range(4000)])
    assert drawn.max() < 2334
    assert drawn.mean() == pytest.approx(2333 / 2, rel=0.05)


# ---- logprobs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_matches_float64_reference(dtype: type) -> None:
    logits = random_logits(7, scale=5.0).astype(dtype)
    result = log_softmax(logits)
    assert result.dtype == dtype
    np.testing.assert_allclose(result, reference_log_softmax(logits), atol=1e-4 if dtype == np.float32 else 1e-10)
    assert np.exp(result.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


def test_log_softmax_is_stable_for_huge_logits() -> None:
    logits = np.array([1000.0, 999.0, -1000.0], dtype=np.float32)
    result = log_softmax(logits)
    assert np.isfinite(result).all()
    assert result[0] == pytest.approx(-np.log1p(np.exp(-1.0)), abs=1e-5)


def test_token_logprob_matches_reference_and_lists_top_tokens() -> None:
    logits = random_logits(8, scale=4.0)
    reference = reference_log_softmax(logits)
    token = 12_345
    logprob, top = token_logprob(logits, token, 5)
    assert logprob == pytest.approx(reference[token], abs=1e-4)
    expected_ids = np.argsort(-reference)[:5].tolist()
    assert [tid for tid, _ in top] == expected_ids
    assert [lp for _, lp in top] == pytest.approx(reference[expected_ids].tolist(), abs=1e-4)
    assert token_logprob(logits, token, 0)[1] == []


def test_top_k_logprobs_are_sorted_and_match_reference() -> None:
    logits = random_logits(9)
    reference = reference_log_softmax(logits)
    ids, logprobs = top_k_logprobs(logits, 16)
    assert ids.tolist() == np.argsort(-reference)[:16].tolist()
    assert np.all(np.diff(logprobs) <= 0)
    np.testing.assert_allclose(logprobs, reference[ids], atol=1e-4)


def test_top_k_logprobs_ties_and_small_vocab() -> None:
    logits = np.array([0.0, 1.0, 1.0, -np.inf, 1.0], dtype=np.float32)
    ids, logprobs = top_k_logprobs(logits, 2)
    assert ids.tolist() == [1, 2]  # equal logits: lower id first
    ids, logprobs = top_k_logprobs(logits, 10)
    assert ids.tolist() == [1, 2, 4, 0, 3]
    assert logprobs[-1] == -np.inf


def test_top_k_logprobs_with_logits_far_apart() -> None:
    logits = np.arange(200, dtype=np.float32) * 100.0  # wider than any internal candidate gap
    ids, _ = top_k_logprobs(logits, 3)
    assert ids.tolist() == [199, 198, 197]


def test_choice_seeds_do_not_repeat_neighbouring_requests() -> None:
    """Choice i of seed S used seed S + i, so it was choice 0 of a request seeded S + i."""
    assert choice_seed(42, 0) == 42  # n=1 and choice 0 of n=N agree
    derived = {choice_seed(seed, index) for seed in range(100) for index in range(1, 4)}
    assert len(derived) == 300 and not derived & set(range(1000))
    assert choice_seed(2**64 - 1, 1) == choice_seed(2**64 - 1, 1)  # any seed the API passes, reproducibly


# ---- top_k, min_p, repetition_penalty, logit_bias (OpenAI's and vLLM's fields) ------------------------------


def test_top_k_samples_only_the_k_most_likely_tokens() -> None:
    logits = random_logits(11, scale=1.0)  # a flat distribution: without top_k almost every draw is elsewhere
    top = set(np.argsort(-logits)[:3].tolist())
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_k=3), seed=4)
    drawn = {sampler.sample(logits) for _ in range(300)}
    assert drawn == top


def test_min_p_drops_tokens_less_likely_than_its_share_of_the_most_likely() -> None:
    logits = np.full(1000, -5.0, dtype=np.float32)
    logits[[7, 8, 9]] = [2.0, 1.5, 2.0 + np.log(0.05)]  # probabilities relative to token 7: 1, 0.61, 0.05
    sampler = TokenSampler(SamplingParams(temperature=1.0, min_p=0.1), seed=2)
    assert {sampler.sample(logits) for _ in range(400)} == {7, 8}


def test_logit_bias_bans_and_forces_tokens() -> None:
    logits = random_logits(5)
    best = int(np.argmax(logits))
    assert TokenSampler(SamplingParams(temperature=0.0, logit_bias={best: -100.0}), seed=0).sample(logits) != best
    forced = TokenSampler(SamplingParams(temperature=1.0, logit_bias={42: 100.0}), seed=0)
    assert [forced.sample(logits) for _ in range(20)] == [42] * 20
    assert logits[42] == random_logits(5)[42]  # llama.cpp's buffer is never written


def test_repetition_penalty_discourages_prompt_and_output_tokens() -> None:
    logits = np.zeros(100, dtype=np.float32)
    logits[[3, 4]] = [2.0, 1.9]
    plain = TokenSampler(SamplingParams(temperature=0.0, repetition_penalty=1.2), seed=0)
    assert plain.sample(logits) == 3
    from_prompt = TokenSampler(SamplingParams(temperature=0.0, repetition_penalty=1.2), seed=0, prompt_ids=[3])
    assert from_prompt.sample(logits) == 4  # 2.0 / 1.2 < 1.9
    plain.accept(3)
    assert plain.sample(logits) == 4  # generated tokens count too
    ignored = TokenSampler(SamplingParams(temperature=0.0), seed=0, prompt_ids=[3])
    assert ignored.sample(logits) == 3  # 1.0 is off


@pytest.mark.parametrize("penalty", [5e-324, 1e-40])
def test_a_vanishing_repetition_penalty_still_samples_a_token(penalty: float) -> None:
    logits = np.zeros(100, dtype=np.float32)
    logits[[3, 4]] = [2.0, 1.9]
    sampler = TokenSampler(SamplingParams(temperature=1.0, repetition_penalty=penalty), seed=0, prompt_ids=[4])
    assert sampler.sample(logits) == 4  # 1.9 / penalty: the repeated token, not an infinite logit (found by fuzzing)


@pytest.mark.parametrize(
    ("field", "value"), [("top_k", -2), ("min_p", 1.5), ("repetition_penalty", 0.0), ("logit_bias", {1: 101.0})]
)
def test_out_of_range_sampling_extensions_name_the_field(field: str, value: object) -> None:
    from llamafoundry.errors import InvalidSamplingParams

    with pytest.raises(InvalidSamplingParams) as caught:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert caught.value.param == field
