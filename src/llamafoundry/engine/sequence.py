"""Requests and their sequences as the engine thread sees them."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from llamafoundry.engine.constraint import GrammarConstraint
from llamafoundry.engine.detokenizer import IncrementalDetokenizer
from llamafoundry.engine.outputs import ChoiceDelta, FinishReason, TokenLogprob
from llamafoundry.engine.sampler import TokenSampler
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.engine.speculative import NgramDrafter


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # queued, holds no sequence slot
    PREFILL = "prefill"  # prompt being computed on its first sequence, in chunks
    DECODING = "decoding"  # every live sequence adds one token per step
    FINISHED = "finished"


@dataclass
class Sequence:
    """One choice (or candidate, or beam) of a request: its KV sequence id and its generated tokens."""

    index: int  # choice index among the request's candidates
    seq_id: int
    sampler: TokenSampler | None
    detokenizer: IncrementalDetokenizer
    output_ids: list[int] = field(default_factory=list)
    sum_logprob: float = 0.0  # sum of the raw log-probabilities of the generated tokens (best_of, beams)
    finish_reason: FinishReason | None = None
    pending_text: str = ""  # released text not yet handed to the caller
    pending_token_ids: list[int] = field(default_factory=list)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    reported: bool = False  # the finish has been handed to the caller
    drafter: NgramDrafter | None = None  # prompt-lookup speculative decoding, when the engine has it on
    draft: list[int] = field(default_factory=list)  # tokens guessed for this step, after the newest one
    constraint: GrammarConstraint | None = None  # a beam's grammar state (sampled sequences keep it in their sampler)

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def mean_logprob(self) -> float:
        return self.sum_logprob / max(1, len(self.output_ids))

    @property
    def has_news(self) -> bool:
        """Text, tokens or a finish not yet handed to the caller."""
        return bool(self.pending_text or self.pending_token_ids or (self.is_finished and not self.reported))

    def take_delta(self, index: int) -> ChoiceDelta:
        """Hand what is pending to the caller as choice `index` and clear it."""
        delta = ChoiceDelta(
            index=index,
            text=self.pending_text,
            token_ids=self.pending_token_ids,
            logprobs=self.pending_logprobs or None,
            finish_reason=self.finish_reason,
        )
        self.pending_text, self.pending_token_ids, self.pending_logprobs = "", [], []
        self.reported = self.finish_reason is not None
        return delta


@dataclass
class Request:
    """A submitted request: the prompt, its settings and the sequences that generate its choices.

    `emit` is called on the engine thread with each RequestOutput; the async front end turns it into
    a thread-safe hand-off to the request's asyncio queue.
    """

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    seed: int
    emit: Callable[[object], None]
    status: RequestStatus = RequestStatus.WAITING
    num_computed: int = 0  # prompt tokens already in the KV cache of the first sequence
    sequences: list[Sequence] = field(default_factory=list)
    is_aborted: bool = False
    spare_seq_ids: list[int] = field(default_factory=list)  # beam search: slots holding no live beam
    finished_beams: list[Sequence] = field(default_factory=list)  # beam search: completed hypotheses
    num_cached_tokens: int = 0  # prompt tokens shared from the KV cache (prefix caching), not computed
    prefix_tier: str | None = None  # where a saved state of its prompt was loaded from (ram, disk), if one was
    waits_for_prefix: bool = False  # prefill paused: an earlier request is computing a prefix of this prompt
    is_prefix_searched: bool = False  # prefix caching has looked for this prompt's cached prefix
    admitted_at_step: int = 0  # the scheduler's step count when it got its slots (prompts age from there)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_prompt_tokens_left(self) -> int:
        """Prompt tokens not yet in the KV cache (computed or taken from a cache)."""
        return len(self.prompt_ids) - self.num_computed

    @property
    def num_slots_needed(self) -> int:
        return self.params.num_candidates

    @property
    def num_completion_tokens(self) -> int:
        return sum(len(s.output_ids) for s in self.sequences)

    @property
    def live_sequences(self) -> list[Sequence]:
        return [s for s in self.sequences if not s.is_finished]

    @property
    def seq_ids(self) -> list[int]:
        """Every KV sequence id the request holds (live sequences and spares)."""
        return [s.seq_id for s in self.sequences if s.seq_id >= 0] + self.spare_seq_ids

    def best_candidates(self) -> list[Sequence]:
        """`best_of`: the `n` candidates with the highest mean log-probability."""
        ranked = sorted(self.sequences, key=lambda s: s.mean_logprob, reverse=True)
        return ranked[: self.params.n]
