"""The usage journal: what a server that dies leaves is replayed by the next one, once (`platform/usage_journal.py`).

A dying server is a real child process killed with SIGKILL after journaling; the store is real (SQLite)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llamafoundry.platform.metering import STATUS_CUT_BY_CRASH, Meter, UsageRecord, query_usage, record_all
from llamafoundry.platform.store import Store
from llamafoundry.platform.usage_journal import UsageJournal

DAY0 = 1_767_225_600.0


def usage(request_id: str, **values: object) -> UsageRecord:
    fields: dict[str, object] = dict(deployment="chat", key_id="primary", created_at=DAY0, prompt_tokens=10,
                                     completion_tokens=5, status=200, latency_ms=100.0, is_stream=True)  # fmt: skip
    fields.update(values)
    return UsageRecord(request_id=request_id, **fields)  # type: ignore[arg-type]


CHILD_PRELUDE = """
import os, signal, sys
from pathlib import Path
from llamafoundry.platform.usage_journal import UsageJournal
from tests.platform.test_usage_journal import usage
journal = UsageJournal(Path(sys.argv[1]))
"""


def die_after(directory: Path, script: str) -> None:
    """Run `script` in a child process with `journal` (a UsageJournal on `directory`) and `usage`, then kill the
    child with SIGKILL, as the OOM killer or `kill -9` would."""
    program = CHILD_PRELUDE + textwrap.dedent(script) + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", program, str(directory)], cwd=root, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr


def replay(store: Store, directory: Path) -> tuple[int, list[UsageRecord]]:
    """Start a meter with a journal on `directory` (it replays), stop it; the number replayed and the store's rows."""

    async def scenario() -> int:
        meter = Meter(store.engine, journal=UsageJournal(directory))
        await meter.start()
        num_replayed = meter.num_pending
        await meter.stop()
        return num_replayed

    return asyncio.run(scenario()), query_usage(store.engine)


def test_a_killed_servers_requests_are_recorded_by_the_next_with_what_each_had(tmp_path: Path) -> None:
    """Ended but not yet written (the batch was due), cut mid-stream with its tokens so far, cut before any token:
    each is recorded once, the cut ones as failed (500) with what was generated."""
    directory = tmp_path / "usage-journal"
    die_after(directory, """
        journal.end(usage("ended", status=200, completion_tokens=40))
        journal.start(usage("streaming", status=500, prompt_tokens=12, completion_tokens=0, latency_ms=0.0))
        for n in range(1, 8):
            journal.progress("streaming", completion_tokens=n, latency_ms=10.0 * n, prompt_tokens=12)
        journal.start(usage("admitted", status=500, completion_tokens=0, is_stream=False))
    """)  # fmt: skip
    store = Store.open(tmp_path)
    num_replayed, rows = replay(store, directory)
    by_id = {r.request_id: r for r in rows}
    assert num_replayed == 3 and sorted(by_id) == ["admitted", "ended", "streaming"]
    assert (by_id["ended"].status, by_id["ended"].completion_tokens) == (200, 40)
    streaming = by_id["streaming"]
    assert (streaming.status, streaming.prompt_tokens, streaming.completion_tokens) == (STATUS_CUT_BY_CRASH, 12, 7)
    assert streaming.latency_ms == 70.0
    assert (by_id["admitted"].status, by_id["admitted"].completion_tokens) == (STATUS_CUT_BY_CRASH, 0)
    assert list(directory.iterdir()) == []  # replayed and stored: the dead journal is gone, and this one stopped clean
    store.close()


def test_replaying_never_counts_a_request_twice(tmp_path: Path) -> None:
    """Records the dead server had written already are not written again; a replay that is itself cut short (its
    journal files still there) is replayed again without doubling anything."""
    directory = tmp_path / "usage-journal"
    store = Store.open(tmp_path)
    record_all(store.engine, [usage("written")])  # the dead server's last batch reached the store
    die_after(directory, """
        journal.end(usage("written"))
        journal.end(usage("pending", completion_tokens=9))
    """)  # fmt: skip
    interrupted = "from pathlib import Path; import sys; from llamafoundry.platform.usage_journal import replay_dead; "
    interrupted += "print(len(replay_dead(Path(sys.argv[1]))[0]))"  # replays, exits before deleting the journal
    done = subprocess.run([sys.executable, "-c", interrupted, str(directory)], capture_output=True, text=True)
    assert done.stdout.strip() == "2", done.stderr
    num_replayed, rows = replay(store, directory)
    assert num_replayed == 1, "only the record the store lacks is queued"
    assert sorted(r.request_id for r in rows) == ["pending", "written"]
    assert replay(store, directory) == (0, rows)


def test_a_running_servers_journal_is_not_replayed(tmp_path: Path) -> None:
    directory = tmp_path / "usage-journal"
    store = Store.open(tmp_path)

    async def scenario() -> None:
        running = UsageJournal(directory)  # another server on this data directory, serving
        running.start(usage("in-flight", status=500))
        meter = Meter(store.engine, journal=UsageJournal(directory))
        await meter.start()
        await meter.stop()
        assert query_usage(store.engine) == []
        running.end(usage("in-flight"))
        await running.sync()
        await running.close()

    asyncio.run(scenario())
    assert {path.suffix for path in directory.iterdir()} == {".jsonl", ".lock"}  # its records were not stored
    _num, rows = replay(store, directory)  # once it is gone, they are
    assert [r.request_id for r in rows] == ["in-flight"]


def test_a_checkpoint_keeps_only_what_the_store_lacks(tmp_path: Path) -> None:
    """Segments are replaced once their records are stored, and a request in flight across the checkpoint is
    still replayed with its newest tokens if the server dies after it."""
    directory = tmp_path / "usage-journal"
    store = Store.open(tmp_path)
    die_after(directory, """
        import asyncio
        from llamafoundry.platform.metering import Meter
        from llamafoundry.platform.store import Store
        from llamafoundry.platform import usage_journal
        usage_journal.CHECKPOINT_BYTES = 2000

        async def serve():
            meter = Meter(Store.open(Path(sys.argv[1]).parent).engine, journal=journal)
            meter.begin(usage("long", status=500, completion_tokens=0))
            for i in range(30):
                meter.record(usage(f"short-{i}"))
                meter.progress("long", completion_tokens=i + 1)
            await meter.flush()  # stored: a checkpoint follows
            segments = sorted(p.name for p in journal.directory.glob("*.jsonl"))
            assert segments and segments[0].endswith("-000001.jsonl"), segments
            meter.progress("long", completion_tokens=99)

        asyncio.run(serve())
    """)  # fmt: skip
    assert len(list(directory.glob("*.jsonl"))) == 1
    num_replayed, rows = replay(store, directory)
    assert num_replayed == 1 and len(rows) == 31
    long = next(r for r in rows if r.request_id == "long")
    assert (long.status, long.completion_tokens) == (STATUS_CUT_BY_CRASH, 99)


def test_requests_that_end_together_share_one_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each end waits until its record is on the disk, but not for a sync of its own: the hot path pays one
    `fdatasync` per group of requests ending together."""
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)

    async def scenario() -> None:
        journal = UsageJournal(tmp_path / "usage-journal")

        async def end(i: int) -> None:
            journal.end(usage(f"r{i}"))
            await journal.sync()

        await asyncio.gather(*(end(i) for i in range(50)))
        assert 1 <= len(synced) <= 2, synced  # the first sync, and one for everything that ended during it
        journal.stored(f"r{i}" for i in range(50))
        await journal.close()

    asyncio.run(scenario())
