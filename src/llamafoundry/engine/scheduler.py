"""Which requests run and what each step's batch holds. Pure bookkeeping: no model, no numpy.

Memory is guaranteed by construction: the KV cache has `max_seqs * ctx_size` cells and every sequence is
capped at `ctx_size` positions (a stream of its own, or its share of a unified pool), so a request that holds
sequence slots can always grow to its limit. Admission therefore only needs free slots.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from llamafoundry.engine.sequence import Request, RequestStatus

# A burst whose prompts overrun the step's prompt budget by at most this factor is finished in one step.
BURST_STRETCH = 1.5
# Prompts are computed shortest remaining first; each step a prompt waits counts as this many tokens fewer, so a
# long prompt is not passed over for ever (a 2,000-token first turn goes first after ~250 steps of shorter ones).
PREFILL_AGING_TOKENS_PER_STEP = 8
# Beside decoding streams, the prompts first in line are computed whole when their tokens left come to at most this
# many times the step's prompt budget (returning turns' new tokens in one step, not four).
WHOLE_PROMPT_STRETCH = 4
# A small burst (at most STAGGER_MAX_STREAMS prompts and decoding streams together) is computed a few prompts a
# step, at least STAGGER_MIN_TOKENS tokens each step, so that the first prompts start answering while the next are
# computed (see `_staggered_budget`).
STAGGER_MIN_TOKENS = 64
STAGGER_MAX_STREAMS = 8


@dataclass
class PrefillChunk:
    request: Request
    start: int  # first prompt position of the chunk
    end: int  # one past the last

    @property
    def is_last(self) -> bool:
        return self.end == self.request.num_prompt_tokens


@dataclass
class StepPlan:
    """One decode step: a token for every live sequence of the decoding requests, then prompt chunks."""

    decoding: list[Request] = field(default_factory=list)
    prefill: list[PrefillChunk] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.decoding and not self.prefill

    @property
    def num_tokens(self) -> int:
        """Tokens the step puts in the batch."""
        return sum(len(r.live_sequences) for r in self.decoding) + sum(c.end - c.start for c in self.prefill)


class Scheduler:
    """FIFO admission into sequence slots; decode first, then prefill chunks within the token budget, the prompts
    with the fewest tokens left first (a returning conversation's few new tokens do not wait behind a long first
    turn: shortest-remaining-first gives the lowest mean time to first token; waiting ages a prompt forward).

    Args:
        max_seqs: sequence slots.
        max_batch_tokens: most tokens in one step (decode tokens and prefill chunks together).
        max_queue: requests that may wait for a slot.
        max_prefill_tokens: most prompt tokens in one step (default: max_batch_tokens); a burst that overruns it
            by at most `BURST_STRETCH` is finished in the step (see `_burst_budget`).
        max_prefill_tokens_while_decoding: most prompt tokens in a step while at least as many streams decode
            as prompts are being computed (default: max_prefill_tokens); it bounds how long a prompt arriving
            holds up the running streams.
        prompt_tokens_shared_while_decoding: while streams decode, a step may take this many prompt tokens divided
            by the number of decoding streams, when that is more than `max_prefill_tokens_while_decoding` (0: off).

    Running decodes always get their token in every step, so a long prompt arriving never stalls the
    streams already running (chunked prefill); it only shares the step's remaining token budget.
    """

    def __init__(
        self,
        max_seqs: int,
        max_batch_tokens: int,
        max_queue: int,
        max_prefill_tokens: int | None = None,
        max_prefill_tokens_while_decoding: int | None = None,
        prompt_tokens_shared_while_decoding: int = 0,
    ) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.max_prefill_tokens = max_batch_tokens if max_prefill_tokens is None else max_prefill_tokens
        self.max_prefill_tokens_while_decoding = (
            self.max_prefill_tokens if max_prefill_tokens_while_decoding is None else max_prefill_tokens_while_decoding
        )
        self.prompt_tokens_shared_while_decoding = prompt_tokens_shared_while_decoding
        self.max_queue = max_queue
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_steps = 0  # plans made: the clock prompts age by
        self._free_slots: list[int] = list(range(max_seqs))  # a heap: the lowest free id is handed out first

    @property
    def num_free_slots(self) -> int:
        return len(self._free_slots)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def is_queue_full(self) -> bool:
        return len(self.waiting) >= self.max_queue

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    @property
    def free_slots(self) -> list[int]:
        return sorted(self._free_slots)

    def take_slot(self) -> int:
        """The lowest free sequence id: running sequences stay in few runs of consecutive ids, and llama.cpp
        makes one pass over the weights per run when each sequence has its own KV stream."""
        return heapq.heappop(self._free_slots)

    def release_slot(self, seq_id: int) -> None:
        heapq.heappush(self._free_slots, seq_id)

    def admit(self) -> list[tuple[Request, list[int]]]:
        """Move waiting requests, oldest first, into PREFILL while their slots fit.

        Returns each admitted request with the sequence slots taken for it (all it will ever need).
        """
        admitted = []
        while self.waiting and self.waiting[0].num_slots_needed <= self.num_free_slots:
            request = self.waiting.popleft()
            request.status = RequestStatus.PREFILL
            self.running.append(request)
            request.admitted_at_step = self.num_steps
            admitted.append((request, [self.take_slot() for _ in range(request.num_slots_needed)]))
        return admitted

    def plan(self) -> StepPlan:
        self.num_steps += 1
        plan = StepPlan()
        budget = self.max_batch_tokens
        for request in self.running:
            if request.status is RequestStatus.DECODING:
                plan.decoding.append(request)
                budget -= len(request.live_sequences)
        prompts = sorted(self._computable_prompts(), key=self._prefill_rank)
        budget = min(budget, self._prefill_budget(plan, budget, prompts))
        for request in prompts:
            if budget <= 0:
                break
            start = request.num_computed
            end = min(request.num_prompt_tokens, start + budget)
            plan.prefill.append(PrefillChunk(request, start, end))
            budget -= end - start
        return plan

    def _computable_prompts(self) -> list[Request]:
        """Prompts being computed that are not paused for a prefix another request is computing."""
        return [r for r in self.running if r.status is RequestStatus.PREFILL and not r.waits_for_prefix]

    def _prefill_rank(self, request: Request) -> int:
        """Tokens left to compute, less the aging credit of the steps since admission (lower goes first)."""
        waited = self.num_steps - request.admitted_at_step
        return request.num_prompt_tokens_left - PREFILL_AGING_TOKENS_PER_STEP * waited

    def _prefill_budget(self, plan: StepPlan, room: int, prompts: list[Request]) -> int:
        """Prompt tokens this step may compute.

        A step lasts as long as its prompt tokens take (~8 ms each per CPU core) and every decoding stream waits
        for it. While the prompts being computed outnumber the streams decoding (a burst: requests arriving
        together), they go in large chunks so they soon decode together in full batches; once most requests
        decode, arriving prompts go in small chunks so the running streams are held up little per token.
        `room`: the tokens the step's batch has left after the decoding ones; `prompts`: the computable prompts,
        the first to go first.
        """
        num_decoding = sum(len(r.live_sequences) for r in plan.decoding)
        prefilling = [r for r in self.running if r.status is RequestStatus.PREFILL]
        if num_decoding < len(prefilling):
            if num_decoding + len(prefilling) <= STAGGER_MAX_STREAMS:
                staggered = self._staggered_budget(prompts)
                if staggered:
                    return staggered
            return self._burst_budget(prompts, room)
        # Every decoding stream waits for the step's prompt tokens: with few streams a prompt may take larger
        # chunks (a returning turn's ~60 new tokens in one step instead of four, each also a second pass over the
        # weights: ~2x the cost per prompt token), with many the chunks stay small.
        shared = self.prompt_tokens_shared_while_decoding // max(1, num_decoding)
        budget = max(self.max_prefill_tokens_while_decoding, shared, self._spread_budget(plan, prompts))
        if self.prompt_tokens_shared_while_decoding:
            budget = max(budget, self._whole_prompts_budget(prompts, WHOLE_PROMPT_STRETCH * budget))
        return min(budget, self.max_prefill_tokens)

    @staticmethod
    def _whole_prompts_budget(prompts: list[Request], limit: int) -> int:
        """The tokens left of the prompts first in line that together fit `limit`, so that they finish in this
        step: a returning conversation's new tokens (~50-150) in one step rather than three or four, each of
        which would be another pass over the weights for every decoding stream."""
        total = 0
        for request in prompts:
            if total + request.num_prompt_tokens_left > limit:
                break
            total += request.num_prompt_tokens_left
        return total

    def _spread_budget(self, plan: StepPlan, prompts: list[Request]) -> int:
        """Prompt tokens per step that finish the prompts being computed by the time the first decoding request
        may end (its `max_tokens`): the steps its tokens take are made anyway, and each extra step that carries a
        chunk beside decoding streams is one more pass over the weights.

        Why: eight conversations with 2,000-token histories at 8 slots; a prompt computed 36 tokens a step
        beside 7 streams answering 24 tokens took 61 steps, and once the streams had finished, their next turns
        waited behind it (docs/benchmarks.md, 48x5). Spread over the 24 steps, it finishes as they do.
        """
        if not plan.decoding or self.prompt_tokens_shared_while_decoding <= 0:
            return 0
        steps_left = min(
            r.max_new_tokens - max((len(s.output_ids) for s in r.live_sequences), default=0) for r in plan.decoding
        )
        backlog = sum(r.num_prompt_tokens_left for r in prompts)
        return -(-backlog // max(1, steps_left))

    def _staggered_budget(self, prompts: list[Request]) -> int:
        """Prompt tokens for a step of a small burst: the prompts first in line up to the first that brings them to
        STAGGER_MIN_TOKENS (at most `max_prefill_tokens`); 0 when that would be every prompt anyway.

        Why: a CPU computes prompt tokens at the same rate in any chunk size, so a burst of three returning turns
        of ~100 new tokens computed in one step gives all three their first token after ~300 tokens' time; one a
        step gives them after ~100, ~200 and ~300, for two extra passes over the weights for the first streams'
        tokens (a pass for a stream or two costs about what a few prompt tokens do). With many streams those
        passes are dear, so large bursts stay whole (`_burst_budget`).
        """
        total = 0
        for index, request in enumerate(prompts):
            total += request.num_prompt_tokens_left
            if total >= STAGGER_MIN_TOKENS:
                return 0 if index == len(prompts) - 1 else min(total, self.max_prefill_tokens)
        return 0

    def _burst_budget(self, prompts: list[Request], room: int) -> int:
        """Prompt tokens for a step of a burst: `max_prefill_tokens`, or the computable `prompts`' remaining tokens
        when they overrun it by at most `BURST_STRETCH` and fit the `room` the step's batch has left.

        Why: what a burst step leaves over is computed in small chunks beside the streams the burst just
        started, and each such step costs all of them a second pass over the weights. At 16 concurrent streams
        of ~40-token prompts the 512-token step left two prompts that took four steps of ~420 ms instead of
        ~215 (docs/benchmarks.md); finishing them in the burst step makes it ~0.5 s longer once instead.
        """
        remaining = sum(r.num_prompt_tokens_left for r in prompts)
        if remaining <= min(self.max_prefill_tokens * BURST_STRETCH, room):
            return max(remaining, self.max_prefill_tokens)
        return self.max_prefill_tokens

    def remove(self, request: Request) -> None:
        """Drop a finished or aborted request from the queues (slots are released by the engine)."""
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)


def padding_slots(batch_seq_ids: list[int], free: set[int], max_seqs: int, pad_to: int) -> list[int]:
    """Free sequence ids to give one throwaway token so that a step's sequences form a single run of `pad_to`
    consecutive ids; [] when padding would not pay or cannot be done.

    Why: with one KV stream per sequence, llama.cpp computes a batch in one pass over the weights per run of
    consecutive sequence ids, and its CPU matrix kernels have a fast path from 16 rows on: on an AVX2 core 15
    decoding sequences take 274 ms, 16 take 213 ms, and 15 split by one free id into two runs 367 ms (docs/
    benchmarks.md, `llamafoundry bench shapes`). Padding pays when the step is just short of `pad_to` sequences
    (at least `pad_to - 2`), or split into several runs with more than half of `pad_to` sequences.

    Args:
        batch_seq_ids: the sequence ids with tokens in this step.
        free: sequence ids that hold no running sequence and have room for one more token.
        max_seqs: sequence ids of the context (0 .. max_seqs - 1).
        pad_to: the pass size to reach (0: never pad).
    """
    ids = sorted(set(batch_seq_ids))
    count = len(ids)
    if pad_to <= 0 or not ids or count >= pad_to or pad_to > max_seqs:
        return []
    runs = 1 + sum(1 for a, b in zip(ids, ids[1:], strict=False) if b != a + 1)
    if count < pad_to - 2 and not (runs > 1 and count > pad_to // 2):
        return []
    members = set(ids)
    # the windows of pad_to consecutive ids that contain every sequence of the step, highest start first (the
    # scheduler hands out low ids, so free ids tend to sit above the running ones)
    for start in range(min(ids[0], max_seqs - pad_to), max(0, ids[-1] - pad_to + 1) - 1, -1):
        extra = [s for s in range(start, start + pad_to) if s not in members]
        if all(s in free for s in extra):
            return extra
    return []
