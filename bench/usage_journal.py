"""What the usage journal costs a request (`platform/usage_journal.py`), on this machine's disk.

    python bench/usage_journal.py
    python bench/usage_journal.py --dir /var/lib/llamafoundry --requests 2000

- a progress entry (one per streamed update, before its chunk goes out): microseconds per entry;
- an end entry made durable (`end()` then `sync()`, before the end of the answer goes out): milliseconds a request
  waits, alone and with many requests ending at once (they share `fdatasync` calls: group commit);
- for scale, one SQLite transaction with `synchronous=FULL` per record, the alternative "synchronous commit".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from llamafoundry.platform.metering import UsageRecord, usage
from llamafoundry.platform.usage_journal import UsageJournal


def record(request_id: str) -> UsageRecord:
    return UsageRecord(request_id, "chat", "key-0123456789ab", time.time(), 120, 256, 200, 2345.6, is_stream=True,
                       time_to_first_token_ms=80.5, cost_usd=0.00123)  # fmt: skip


async def progress_us(journal: UsageJournal, num: int) -> float:
    journal.start(record("streaming"))
    started = time.perf_counter()
    for n in range(num):
        journal.progress("streaming", prompt_tokens=120, completion_tokens=n, latency_ms=n * 30.0,
                         time_to_first_token_ms=80.5, is_filtered=False, cost_usd=n * 1e-6)  # fmt: skip
    return (time.perf_counter() - started) / num * 1e6


async def end_ms(journal: UsageJournal, num_requests: int, concurrency: int) -> tuple[float, float, float]:
    """Each of `concurrency` tasks ends requests one after another; (p50 ms, p99 ms, requests per second)."""
    waits: list[float] = []

    async def client(worker: int) -> None:
        for i in range(num_requests // concurrency):
            started = time.perf_counter()
            journal.end(record(f"{worker}-{i}-{started}"))
            await journal.sync()
            waits.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    waits.sort()
    return statistics.median(waits), waits[int(len(waits) * 0.99) - 1], len(waits) / elapsed


def sqlite_commit_ms(directory: Path, num: int) -> float:
    engine = sa.create_engine(f"sqlite:///{directory / 'bench.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    usage.create(engine)
    started = time.perf_counter()
    for i in range(num):
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=FULL")
            conn.execute(usage.insert(), [record(f"s{i}").__dict__])
    engine.dispose()
    return (time.perf_counter() - started) / num * 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--requests", type=int, default=1000)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        directory = Path(scratch)

        async def journal_costs() -> None:
            journal = UsageJournal(directory / "journal")
            print(f"| progress entry (one per streamed update) | {await progress_us(journal, 20_000):.1f} us |")
            for concurrency in (1, 16, 64):
                p50, p99, rate = await end_ms(journal, args.requests, concurrency)
                print(f"| end entry + sync, {concurrency} requests ending at once | p50 {p50:.2f} ms, p99 {p99:.2f} ms,"
                      f" {rate:,.0f} requests/s |")  # fmt: skip
            await journal.close()

        print("| what | cost |")
        print("|---|---|")
        asyncio.run(journal_costs())
        commit_ms = sqlite_commit_ms(directory, max(50, args.requests // 10))
        print(f"| for scale: one SQLite commit (WAL, synchronous=FULL) per record | {commit_ms:.2f} ms |")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
