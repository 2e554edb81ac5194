"""Prefix caching across requests: which token prefixes the KV cache already holds, and under which sequence id.

A prefix cached under any sequence id is given to another by `seq_copy` of the whole sequence and a `seq_remove`
of what follows the prefix: with one KV stream per sequence that copies buffers (milliseconds, against seconds
to recompute a long prompt on a CPU); in a unified cache the cells gain an owner. Two kinds of holders are
searched:

- running sequences (the engine lists them each time: a prompt being prefilled, or prompt + generated tokens);
- idle slots: when a request finishes, its sequence slot goes back to the free list but keeps its cells, and
  this class remembers what they hold. A slot handed to a new request is either reused in place (its cached
  prefix kept, the rest trimmed) or wiped, least recently used first.

Positions match by construction: a prefix is the same tokens at the same positions 0..n-1, so its keys and
values are the same whichever sequence computed them.

Memory stays bounded as before: every sequence id holds at most `ctx_size` positions whether it is running or
idle, and there are `max_seqs` ids over `max_seqs * ctx_size` cells.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from llamafoundry.engine.sequence import Request, RequestStatus
from llamafoundry.model.base import ModelRunner

TokenIds = Sequence[int]


def common_prefix_len(a: TokenIds, b: TokenIds) -> int:
    """Length of the longest common prefix of two token lists.

    List slices compare in C: the equal case (the common one) is one comparison, a mismatch a binary search.
    """
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


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
        runner: the model whose unified KV cache is shared (`seq_copy` / `seq_remove` by position range).
        min_tokens_to_wait: a new prompt pauses its prefill while an earlier request is still computing at least
            this many more tokens of the same prefix, then copies them instead of computing them twice. Short
            shared heads (the chat template's system header) are not worth a step of waiting.
    """

    def __init__(self, runner: ModelRunner, min_tokens_to_wait: int = 64) -> None:
        self.runner = runner
        self.min_tokens_to_wait = min_tokens_to_wait
        self._idle: OrderedDict[int, TokenIds] = OrderedDict()  # free slot -> tokens its cells hold, LRU first

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
        it, else copied. Caches the slots held are moved to a free slot holding nothing or a less recently used
        cache, rather than lost.

        Args:
            request: the admitted request.
            slots: its slots; the prompt is computed on the first.
            free: the slots still free after this admission (where displaced caches may go).
            running: the running requests (their sequences hold prefixes too).
        """
        first = slots[0]
        best_seq, best_len = self._best_holder(request, running, exclude=set())
        if best_len and best_seq == first:
            del self._idle[first]
            self.runner.seq_remove(first, best_len, -1)
            request.num_computed = request.num_cached_tokens = best_len
        else:
            if first in self._idle:
                self._displace(first, free, protected=best_seq)
            if best_len:  # copied before the source is displaced: it may be one of this request's other slots
                self._copy_prefix(best_seq, first, best_len, request)
        for seq_id in slots[1:]:
            if seq_id in self._idle:
                self._displace(seq_id, free, protected=-1)

    def _displace(self, seq_id: int, free: list[int], protected: int) -> None:
        """Free `seq_id` for a new request, moving its cache to a free slot holding nothing or an older cache."""
        age = list(self._idle).index(seq_id)
        held = self._idle.pop(seq_id)
        empty = [s for s in free if s not in self._idle and s != protected]
        older = [s for s in list(self._idle)[:age] if s in free and s != protected]
        victim = max(empty) if empty else (older[0] if older else None)
        if victim is not None:
            self._idle.pop(victim, None)
            self.runner.seq_remove(victim)
            self.runner.seq_copy(seq_id, victim)  # queued: llama.cpp copies before the next decode writes
            self._idle[victim] = held
        self.runner.seq_remove(seq_id)

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

    def _best_holder(self, request: Request, running: list[Request], exclude: set[int]) -> tuple[int, int]:
        """(seq_id, length) of the longest prefix of the prompt held anywhere, at most all but its last token."""
        best_seq, best_len = -1, 0
        for holder in self._holders(running):
            if holder.seq_id not in exclude:
                length = match_len(request.prompt_ids, holder.head, holder.tail, holder.tail_len)
                if length > best_len:
                    best_seq, best_len = holder.seq_id, length
        return best_seq, min(best_len, request.num_prompt_tokens - 1)  # the last token is computed for its logits

    def _copy_prefix(self, src: int, dst: int, length: int, request: Request) -> None:
        """Give `dst` the first `length` positions of `src`: a whole-sequence copy, then a trim (the only copy
        llama.cpp makes between per-sequence KV streams; in a unified cache the cells gain an owner)."""
        self.runner.seq_remove(dst)
        self.runner.seq_copy(src, dst)
        self.runner.seq_remove(dst, length, -1)
        if src in self._idle:
            self._idle.move_to_end(src)
        request.num_cached_tokens += length - request.num_computed
        request.num_computed = length

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
        which was sampled but never computed)."""
        self._idle.pop(seq_id, None)
        self._idle[seq_id] = request.prompt_ids + output_ids[:-1]

    def clear(self) -> None:
        """Wipe every idle slot (after a failed decode, when the cache state is in doubt)."""
        for seq_id in self._idle:
            self.runner.seq_remove(seq_id)
        self._idle.clear()
