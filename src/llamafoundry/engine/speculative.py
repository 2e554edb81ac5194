"""Prompt-lookup speculative decoding: drafts copied from a sequence's own tokens, checked in one pass.

A sequence that is copying (code edited in place, a quoted document, a list that repeats its pattern) writes
tokens it has already seen. When the newest tokens match an earlier n-gram of the prompt or the output, the
tokens that followed that occurrence are a cheap guess of what comes next. The engine puts the guess (the
draft) in the batch after the sequence's newest token, with logits at every position, samples position by
position as it would have step by step, and keeps the draft up to the first token the sampler did not choose,
plus the sampler's own token there. Outputs are those of plain decoding: each token is drawn from the same
logits with the same random stream (a draft is a fixed guess, so "sample, then compare" is exact rejection
sampling), and the logits of a longer batch differ from one-token steps only in the last bits, as under batching.

On a CPU a guess is not free: llama.cpp's kernels cost nearly as much per row below 16 rows, and every drafted
row asks for logits over the whole vocabulary. A pass of 16 tokens with logits on each costs 7-9 one-token steps
on this machine's cores (`llamafoundry bench speculative`), so a draft pays only when about half of it is kept.
Drafts therefore come only from long matches: the newest 9 tokens, which in ordinary prose mostly mean the answer
is copying. Replayed on real answers (docs/benchmarks.md), matches of 2-5 tokens cost prose 2-15% in passes whose
drafts were dropped; from 8 tokens on prose costs nothing measurable while code edits and quotes keep their gain
(9 alone does as well as trying 12 down to 8, with one index entry per token instead of five).
A sequence whose draft falls short of `min_accepted` kept tokens still waits 1, 2, 4 ... 64 steps before the
next one.

vLLM's `ngram` speculative method and llama.cpp's `llama-lookup` draft the same way; what is added here is the
gate, and drafts that continue a short cycle past the end of the history (a period-2 loop drafts 15 tokens,
not 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine's records hold drafters: at run time this module imports none of them
    from llamafoundry.engine.scheduler import StepPlan
    from llamafoundry.engine.sequence import Request
    from llamafoundry.engine.sequence import Sequence as EngineSequence

MAX_BACKOFF_STEPS = 64
# Most rows the drafting sequences of one step take (their own tokens and their drafts): 1 stream drafts up to 15
# tokens, 4 streams 15 each, 8 streams 7, 16 streams 3, more none.
MAX_DRAFT_ROWS = 64


class NgramDrafter:
    """One sequence's n-gram index over its prompt and output, and its gate.

    The engine calls `propose` before a step and, when the draft went into the batch, `record` after the step
    with how much of it the sampler kept.

    Args:
        max_draft: most tokens one draft holds (15: with the sequence's own token, one pass of 16 rows, the
            size at which llama.cpp's x86 kernels reach their fast path).
        min_accepted: drafted tokens a draft must get kept to count as worth its pass (about half of 15, the
            break-even on this machine's cores); below that the drafter backs off.
        ngram: how many of the newest tokens must stand earlier too (shorter matches are mostly chance).
    """

    def __init__(self, max_draft: int, min_accepted: int = 8, ngram: int = 9) -> None:
        if ngram < 1:
            raise ValueError("ngram must be at least 1")
        self.max_draft = max_draft
        self.min_accepted = min_accepted
        self.ngram = ngram
        self._tokens: list[int] = []  # prompt + output seen so far
        self._num_prompt = -1  # prompt tokens indexed; -1 until the first call
        # hash of an n-gram -> index of the token after its latest use (~100 bytes a token; the n-gram tuples
        # themselves would take 4x that, a lot for a 128k-token context)
        self._follower: dict[int, int] = {}
        self._step = 0
        self._resume_at = 0  # first step at which a draft may be proposed again
        self._num_misses = 0  # drafts in a row that fell short of min_accepted

    def propose(self, prompt_ids: Sequence[int], output_ids: Sequence[int], limit: int) -> list[int]:
        """The draft for the next step (at most `limit` tokens; [] when there is no match or while backing off).

        Args:
            prompt_ids: the request's prompt.
            output_ids: the sequence's tokens so far (the last one is sampled but not yet computed).
            limit: most tokens the draft may hold (batch room, token budget).
        """
        self._catch_up(prompt_ids, output_ids)
        self._step += 1
        limit = min(limit, self.max_draft)
        if limit <= 0 or self._step < self._resume_at:
            return []
        start = self._lookup()
        if start is None:
            return []
        tokens = self._tokens
        draft: list[int] = []
        for offset in range(start, start + limit):
            # past the end of the history the draft continues from itself: a cycle of period p repeats
            draft.append(tokens[offset] if offset < len(tokens) else draft[offset - len(tokens)])
        return draft

    def record(self, num_drafted: int, num_accepted: int) -> None:
        """How a proposed draft fared: `num_accepted` of its `num_drafted` tokens were kept."""
        if num_accepted >= min(self.min_accepted, num_drafted):
            self._num_misses = 0
            return
        self._num_misses += 1
        self._resume_at = self._step + 1 + min(MAX_BACKOFF_STEPS, 1 << (self._num_misses - 1))

    def _catch_up(self, prompt_ids: Sequence[int], output_ids: Sequence[int]) -> None:
        """Index the tokens added since the last call (the whole prompt on the first)."""
        if self._num_prompt < 0:
            self._num_prompt = len(prompt_ids)
            for token in prompt_ids:
                self._append(token)
        for token in output_ids[len(self._tokens) - self._num_prompt :]:
            self._append(token)

    def _append(self, token: int) -> None:
        tokens = self._tokens
        end = len(tokens)
        if end >= self.ngram:  # the n-gram ending here is (now latest) followed by `token`
            self._follower[hash(tuple(tokens[end - self.ngram : end]))] = end
        tokens.append(token)

    def _lookup(self) -> int | None:
        """Index of the token that followed the latest earlier use of the history's newest n-gram."""
        tokens, n = self._tokens, self.ngram
        if len(tokens) <= n:
            return None
        newest = tokens[-n:]
        start = self._follower.get(hash(tuple(newest)))
        if start is None or tokens[start - n : start] != newest:  # none, or another n-gram with the same hash
            return None
        return start


def assign_drafts(plan: StepPlan, room: int) -> int:
    """Give every decoding sequence of the step a draft of one common length, or none (`Sequence.draft`);
    returns the drafted tokens in all. `room`: tokens the step's batch has left.

    Why one length: with one KV stream per sequence, llama.cpp computes a batch in passes that take the same
    number of tokens from each sequence. One sequence's 15 drafted tokens beside 15 one-token sequences would be
    a second pass of 15 rows for that sequence alone, as long as the whole step again. Why a cap on rows
    (`MAX_DRAFT_ROWS`): past 16 rows a CPU pass costs ~8 ms per row on one core, so 16 streams each drafting 15
    tokens would make a 2 s step that pays only if most of every draft is kept.
    """
    pairs = [(request, seq) for request in plan.decoding for seq in request.live_sequences]
    for _, seq in pairs:
        seq.draft = []
    if not pairs:
        return 0
    per_seq = min(room // len(pairs), MAX_DRAFT_ROWS // len(pairs) - 1)
    drafts = [_draft(request, seq, per_seq) for request, seq in pairs]
    length = min(len(draft) for draft in drafts)
    for (_, seq), draft in zip(pairs, drafts, strict=True):
        seq.draft = draft[:length]
    return length * len(pairs)


def _draft(request: Request, seq: EngineSequence, room: int) -> list[int]:
    """The tokens guessed for `seq` this step: within `room`, and short enough that every drafted token plus the
    one sampled after them fits the sequence's token budget."""
    if seq.drafter is None:
        return []
    limit = min(room, request.max_new_tokens - len(seq.output_ids) - 1)
    return seq.drafter.propose(request.prompt_ids, seq.output_ids, limit)
