"""The host-memory tier on its own: found by the longest token prefix, evicted by value within its byte budget."""

from __future__ import annotations

import random
from pathlib import Path

from llamafoundry.engine.disk_cache import DiskCache
from llamafoundry.engine.host_cache import HostCache
from llamafoundry.engine.kv_tiers import KvTiers
from llamafoundry.engine.prefix_index import BLOCK_TOKENS, PrefixIndex


def tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, 50_000) for _ in range(n)]


def state(n: int) -> bytes:
    return bytes(100 * n)  # 100 bytes a token


def test_the_longest_prefix_is_found_across_blocks_and_into_a_partial_one() -> None:
    index = PrefixIndex()
    a, b = tokens(1, 100), tokens(2, 70)
    index.add("a", a)
    index.add("b", b)
    index.add("a-short", a[:40])
    assert index.longest(a[:90] + [7, 7]) == ("a", 90)  # 2 whole blocks, then 26 tokens into the third
    assert index.longest(a[:40] + tokens(3, 50)) == ("a-short", 40)  # equal matches: the shorter entry
    assert index.longest(b[: BLOCK_TOKENS - 1]) == (None, 0)
    assert index.longest(tokens(4, 200)) == (None, 0)
    assert sorted(index.prefixes_of(a + [1, 2])) == ["a", "a-short"]
    assert index.shared_prefixes(a[:90] + [7, 7]) == {"a": 90, "a-short": 40}  # b shares no whole block
    assert index.shared_prefixes(a[:20]) == {}
    index.remove("a")
    assert index.longest(a) == ("a-short", 40) and len(index) == 2


def test_an_entry_used_again_outlives_newer_one_off_entries() -> None:
    cache = HostCache(budget_bytes=3 * (100 * 64 + 4 * 64))  # three 64-token states
    favourite = tokens(0, 64)
    assert cache.put(favourite, state(64))
    for _ in range(3):
        key, length = cache.longest(favourite + [1])
        assert length == 64 and key is not None
        cache.take(key)
    for seed in range(1, 6):  # a wave of one-off conversations: least recently used would evict the favourite
        assert cache.put(tokens(seed, 64), state(64))
    assert cache.longest(favourite)[1] == 64
    assert cache.longest(tokens(1, 64))[1] == 0  # an older one-off went instead
    assert len(cache) == 3 and cache.used_bytes <= cache.budget_bytes and cache.num_evicted == 3


def test_a_longer_history_replaces_its_prefix_and_keeps_its_hits() -> None:
    cache = HostCache(budget_bytes=10**6)
    turn_1 = tokens(0, 64)
    cache.put(turn_1, state(64))
    key, _ = cache.longest(turn_1)
    assert key is not None
    cache.take(key)
    turn_2 = turn_1 + tokens(1, 40)
    cache.put(turn_2, state(104))
    assert len(cache) == 1 and cache.covers(turn_1) and cache.covers(turn_2)
    key, length = cache.longest(turn_2 + [5])
    assert length == 104 and key is not None and cache.take(key).hits == 2
    assert cache.used_bytes == 104 * 104


def test_the_budget_is_never_exceeded_and_oversized_states_are_refused() -> None:
    budget = 50_000
    cache = HostCache(budget_bytes=budget)
    assert not cache.put(tokens(0, 600), state(600))  # 60 kB: more than the whole budget
    assert not cache.put(tokens(0, 10), state(10))  # shorter than a block: not indexed, not kept
    rng = random.Random(5)
    kept = []
    for seed in range(200):
        toks = tokens(seed, rng.randrange(32, 200))
        assert cache.put(toks, state(len(toks)))
        kept.append(toks)
        key, _ = cache.longest(kept[rng.randrange(len(kept))])
        if key is not None and rng.random() < 0.5:
            cache.take(key)
        assert cache.used_bytes <= budget
    assert cache.used_bytes == sum(e.num_bytes for e in cache._entries.values())
    cache.clear()
    assert len(cache) == 0 and cache.used_bytes == 0 and cache.longest(kept[-1]) == (None, 0)


def bytes_of(*lengths: int) -> int:
    return sum(100 * n + 4 * n for n in lengths)  # a state and its tokens (int32)


def test_a_history_saved_again_with_a_reworded_answer_gives_way_first() -> None:
    # Llama 3's template trims an answer's leading space, so a conversation's next turn parts from its saved state
    # where the answer starts: two entries share the whole history before it. Kept at full value, the older copy
    # pushed out other conversations (here `other`, the least valuable entry at full value).
    head = tokens(0, 300)
    turn_1 = head + tokens(1, 24)
    turn_2 = head + tokens(2, 24) + tokens(3, 40)
    other = tokens(9, 200)
    cache = HostCache(budget_bytes=bytes_of(200, 324, 364))
    for toks in (other, turn_1, turn_2):
        assert cache.put(toks, state(len(toks)))
    assert cache.put(tokens(8, 200), state(200))
    assert cache.num_evicted == 1
    assert cache.longest(other)[1] == 200
    assert cache.longest(turn_1)[1] == 300  # the history is still there, in turn 2's state
    assert cache.covers(turn_2)


def test_when_the_newer_copy_goes_the_older_is_still_worth_only_what_no_newer_entry_holds() -> None:
    head = tokens(0, 300)
    turn_1 = head + tokens(1, 24)
    turn_2 = head + tokens(2, 24) + tokens(3, 40) + tokens(4, 24)
    turn_3 = turn_2[:364] + tokens(5, 24) + tokens(6, 40)  # parts from turn 2 where its answer starts
    other = tokens(9, 200)
    cache = HostCache(budget_bytes=bytes_of(200, 324, 388, 428))
    for toks in (other, turn_1, turn_2, turn_3):
        assert cache.put(toks, state(len(toks)))
    assert cache.put(tokens(8, 200), state(200))  # evicts turn 2: 24 tokens of its own in 388
    assert cache.longest(turn_2)[1] == 364
    assert cache.put(tokens(7, 200), state(200))  # turn 1's history is still in turn 3: turn 1 goes, not `other`
    assert cache.longest(turn_1)[1] == 300
    assert cache.longest(other)[1] == 200
    assert cache.num_evicted == 2


def test_an_evicted_entrys_buffer_is_handed_out_once_for_the_next_save() -> None:
    cache = HostCache(budget_bytes=2 * (100 * 64 + 4 * 64 + 1))  # two 64-token states (a bytearray's +1)
    first = bytearray(state(64))
    cache.put(tokens(0, 64), first)
    cache.put(tokens(1, 64), bytearray(state(64)))
    assert cache.spare_buffer() is None  # nothing dropped yet
    cache.put(tokens(2, 64), bytearray(state(64)))  # evicts the first
    assert cache.spare_buffer() is first and cache.spare_buffer() is None
    cache.recycles_buffers = False  # beside a disk tier (KvTiers): its writer thread may still hold the buffer
    cache.put(tokens(3, 64), bytearray(state(64)))
    assert cache.num_evicted == 2 and cache.spare_buffer() is None


def test_a_reused_buffer_counts_the_memory_it_keeps_not_its_state_length() -> None:
    cache = HostCache(budget_bytes=10**6)
    big = bytearray(state(100))
    del big[100 * 64 :]  # a 100-token buffer holding a 64-token state keeps its allocation (CPython's bytearray)
    cache.put(tokens(0, 64), big)
    assert cache.used_bytes >= 100 * 100 + 4 * 64


def test_buffers_are_not_recycled_beside_a_disk_tier(tmp_path: Path) -> None:
    assert KvTiers(HostCache(10**6), None).ram.recycles_buffers  # type: ignore[union-attr]
    with_disk = KvTiers(HostCache(10**6), DiskCache(tmp_path, "fingerprint", budget_bytes=10**6))
    assert with_disk.ram is not None and not with_disk.ram.recycles_buffers
    with_disk.close()
