"""Per-request generation settings, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from llamafoundry.errors import InvalidSamplingParams

MAX_TOP_LOGPROBS = 20


@dataclass
class SamplingParams:
    """How to generate the completion(s) of one request.

    `max_tokens=None` means "until the end of the sequence's context". `n` choices are returned; with
    `best_of > n` that many candidates are generated and the `n` with the highest mean token log-probability
    are kept. `use_beam_search` runs a beam search of width `best_of` at temperature 0 and returns the
    `n` best beams.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int = 0  # sample among the k most likely tokens; 0 (or vLLM's -1): all
    min_p: float = 0.0  # drop tokens less likely than min_p x the most likely one's probability
    repetition_penalty: float = 1.0  # > 1 discourages tokens of the prompt and the output so far (vLLM's, CTRL's)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit (OpenAI's)
    grammar: str | None = None  # llguidance grammar the output must match, e.g. JSON of a schema (engine/constraint.py)
    grammar_param: str = "response_format"  # the request field the grammar comes from, for error messages
    closing_tokens: int = 0  # about how many tokens the shortest match of `grammar` takes (its closing window's floor)

    def __post_init__(self) -> None:
        self._check_ranges()
        self._check_combinations()

    def _check_ranges(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidSamplingParams("max_tokens", f"max_tokens must be at least 1, got {self.max_tokens}.")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidSamplingParams("temperature", f"temperature must be between 0 and 2, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidSamplingParams("top_p", f"top_p must be greater than 0 and at most 1, got {self.top_p}.")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise InvalidSamplingParams(name, f"{name} must be between -2 and 2, got {value}.")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidSamplingParams(
                "top_logprobs", f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs}."
            )
        if self.top_k < -1:
            raise InvalidSamplingParams("top_k", f"top_k must be -1 or 0 (all tokens) or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidSamplingParams("min_p", f"min_p must be between 0 and 1, got {self.min_p}.")
        if not 0.0 < self.repetition_penalty <= 2.0:
            raise InvalidSamplingParams(
                "repetition_penalty",
                f"repetition_penalty must be greater than 0 and at most 2, got {self.repetition_penalty}.",
            )
        if any(not -100.0 <= bias <= 100.0 or token < 0 for token, bias in self.logit_bias.items()):
            raise InvalidSamplingParams("logit_bias", "logit_bias maps token ids to biases between -100 and 100.")
        if self.n < 1:
            raise InvalidSamplingParams("n", f"n must be at least 1, got {self.n}.")
        if any(not isinstance(s, str) or s == "" for s in self.stop):
            raise InvalidSamplingParams("stop", "stop must be a list of non-empty strings.")
        if any(t < 0 for t in self.stop_token_ids):
            raise InvalidSamplingParams("stop_token_ids", "stop_token_ids must be non-negative token ids.")

    def _check_combinations(self) -> None:
        if self.best_of is not None and self.best_of < self.n:
            raise InvalidSamplingParams(
                "best_of", f"best_of ({self.best_of}) must be greater than or equal to n ({self.n})."
            )
        if self.use_beam_search:
            if self.num_candidates < 2:
                raise InvalidSamplingParams("use_beam_search", "use_beam_search needs best_of greater than 1.")
            if self.temperature != 0:
                raise InvalidSamplingParams("use_beam_search", "use_beam_search needs temperature 0.")
        if self.grammar is not None and self.ignore_eos:
            raise InvalidSamplingParams(
                "ignore_eos",
                f"ignore_eos cannot be combined with {self.grammar_param}, which constrains the output to JSON "
                "that ends where the JSON does. Remove ignore_eos.",
            )

    @property
    def num_candidates(self) -> int:
        """Sequences generated for this request: best_of when given, else n."""
        return self.best_of if self.best_of is not None else self.n

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def needs_all_before_output(self) -> bool:
        """True when choices are only known at the end (ranking or beam search), so nothing can stream."""
        return self.use_beam_search or self.num_candidates > self.n
