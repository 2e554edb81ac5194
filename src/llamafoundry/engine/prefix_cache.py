"""Prefix caching across requests: which token prefixes the KV cache already holds, and under which sequence id.

A prefix cached under any sequence id is given to another by `seq_copy` of the whole sequence and a `seq_remove`
of what follows the prefix (with one KV stream per sequence the runner copies the source's cells, milliseconds
against seconds to recompute a long prompt on a CPU; in a unified cache the cells gain an owner). Holders:

- running sequences (the engine lists them each time: a prompt being prefilled, or prompt + generated tokens);
- idle slots: when a request finishes, its sequence slot goes back to the free list but keeps its cells, and
  this class remembers what they hold;
- the tiers beyond the slots (kv_tiers.py: host memory, disk), when the engine has them: states saved out of
  the context, loaded into a slot with `seq_load`.

A slot handed to a new request (the scheduler hands out the lowest free id, for the batch layout) is reused in
place when it holds the prompt's longest prefix. Whatever else it holds is never just dropped while it could be
kept: it goes to a tier (or, without tiers, to a free slot holding nothing or an older cache). Trimming an idle
slot in place to the few tokens it shares with an unrelated prompt (the chat template's header) used to wipe
the rest of a conversation that was about to return.

Positions match by construction: a prefix is the same tokens at the same positions 0..n-1, so its keys and
values are the same whichever sequence computed them.

Memory stays bounded as before: every sequence id holds at most `ctx_size` positions whether it is running or
idle, and there are `max_seqs` ids over `max_seqs * ctx_size` cells; the tiers have byte budgets of their own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from llamafoundry.engine.kv_tiers import DISK, RAM, KvTiers, TierHit
from llamafoundry.engine.prefix_index import common_prefix_len
from llamafoundry.engine.sequence import Request, RequestStatus
from llamafoundry.model.base import ModelRunner

MISS = "miss"  # a request none of whose prompt was found in a cache

TokenIds = Sequence[int]
__all__ = ["Holder", "PrefixCache", "common_prefix_len", "match_len"]


def match_len(prompt: TokenIds, head: TokenIds, tail: TokenIds = (), tail_len: int = 0) -> int:
    """Common prefix of `prompt` with `head` followed by the first `tail_len` tokens of `tail`."""
    length = common_prefix_len(prompt, head)
    if length < len(head) or tail_len <= 0 or length >= len(prompt):
        return length
    rest = prompt[len(head) : len(head) + tail_len]
    return length + common_prefix_len(rest, tail[: len(rest)])


@dataclass(frozen=True)
class Holder:
    """A sequence id whose cache holds `head` + `tail[:tail_len]` at positions 0, 1, ..."""

    seq_id: int
    head: TokenIds
    tail: TokenIds = ()
    tail_len: int = 0


class PrefixCache:
    """Finds, shares and retires cached prompt prefixes; the engine calls it at admission, each step, and when a
    sequence finishes.

    Args:
        runner: the model whose KV cache is shared (`seq_copy` / `seq_remove` by position range, `seq_save` /
            `seq_load` for the tiers).
        min_tokens_to_wait: a new prompt pauses its prefill while an earlier request is still computing at least
            this many more tokens of the same prefix, then copies them instead of computing them twice. Short
            shared heads (the chat template's system header) are not worth a step of waiting.
        tiers: host-memory and disk tiers for states that leave the slots, or None (idle slots only).
    """

    def __init__(self, runner: ModelRunner, min_tokens_to_wait: int = 64, tiers: KvTiers | None = None) -> None:
        self.runner = runner
        self.min_tokens_to_wait = min_tokens_to_wait
        self.tiers = tiers
        self._idle: OrderedDict[int, TokenIds] = OrderedDict()  # free slot -> tokens its cells hold, LRU first
        # prompt tokens taken from a cache instead of computed, by where they came from
        self.num_reused_tokens: dict[str, int] = {"slot": 0, RAM: 0, DISK: 0}
        self.num_computed_tokens = 0  # prompt tokens computed: not found in any cache (the misses)
        # finished requests by where the head of their prompt came from (a tier, a slot) or "miss" (nowhere)
        self.num_requests: dict[str, int] = {"slot": 0, RAM: 0, DISK: 0, MISS: 0}
        self.slot_copy_seconds = 0.0  # copying sequences between slots (no sequence decodes meanwhile)

    def cached_length(self, seq_id: int) -> int:
        """Positions an idle slot's cells hold (0 for a slot holding nothing)."""
        return len(self._idle.get(seq_id, ()))

    @property
    def idle_slots(self) -> list[int]:
        """Free slots that still hold cells, least recently used first."""
        return list(self._idle)

    # ---- admission: what the new request's slots start with ---------------------------------------

    def claim(self, request: Request, slots: list[int], free: list[int], running: list[Request]) -> None:
        """Set up an admitted request's slots (the scheduler hands out the lowest free ids, which keeps the
        running streams in few runs of consecutive ids, one pass over the weights each).

        The first slot gets the longest prompt prefix held anywhere: kept in place when the slot itself holds
        it, else loaded from a tier or copied from another slot. What the slots held beyond that is kept (in a
        tier, or in a free slot), not lost.

        Args:
            request: the admitted request.
            slots: its slots; the prompt is computed on the first.
            free: the slots still free after this admission (where displaced caches may go).
            running: the running requests (their sequences hold prefixes too).
        """
        first = slots[0]
        best_seq, best_len = self._best_holder(request, running, exclude=set(), prefer=first)
        hit = self._tier_hit(request, best_len)
        in_place = hit is None and best_len > 0 and best_seq == first
        if first in self._idle:
            self._vacate(first, free, protected=best_seq, keep_cells=in_place)
        if hit is None or not (self._load(hit, first, request) or self._load_found_again(request, best_len, first)):
            if in_place:
                self.runner.seq_remove(first, best_len, -1)
                request.num_computed = request.num_cached_tokens = best_len
                self.num_reused_tokens["slot"] += best_len
            elif best_len and best_seq != first:  # before the source is vacated: it may be one of these slots
                self._copy_prefix(best_seq, first, best_len, request)
                if len(self._idle.get(best_seq, ())) == best_len:  # moved, not copied: the request holds it all
                    del self._idle[best_seq]
                    self.runner.seq_remove(best_seq)
        for seq_id in slots[1:]:
            if seq_id in self._idle:
                self._vacate(seq_id, free, protected=-1, keep_cells=False)

    def _tier_hit(self, request: Request, slot_len: int) -> TierHit | None:
        """A saved state holding more of the prompt than any slot does (loading it costs ~1 ms per 100 tokens,
        computing a token ~10 ms), or None."""
        if self.tiers is None:
            return None
        hit = self.tiers.find(request.prompt_ids)
        if hit is None or min(hit.length, request.num_prompt_tokens - 1) <= slot_len:
            return None
        return hit

    def _load_found_again(self, request: Request, slot_len: int, seq_id: int) -> bool:
        """After a hit could not be loaded: vacating the slot may have saved a state that replaced it (a longer one,
        or one that evicted it from a full budget); search the tiers once more."""
        hit = self._tier_hit(request, slot_len)
        return hit is not None and self._load(hit, seq_id, request)

    def _load(self, hit: TierHit, seq_id: int, request: Request) -> bool:
        """Load a tier's state into `seq_id` and keep the prompt's part of it; False when it could not be loaded."""
        assert self.tiers is not None
        length = min(hit.length, request.num_prompt_tokens - 1)
        start = time.perf_counter()
        with self.tiers.open(hit) as state:
            is_loaded = state is not None and self.runner.seq_load(seq_id, state)
        self.tiers.record_load(hit, length, time.perf_counter() - start, is_loaded)
        if not is_loaded:
            return False
        self.runner.seq_remove(seq_id, length, -1)
        request.num_cached_tokens += length - request.num_computed
        request.num_computed = length
        self.num_reused_tokens[hit.tier] += length
        request.prefix_tier = hit.tier
        return True

    def _vacate(self, seq_id: int, free: list[int], protected: int, keep_cells: bool) -> None:
        """Free idle slot `seq_id` for a new request. What it holds is kept unless another slot or a tier already
        holds it: saved to a tier, else moved to a free slot holding nothing or an older cache. `keep_cells`:
        its cells stay (the new request reuses their prefix in place)."""
        age = list(self._idle).index(seq_id)
        held = self._idle.pop(seq_id)
        if not self._is_held_elsewhere(held):
            if self.tiers is None or not self.tiers.keep(held, partial(self.runner.seq_save, seq_id)):
                self._move_to_free_slot(seq_id, held, age, free, protected)
        if not keep_cells:
            self.runner.seq_remove(seq_id)

    def _move_to_free_slot(self, seq_id: int, held: TokenIds, age: int, free: list[int], protected: int) -> None:
        empty = [s for s in free if s not in self._idle and s != protected]
        older = [s for s in list(self._idle)[:age] if s in free and s != protected]
        victim = max(empty) if empty else (older[0] if older else None)
        if victim is not None:
            self._idle.pop(victim, None)
            self.runner.seq_remove(victim)
            self._copy_sequence(seq_id, victim)
            self._idle[victim] = held

    def _is_held_elsewhere(self, tokens: TokenIds) -> bool:
        """Another idle slot, or the tiers, hold `tokens` or a longer sequence that starts with them."""
        if any(common_prefix_len(tokens, other) == len(tokens) for other in self._idle.values()):
            return True
        return self.tiers is not None and self.tiers.covers(tokens)

    # ---- every step: share what other sequences hold ---------------------------------------------

    def share(self, running: list[Request]) -> None:
        """Copy into each new prompt the longest prefix any other sequence holds; pause its prefill while an
        earlier request is computing a longer shared prefix (so a system prompt sent by 8 clients at once is
        computed once, not 8 times)."""
        prefilling = [r for r in running if r.status is RequestStatus.PREFILL]
        for index, request in enumerate(prefilling):
            if request.is_prefix_searched and not request.waits_for_prefix:
                continue
            request.is_prefix_searched = True
            self._copy_longest_prefix(request, running)
            last = request.num_prompt_tokens - 1
            ahead = max((common_prefix_len(request.prompt_ids, r.prompt_ids) for r in prefilling[:index]), default=0)
            request.waits_for_prefix = min(ahead, last) - request.num_computed >= self.min_tokens_to_wait

    def _copy_longest_prefix(self, request: Request, running: list[Request]) -> None:
        best_seq, best_len = self._best_holder(request, running, exclude=set(request.seq_ids))
        if best_len > request.num_computed:
            self._copy_prefix(best_seq, request.sequences[0].seq_id, best_len, request)

    def _best_holder(
        self, request: Request, running: list[Request], exclude: set[int], prefer: int = -1
    ) -> tuple[int, int]:
        """(seq_id, length) of the longest prefix of the prompt held anywhere, at most all but its last token.
        A tie goes to `prefer` (the request's own slot: reused in place, nothing copied), then to the holder with
        the fewest cells: a copy moves all of them (a chat header shared by every slot is copied from a prompt
        just started, not from a 2,000-token history)."""
        best_seq, best = -1, (0, False, 0)
        last = request.num_prompt_tokens - 1  # the last token is computed for its logits
        for holder in self._holders(running):
            if holder.seq_id not in exclude:
                length = min(match_len(request.prompt_ids, holder.head, holder.tail, holder.tail_len), last)
                rank = (length, holder.seq_id == prefer, -(len(holder.head) + holder.tail_len))
                if length and rank > best:
                    best_seq, best = holder.seq_id, rank
        return best_seq, best[0]

    def _copy_prefix(self, src: int, dst: int, length: int, request: Request) -> None:
        """Give `dst` the first `length` positions of `src`: a whole-sequence copy, then a trim (llama.cpp copies
        only whole sequences between per-sequence KV streams; in a unified cache the cells gain an owner)."""
        self.runner.seq_remove(dst)
        self._copy_sequence(src, dst)
        self.runner.seq_remove(dst, length, -1)
        if src in self._idle:
            self._idle.move_to_end(src)
        request.num_cached_tokens += length - request.num_computed
        self.num_reused_tokens["slot"] += length - request.num_computed
        request.num_computed = length

    def _copy_sequence(self, src: int, dst: int) -> None:
        started = time.perf_counter()
        self.runner.seq_copy(src, dst)
        self.slot_copy_seconds += time.perf_counter() - started

    def _holders(self, running: list[Request]) -> list[Holder]:
        """Every sequence id with cells: idle slots, prompts being computed, decoding sequences."""
        holders = [Holder(seq_id, tokens) for seq_id, tokens in self._idle.items()]
        for r in running:
            if r.status is RequestStatus.PREFILL and r.num_computed and r.sequences:
                holders.append(Holder(r.sequences[0].seq_id, r.prompt_ids[: r.num_computed]))
            elif r.status is RequestStatus.DECODING and not r.params.use_beam_search:
                # the newest token of each sequence is sampled but not yet in the cache
                holders += [
                    Holder(s.seq_id, r.prompt_ids, s.output_ids, len(s.output_ids) - 1) for s in r.live_sequences
                ]
        return holders

    # ---- a sequence finished ---------------------------------------------------------------------

    def retire(self, request: Request, seq_id: int, output_ids: list[int]) -> None:
        """A finished sequence's slot goes back to the free list holding prompt + output (all but the last token,
        which was sampled but never computed). Idle slots holding a prefix of it are wiped: it holds them too.
        With a disk tier the state is saved at once (kv_tiers.py)."""
        if request.sequences and request.sequences[0].seq_id == seq_id:  # once a request: its prompt's sequence
            self._count(request)
        tokens = request.prompt_ids + output_ids[:-1]
        for other, held in list(self._idle.items()):
            if other != seq_id and len(held) <= len(tokens) and common_prefix_len(tokens, held) == len(held):
                del self._idle[other]
                self.runner.seq_remove(other)
        self._idle.pop(seq_id, None)
        self._idle[seq_id] = tokens
        if self.tiers is not None and self.tiers.writes_through:
            self.tiers.keep(tokens, partial(self.runner.seq_save, seq_id))

    def _count(self, request: Request) -> None:
        """A finished request's hit or miss: the tier its prompt's state was loaded from, else "slot" when part
        of its prompt was shared from the KV cache, else a miss."""
        reused = request.num_cached_tokens
        self.num_computed_tokens += request.num_prompt_tokens - reused
        self.num_requests[request.prefix_tier or ("slot" if reused else MISS)] += 1

    def clear(self) -> None:
        """Wipe every idle slot (after a failed decode, when the cache state is in doubt; states saved in the
        tiers were whole when saved and stay)."""
        for seq_id in self._idle:
            self.runner.seq_remove(seq_id)
        self._idle.clear()
