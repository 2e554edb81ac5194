"""The host-memory tier of the prefix cache: KV states saved out of the llama.cpp context, in a RAM pool.

A sequence's state (`ModelRunner.seq_save`: positions, keys and values of its cells, about 32 KiB per token for a
1B model with an f16 cache) is kept with its tokens when its slot is needed by another request; a prompt that
starts with those tokens later loads it into a free slot (`seq_load`, a memory copy: milliseconds per thousand
tokens) instead of computing them again (seconds per thousand tokens on a CPU). Entries are found by the longest
token prefix they share with a prompt (prefix_index.py).

Eviction is by value, not recency (GreedyDual-Size-Frequency): an entry's priority is
`clock + (1 + hits) * cost / bytes`, where `cost` is what recomputing its tokens would take (growing a little
faster than the token count: attention reads every earlier position) and `clock` is the priority of the last
entry evicted, so an entry used often survives a wave of one-off ones, a large entry must earn its room, and old
favourites still age out. An entry whose tokens are a prefix of a new one is dropped (the new one holds them
too), passing its hits on.

An entry that shares only part of its tokens with a newer one is worth only what it alone holds: `cost` counts
the tokens past the newer entry's share. This is a conversation's previous turn when the chat template rendered
its answer differently from how it was generated (Llama 3's template trims an answer's leading space, so the new
history parts from the saved one where the answer starts): kept at full value it held its whole history a second
time and pushed out other conversations (48 conversations of ~2,000 tokens filled a 4.8 GiB budget). When the
newer entry goes, the older one's value comes back.

The buffer of an entry dropped to make room is kept (one, outside the budget) for the next state to be saved
into: on these virtual machines a 65 MB state saved into fresh memory took ~230 ms once the process held a few
GB, page fault after page fault, and 9 ms into a buffer the process already had.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from llamafoundry.engine.prefix_index import BLOCK_TOKENS, PrefixIndex

StateBytes = bytes | bytearray | memoryview


def recompute_cost(num_tokens: int) -> float:
    """Relative cost of computing `num_tokens` prompt tokens: linear, plus attention over earlier positions
    (on a CPU a prompt token at position 1,000 costs ~1.25x one at position 100; docs/benchmarks.md)."""
    return num_tokens * (1.0 + num_tokens / 4096.0)


@dataclass
class CachedState:
    tokens: array[int]
    data: StateBytes
    hits: int = 0
    priority: float = 0.0
    clock: float = 0.0  # the cache's clock when it was stored or last used (GreedyDual's inflation)
    shared: int = 0  # leading tokens a newer entry also holds
    shared_with: int | None = None  # that entry's key

    @property
    def num_bytes(self) -> int:
        """The memory it holds: a reused buffer may keep more than its state's length."""
        data = self.data.__alloc__() if isinstance(self.data, bytearray) else len(self.data)
        return data + self.tokens.itemsize * len(self.tokens)


class HostCache:
    """KV states of token sequences in RAM, within `budget_bytes`. Used by the engine thread only.

    Args:
        budget_bytes: most bytes of states (and their tokens) held; 0 holds nothing.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        # keep the largest buffer of the entries dropped since the last `spare_buffer()` for the next save to write
        # over; only while nothing else may still hold it (`KvTiers` turns it off beside a disk tier's writer thread)
        self.recycles_buffers = True
        self._spare: bytearray | None = None
        self.used_bytes = 0
        self.num_hits = 0  # states loaded into a slot
        self.num_stored = 0
        self.num_evicted = 0
        self.num_recycled = 0  # saves written over a dropped entry's buffer
        self._entries: dict[int, CachedState] = {}
        self._index = PrefixIndex()
        self._keys = itertools.count()
        self._clock = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, prompt: Sequence[int]) -> tuple[int | None, int]:
        """(key, length) of the entry sharing the longest prefix with `prompt`, or (None, 0)."""
        key, length = self._index.longest(prompt)
        return (key if isinstance(key, int) else None), length

    def covers(self, tokens: Sequence[int]) -> bool:
        """Some entry holds all of `tokens` (and maybe more)."""
        return self._index.longest(tokens)[1] == len(tokens) > 0

    def take(self, key: int) -> CachedState | None:
        """The entry to load into a slot, or None when it was evicted since it was found; counts a use, which
        raises its priority."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry.hits += 1
        entry.clock = self._clock
        entry.priority = self._priority(entry)
        self.num_hits += 1
        return entry

    def put(self, tokens: Sequence[int], data: StateBytes) -> bool:
        """Keep `data`, the state of exactly `tokens`, evicting lower-value entries to make room; False when it
        cannot be kept (larger than the whole budget, or shorter than an index block)."""
        entry = CachedState(array("i", tokens), data)
        if entry.num_bytes > self.budget_bytes or len(tokens) < BLOCK_TOKENS:
            return False
        for key in self._index.prefixes_of(tokens):
            assert isinstance(key, int)
            entry.hits += self._entries[key].hits
            self._drop(key)
        key = next(self._keys)
        self._share_with(key, tokens)
        while self.used_bytes + entry.num_bytes > self.budget_bytes and self._entries:
            victim = min(self._entries, key=lambda k: self._entries[k].priority)
            self._clock = max(self._clock, self._entries[victim].priority)  # a shared entry's value fell below it
            self._drop(victim)
            self.num_evicted += 1
        entry.clock = self._clock
        entry.priority = self._priority(entry)
        self._entries[key] = entry
        self._index.add(key, entry.tokens)
        self.used_bytes += entry.num_bytes
        self.num_stored += 1
        return True

    def spare_buffer(self) -> bytearray | None:
        """A dropped entry's buffer to save the next state into (handed out once), or None."""
        spare, self._spare = self._spare, None
        self.num_recycled += spare is not None
        return spare

    def clear(self) -> None:
        self._spare = None
        self._entries.clear()
        self._index = PrefixIndex()
        self.used_bytes = 0

    def _priority(self, entry: CachedState) -> float:
        own_cost = recompute_cost(len(entry.tokens)) - recompute_cost(entry.shared)
        return entry.clock + (1 + entry.hits) * own_cost / entry.num_bytes

    def _share_with(self, key: int, tokens: Sequence[int]) -> None:
        """The entries sharing a prefix with the new entry `key` are worth only what they hold beyond it (the
        newer of two entries is charged for what they share)."""
        for other, length in self._index.shared_prefixes(tokens).items():
            assert isinstance(other, int)
            entry = self._entries[other]
            if length > entry.shared:
                entry.shared, entry.shared_with = length, key
                entry.priority = self._priority(entry)

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self._index.remove(key)
        self.used_bytes -= entry.num_bytes
        data = entry.data
        if self.recycles_buffers and isinstance(data, bytearray):
            if self._spare is None or data.__alloc__() > self._spare.__alloc__():
                self._spare = data
        for other_key, other in self._entries.items():
            if other.shared_with == key:  # what they shared is its own again, but for what a newer entry holds
                shares = self._index.shared_prefixes(other.tokens)
                newer = [(length, k) for k, length in shares.items() if isinstance(k, int) and k > other_key]
                other.shared, other.shared_with = max(newer, default=(0, None))
                other.priority = self._priority(other)
