"""The prefix cache's tiers beyond the sequence slots: host memory (host_cache.py) and disk (disk_cache.py),
searched and filled together by the slot-level `PrefixCache`.

When states are saved:
- with a disk tier, as soon as a sequence finishes (write-through): the disk is what survives a restart and what
  the other replicas read, so it must not wait for the slot to be needed;
- otherwise when its slot is needed by another request (the slot keeps its cells until then, and loading them
  from a slot is free).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from llamafoundry.engine.disk_cache import DiskCache
from llamafoundry.engine.host_cache import HostCache, StateBytes

RAM, DISK = "ram", "disk"


@dataclass(frozen=True)
class TierHit:
    tier: str  # RAM or DISK
    key: Hashable
    length: int  # prompt tokens the state holds


@dataclass
class TierStats:
    """Counters for benchmarks and metrics (read from other threads: plain numbers)."""

    tokens_saved: int = 0
    save_seconds: float = 0.0
    tokens_loaded: int = 0
    load_seconds: float = 0.0
    num_loads: int = 0
    num_failed_loads: int = 0


class KvTiers:
    """Host memory and disk tiers of saved KV states.

    Args:
        ram: the host-memory pool, or None.
        disk: the disk tier, or None.
    """

    def __init__(self, ram: HostCache | None, disk: DiskCache | None) -> None:
        self.ram = ram
        self.disk = disk
        if ram is not None:  # the disk tier's writer thread may still be writing a buffer the RAM tier drops
            ram.recycles_buffers = disk is None
        self.stats = TierStats()

    @property
    def writes_through(self) -> bool:
        """Save every finished sequence at once (see the module docstring)."""
        return self.disk is not None

    def find(self, prompt: Sequence[int]) -> TierHit | None:
        """The saved state sharing the longest prefix with `prompt` (host memory first on equal length)."""
        best: TierHit | None = None
        if self.ram is not None:
            key, length = self.ram.longest(prompt)
            if key is not None:
                best = TierHit(RAM, key, length)
        if self.disk is not None:
            name, length = self.disk.longest(prompt)
            if name is not None and (best is None or length > best.length):
                best = TierHit(DISK, name, length)
        return best

    def covers(self, tokens: Sequence[int]) -> bool:
        """Every tier that keeps states already holds `tokens` (or a longer sequence starting with them)."""
        return all(tier.covers(tokens) for tier in (self.ram, self.disk) if tier is not None)

    def keep(self, tokens: Sequence[int], save: Callable[[bytearray | None], StateBytes]) -> bool:
        """Keep the state of exactly `tokens`, saved by `save(into)` only if some tier lacks it (`into`: a buffer
        to write it over, or None). True when a tier holds it afterwards."""
        need_ram = self.ram is not None and not self.ram.covers(tokens)
        need_disk = self.disk is not None and not self.disk.covers(tokens)
        if not (need_ram or need_disk):
            return self.ram is not None or self.disk is not None
        start = time.perf_counter()
        data = save(self.ram.spare_buffer() if self.ram is not None else None)
        self.stats.save_seconds += time.perf_counter() - start
        self.stats.tokens_saved += len(tokens)
        kept = bool(need_ram and self.ram is not None and self.ram.put(tokens, data))
        if need_disk and self.disk is not None:
            kept = self.disk.put(tokens, data) or kept
        return kept

    @contextlib.contextmanager
    def open(self, hit: TierHit) -> Iterator[StateBytes | None]:
        """The saved state of a hit, to load into a slot (None when it is gone: a file deleted by another process,
        an entry evicted to make room for the state of the slot it was to load into)."""
        if hit.tier == RAM:
            assert self.ram is not None and isinstance(hit.key, int)
            entry = self.ram.take(hit.key)
            yield None if entry is None else entry.data
            return
        assert self.disk is not None
        with self.disk.open_state(str(hit.key)) as state:
            yield state

    def record_load(self, hit: TierHit, num_tokens: int, seconds: float, ok: bool) -> None:
        if not ok:
            self.stats.num_failed_loads += 1
            if hit.tier == DISK and self.disk is not None:
                self.disk.forget(str(hit.key))  # a state llama.cpp refuses will be refused again
            return
        self.stats.num_loads += 1
        self.stats.tokens_loaded += num_tokens
        self.stats.load_seconds += seconds

    def close(self) -> None:
        """Finish writing what was handed to the disk tier."""
        if self.disk is not None:
            self.disk.flush()
            self.disk.close()


def build_kv_tiers(ram_bytes: int, disk_dir: Path | None, disk_bytes: int, fingerprint: str) -> KvTiers | None:
    """The tiers a server runs with: host memory when `ram_bytes` > 0, disk when a directory is given (and
    `disk_bytes` > 0); None when neither."""
    ram = HostCache(ram_bytes) if ram_bytes > 0 else None
    disk = DiskCache(disk_dir, fingerprint, disk_bytes) if disk_dir is not None and disk_bytes > 0 else None
    return KvTiers(ram, disk) if ram is not None or disk is not None else None
