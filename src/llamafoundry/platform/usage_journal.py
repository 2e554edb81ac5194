"""A write-ahead journal of usage records: no request's usage is lost when its server dies, none counted twice.

The meter writes records to the database in batches every half second (`metering.Meter`): a server killed between
a request's end and the next batch would lose it, and a stream cut by the crash would never be recorded at all.
The journal is the durable copy. Each server process appends JSON lines to its own files in
`<data dir>/usage-journal/`:

- `{"start": record}` when a request is admitted: its record as it would stand if the server died now (status
  500, its prompt tokens when counted, no completion tokens);
- `{"progress": request_id, ...}` as a stream goes: the tokens so far (and latency, cost), written before the
  chunk that carries them goes out;
- `{"end": record}` when it ends: its final record, synced to the disk (`fdatasync`) before the client has the
  end of the answer (`sync()`; requests ending together share one sync).

Every entry is a single `write()` to a file opened with `O_APPEND`: in the kernel once the call returns, so a
process killed by any signal loses nothing it wrote; end entries are also synced, so a completed request survives
a power loss too (an in-flight stream may then lose its newest progress).

A starting server replays the journals of servers that are gone (each holds an exclusive `flock` on its own lock
file while it lives): each request's last entry is its record, and those the store lacks are written (request
ids are unique, so a record is never counted twice). A running server checkpoints its own journal as records
reach the store: a new segment gets what the store still lacks (requests in flight, records not yet written)
and older segments are deleted; a clean shutdown deletes its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from llamafoundry.outage import RepeatedFailure
from llamafoundry.platform.metering import UsageRecord

logger = logging.getLogger(__name__)

JOURNAL_DIR = "usage-journal"
CHECKPOINT_BYTES = 1 << 20  # a segment this large is replaced by a checkpoint once its records are stored
_SEGMENT_SUFFIX = ".jsonl"
_LOCK_SUFFIX = ".lock"


class UsageJournal:
    """The journal of one server process. Call its methods from one event loop (its state is not locked).

    Args:
        directory: where every server of one data directory keeps its journal (created, mode 0700).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        # Held while this process lives, so its journal is not replayed. Locked before it has its name: a lock
        # file seen in the directory is always one its owner holds (or held, until it died).
        unnamed = directory / f"{self.owner}{_LOCK_SUFFIX}.new"
        self._lock_fd = os.open(unnamed, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.rename(unnamed, directory / f"{self.owner}{_LOCK_SUFFIX}")
        self._segment = 0
        self._fd = self._open_segment(0)
        self._segment_bytes = 0
        self._open: dict[str, UsageRecord] = {}  # admitted, not ended: their record if the server died now...
        self._progress: dict[str, dict[str, Any]] = {}  # ...with these changes (applied only when needed)
        self._unstored: dict[str, UsageRecord] = {}  # ended, not yet in the store
        self._num_ends = 0  # end entries appended; `sync()` makes them durable
        self._num_synced = 0
        self._syncing: asyncio.Future[None] | None = None
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="usage-journal")  # syncs and closes, in order
        self._failures = RepeatedFailure(logger, "writing the usage journal")
        self._is_closed = False

    # ---- entries -------------------------------------------------------------------------------------------

    def start(self, provisional: UsageRecord) -> None:
        """A request was admitted; `provisional` is its record should the server die before it ends."""
        self._open[provisional.request_id] = provisional
        self._progress[provisional.request_id] = {}
        self._append({"start": asdict(provisional)})

    def progress(self, request_id: str, **changes: Any) -> None:
        """A started request's record changed as it goes (tokens so far, latency, cost)."""
        progress = self._progress.get(request_id)
        if progress is None:
            return
        progress.update(changes)
        self._append({"progress": request_id, **changes})

    def end(self, record: UsageRecord) -> None:
        """A request ended with `record` (durable once `sync()` returns)."""
        self._open.pop(record.request_id, None)
        self._progress.pop(record.request_id, None)
        self._unstored[record.request_id] = record
        self._append({"end": asdict(record)})
        self._num_ends += 1

    def stored(self, request_ids: Iterable[str]) -> None:
        """These records are in the store: the journal no longer needs them."""
        for request_id in request_ids:
            self._unstored.pop(request_id, None)

    def _append(self, entry: dict[str, Any]) -> None:
        if self._is_closed:
            return  # the server stopped: the record still goes to the store (`Meter.stop` flushes)
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        try:
            os.write(self._fd, line)
        except OSError as exc:  # a full disk: the store still gets the record from memory; say so, keep serving
            self._failures.failed(exc)
            return
        self._segment_bytes += len(line)

    # ---- durability ----------------------------------------------------------------------------------------

    async def sync(self) -> None:
        """Returns once every end entry appended before the call is on the disk. One `fdatasync` covers every
        entry appended before it starts, so requests that end together wait for one sync, not one each."""
        target = self._num_ends
        while self._num_synced < target and not self._is_closed:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync_once())
            await asyncio.shield(self._syncing)

    async def _sync_once(self) -> None:
        covered, fd = self._num_ends, self._fd
        try:
            await asyncio.get_running_loop().run_in_executor(self._disk, os.fdatasync, fd)
        except OSError as exc:
            self._failures.failed(exc)
        else:
            self._failures.succeeded()
        finally:
            self._syncing = None
        self._num_synced = max(self._num_synced, covered)

    @property
    def needs_checkpoint(self) -> bool:
        return self._segment_bytes >= CHECKPOINT_BYTES

    async def checkpoint(self) -> None:
        """Start a new segment with only what the store lacks, make it durable, delete the older segments."""
        old_fd = self._fd
        self._segment += 1
        self._fd, self._segment_bytes = self._open_segment(self._segment), 0
        for request_id, record in self._open.items():  # before any await: no entry lands between snapshot and switch
            self._append({"start": asdict(replace(record, **self._progress[request_id]))})
        for record in self._unstored.values():
            self._append({"end": asdict(record)})
        await asyncio.get_running_loop().run_in_executor(self._disk, self._retire, old_fd, self._fd, self._segment)

    def _retire(self, old_fd: int, new_fd: int, new_segment: int) -> None:
        """On the disk thread: the new segment synced (its file named in the directory), then the old ones gone."""
        try:
            os.fdatasync(new_fd)
            _sync_directory(self.directory)
            os.close(old_fd)
            self._delete_segments(keep=self._segment_path(new_segment))
        except OSError as exc:
            self._failures.failed(exc)

    def _delete_segments(self, keep: Path | None = None) -> None:
        for path in self.directory.glob(f"{self.owner}-*{_SEGMENT_SUFFIX}"):
            if path != keep:
                path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Stop journaling. With nothing in flight and every record stored (a clean stop), the journal is deleted;
        otherwise it stays, for the next server on this data directory to replay."""
        if self._is_closed:
            return
        self._is_closed = True
        is_clean = not self._open and not self._unstored
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._disk, self._close_files, is_clean)
        self._disk.shutdown(wait=True)

    def _close_files(self, delete: bool) -> None:
        if not delete:
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)
        os.close(self._fd)
        if delete:
            self._delete_segments()
            (self.directory / f"{self.owner}{_LOCK_SUFFIX}").unlink(missing_ok=True)
        os.close(self._lock_fd)

    # ---- replay --------------------------------------------------------------------------------------------

    def replay_dead(self) -> tuple[list[UsageRecord], Callable[[], None]]:
        """`replay_dead()` of this journal's directory, this journal excluded (blocking: call it in a thread)."""
        return replay_dead(self.directory, self.owner)

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{self.owner}-{segment:06d}{_SEGMENT_SUFFIX}"

    def _open_segment(self, segment: int) -> int:
        return os.open(self._segment_path(segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def replay_dead(directory: Path, own: str | None = None) -> tuple[list[UsageRecord], Callable[[], None]]:
    """The records in the journals of servers that are gone (not `own`), and a function that deletes those
    journals (call it once the records are safe elsewhere). Each journal's lock is held until then, so two
    servers starting together do not both replay one."""
    if not directory.is_dir():
        return [], lambda: None
    owners = {path.name.rsplit("-", 1)[0] for path in directory.glob(f"*{_SEGMENT_SUFFIX}")}
    owners |= {path.name[: -len(_LOCK_SUFFIX)] for path in directory.glob(f"*{_LOCK_SUFFIX}")}
    owners.discard(own or "")
    records: dict[str, UsageRecord] = {}
    ended: set[str] = set()
    held: list[tuple[str, int]] = []
    for owner in sorted(owners):
        lock_fd = _lock_if_dead(directory / f"{owner}{_LOCK_SUFFIX}")
        if lock_fd is None:
            continue  # a live server's journal
        held.append((owner, lock_fd))
        for segment in sorted(directory.glob(f"{owner}-*{_SEGMENT_SUFFIX}")):
            _fold(segment, records, ended)

    def delete() -> None:
        for owner, lock_fd in held:
            for segment in directory.glob(f"{owner}-*{_SEGMENT_SUFFIX}"):
                segment.unlink(missing_ok=True)
            (directory / f"{owner}{_LOCK_SUFFIX}").unlink(missing_ok=True)
            os.close(lock_fd)

    return list(records.values()), delete


def _lock_if_dead(lock_path: Path) -> int | None:
    """The lock of a journal whose server is gone, now held; None while its server lives."""
    try:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _fold(segment: Path, records: dict[str, UsageRecord], ended: set[str]) -> None:
    """Apply one segment's entries, in order, to `records` (request id -> its record so far)."""
    with segment.open("rb") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
                if "end" in entry:
                    record = UsageRecord(**entry["end"])
                    records[record.request_id] = record
                    ended.add(record.request_id)
                elif "start" in entry:
                    record = UsageRecord(**entry["start"])
                    if record.request_id not in ended:
                        records[record.request_id] = record
                elif entry.get("progress") in records and entry["progress"] not in ended:
                    request_id = entry.pop("progress")
                    records[request_id] = replace(records[request_id], **entry)
            except (ValueError, TypeError, KeyError):  # a line torn by a power loss: the rest is still good
                logger.warning("skipping an unreadable line of the usage journal %s", segment)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
