"""The disk tier: states survive a restart, several processes share one directory within one budget, and files
that are not whole states of this model are never used."""

from __future__ import annotations

import multiprocessing
import os
import random
from pathlib import Path

from llamafoundry.engine.disk_cache import SUFFIX, DiskCache, file_name

FINGERPRINT = "model-a|f16"


def tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, 50_000) for _ in range(n)]


def payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def read_state(cache: DiskCache, name: str) -> bytes | None:
    with cache.open_state(name) as state:
        return None if state is None else bytes(state)


def test_a_state_written_before_a_restart_is_found_after_it(tmp_path: Path) -> None:
    before = DiskCache(tmp_path, FINGERPRINT, budget_bytes=10**7)
    history = tokens(0, 300)
    assert before.put(history, payload(0, 50_000))
    before.close()  # writes what was handed over
    after = DiskCache(tmp_path, FINGERPRINT, budget_bytes=10**7)
    try:
        name, length = after.longest(history + tokens(1, 20))
        assert (name, length) == (file_name(history), 300)
        assert read_state(after, name) == payload(0, 50_000)
        assert DiskCache(tmp_path, "model-b|f16", 10**7).longest(history) == (None, 0)  # another model's directory
    finally:
        after.close()


def test_a_longer_history_replaces_its_prefix_on_disk(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, FINGERPRINT, budget_bytes=10**7)
    try:
        turn_1 = tokens(0, 100)
        cache.put(turn_1, payload(0, 1000))
        cache.put(turn_1 + tokens(1, 50), payload(1, 1500))
        cache.flush()
        assert [p.name for p in cache.dir.glob("*" + SUFFIX)] == [file_name(turn_1 + tokens(1, 50))]
        assert cache.covers(turn_1)
    finally:
        cache.close()


def test_truncated_foreign_and_vanished_files_are_misses(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, FINGERPRINT, budget_bytes=10**7)
    try:
        good, other = tokens(0, 64), tokens(1, 64)
        cache.put(good, payload(0, 4000))
        cache.put(other, payload(1, 4000))
        cache.flush()
        path = cache.dir / file_name(good)
        path.write_bytes(path.read_bytes()[:20])  # cut inside the header, as a crash mid-write would (without rename)
        assert read_state(cache, file_name(good)) is None and not path.exists()
        (cache.dir / file_name(other)).unlink()  # another replica evicted it
        assert read_state(cache, file_name(other)) is None
        (cache.dir / ("0" * 32 + SUFFIX)).write_bytes(b"not a state at all")
        cache.refresh()
        assert cache.longest(good) == (None, 0) and cache.longest(other) == (None, 0)
    finally:
        cache.close()


def _writer(root: str, seed: int, count: int, budget: int) -> None:
    cache = DiskCache(Path(root), FINGERPRINT, budget)
    rng = random.Random(seed)
    for index in range(count):
        cache.put(tokens(seed * 1000 + index, rng.randrange(40, 300)), payload(index, rng.randrange(2000, 20_000)))
        if index % 5 == 0:
            cache.longest(tokens(seed * 1000 + index - 3, 100))
    cache.close()


def test_processes_sharing_a_directory_keep_it_whole_and_within_budget(tmp_path: Path) -> None:
    budget = 200_000
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_writer, args=(str(tmp_path), seed, 40, budget)) for seed in range(1, 4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    reader = DiskCache(tmp_path, FINGERPRINT, budget)
    try:
        files = list(reader.dir.glob("*" + SUFFIX))
        assert files and sum(f.stat().st_size for f in files) <= budget
        assert not [p for p in os.listdir(reader.dir) if p.startswith(".tmp-")]
        for path in files:  # every file is a whole state: its tokens index it, its bytes are all there
            reader.refresh()
            assert path.name in reader._known_names()
            assert read_state(reader, path.name) is not None
    finally:
        reader.close()
