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

    @property
    def num_bytes(self) -> int:
        return len(self.data) + self.tokens.itemsize * len(self.tokens)


class HostCache:
    """KV states of token sequences in RAM, within `budget_bytes`. Used by the engine thread only.

    Args:
        budget_bytes: most bytes of states (and their tokens) held; 0 holds nothing.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.num_hits = 0  # states loaded into a slot
        self.num_stored = 0
        self.num_evicted = 0
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
        while self.used_bytes + entry.num_bytes > self.budget_bytes and self._entries:
            victim = min(self._entries, key=lambda k: self._entries[k].priority)
            self._clock = self._entries[victim].priority
            self._drop(victim)
            self.num_evicted += 1
        entry.priority = self._priority(entry)
        key = next(self._keys)
        self._entries[key] = entry
        self._index.add(key, entry.tokens)
        self.used_bytes += entry.num_bytes
        self.num_stored += 1
        return True

    def clear(self) -> None:
        for key in list(self._entries):
            self._drop(key)

    def _priority(self, entry: CachedState) -> float:
        return self._clock + (1 + entry.hits) * recompute_cost(len(entry.tokens)) / entry.num_bytes

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self._index.remove(key)
        self.used_bytes -= entry.num_bytes
