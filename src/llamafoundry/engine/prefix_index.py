"""Which stored token sequences share the longest prefix with a prompt: an index by chained block hashes.

Every stored sequence is registered under the hash of each of its whole blocks of `BLOCK_TOKENS` tokens, chained
(`h_k = hash(h_{k-1}, block k)`), so an entry holding `n` tokens sits in `n // BLOCK_TOKENS` buckets. A prompt's
chain is walked block by block while some entry shares it; the entries of the deepest bucket are then compared
token by token, which also extends the match into the next, partial, block and rules out a hash collision. A
lookup costs one pass over the prompt, however many entries there are.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Iterator, Sequence

BLOCK_TOKENS = 32  # sequences shorter than this are not indexed: the chat template's header alone is ~30 tokens


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
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


def block_hashes(tokens: Sequence[int]) -> Iterator[int]:
    """The chained hash of each whole block of `tokens` (hashes of int tuples are the same in every process)."""
    chain = 0
    for start in range(0, len(tokens) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
        chain = hash((chain, *tokens[start : start + BLOCK_TOKENS]))
        yield chain


class PrefixIndex:
    """Keys of stored token sequences, found by the longest prefix they share with a prompt."""

    def __init__(self) -> None:
        self._buckets: dict[int, set[Hashable]] = {}  # chain hash -> every entry holding that chain of blocks
        self._ends: dict[int, set[Hashable]] = {}  # chain hash -> the entries whose last whole block it is
        self._tokens: dict[Hashable, array[int]] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, key: object) -> bool:
        return key in self._tokens

    def keys(self) -> list[Hashable]:
        return list(self._tokens)

    def tokens(self, key: Hashable) -> array[int]:
        return self._tokens[key]

    def add(self, key: Hashable, tokens: Sequence[int]) -> bool:
        """Index `tokens` under `key`; False (nothing indexed) for a sequence shorter than one block."""
        if len(tokens) < BLOCK_TOKENS:
            return False
        self.remove(key)
        self._tokens[key] = tokens if isinstance(tokens, array) else array("i", tokens)
        chain = 0
        for chain in block_hashes(tokens):
            self._buckets.setdefault(chain, set()).add(key)
        self._ends.setdefault(chain, set()).add(key)
        return True

    def remove(self, key: Hashable) -> None:
        tokens = self._tokens.pop(key, None)
        if tokens is None:
            return
        chain = 0
        for chain in block_hashes(tokens):
            _discard(self._buckets, chain, key)
        _discard(self._ends, chain, key)

    def longest(self, prompt: Sequence[int]) -> tuple[Hashable | None, int]:
        """(key, length) of the entry sharing the longest prefix with `prompt`; (None, 0) when none shares a
        whole block. Among equal matches the shortest entry wins (the cheapest to load)."""
        prompt = _as_list(prompt)
        deepest: set[Hashable] = set()
        for chain in block_hashes(prompt):
            bucket = self._buckets.get(chain)
            if not bucket:
                break
            deepest = bucket
        best_key, best_len = None, 0
        for key in deepest:
            tokens = self._tokens[key]
            length = common_prefix_len(prompt, tokens.tolist())
            if length > best_len or (length == best_len and best_key is not None and len(tokens) < len(
                    self._tokens[best_key])):  # fmt: skip
                best_key, best_len = key, length
        return best_key, best_len

    def shared_prefixes(self, tokens: Sequence[int]) -> dict[Hashable, int]:
        """{key: common prefix length} of the entries sharing at least one whole block with `tokens`."""
        first = next(block_hashes(tokens), None)
        if first is None:
            return {}
        held = array("i", tokens)  # array against array compares in C, without a list of every entry's tokens
        return {key: common_prefix_len(held, self._tokens[key]) for key in self._buckets.get(first, ())}

    def prefixes_of(self, tokens: Sequence[int]) -> list[Hashable]:
        """Keys of the entries whose whole sequence is a prefix of `tokens` (made redundant by it)."""
        tokens = _as_list(tokens)
        found = []
        for chain in block_hashes(tokens):
            for key in self._ends.get(chain, ()):
                held = self._tokens[key]
                if len(held) <= len(tokens) and common_prefix_len(tokens, held.tolist()) == len(held):
                    found.append(key)
        return found


def _as_list(tokens: Sequence[int]) -> Sequence[int]:
    """Slices of an array never compare equal to slices of a list: compare lists."""
    return tokens.tolist() if isinstance(tokens, array) else tokens


def _discard(buckets: dict[int, set[Hashable]], chain: int, key: Hashable) -> None:
    bucket = buckets.get(chain)
    if bucket is not None:
        bucket.discard(key)
        if not bucket:
            del buckets[chain]
