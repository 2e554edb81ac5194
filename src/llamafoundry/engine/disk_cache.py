"""The disk tier of the prefix cache: KV states in files that outlive the process and are shared by every server
(a deployment's replicas) pointed at the same directory.

Layout: `<dir>/<model key>/<hash of the tokens>.kv`, one file per saved sequence, for one model file, KV cache
type and attention layout (the `fingerprint`: llama.cpp would load another model's state of the same shape
without complaint). A file is a small header (magic, version, fingerprint, token count), the tokens (int32) and
llama.cpp's state of the sequence.

Several processes share the directory without a coordinator:
- a file is written under a temporary name and renamed into place (`os.replace` is atomic), so a reader sees a
  whole file or none; a reader keeps an open file readable after another process deletes it;
- each process keeps its own index of the files (their tokens), read again when the directory changes;
- trimming to the byte budget takes an exclusive `flock` on `<model key>/.lock`, so two processes do not evict
  for each other; the least recently used files go first (a hit touches the file's mtime, visible to all);
- a file whose tokens are a prefix of a newly written one is deleted (the new one holds them too).

Writes run on a background thread: the engine thread only hands over the bytes it saved.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import queue
import struct
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

from llamafoundry.engine.prefix_index import BLOCK_TOKENS, PrefixIndex

log = logging.getLogger(__name__)

MAGIC = b"LFKV"
VERSION = 1
_HEADER = struct.Struct("<4sIII")  # magic, version, fingerprint bytes, token count
SUFFIX = ".kv"
MAX_PENDING_BYTES = 1 << 30  # states waiting to be written; beyond it new ones are not written (the disk is slow)
STALE_TEMP_S = 3600.0  # a temporary file this old was left by a process that died while writing


def model_key(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def file_name(tokens: Sequence[int]) -> str:
    return hashlib.blake2b(array("i", tokens).tobytes(), digest_size=16).hexdigest() + SUFFIX


class DiskCache:
    """Saved KV states on disk, within `budget_bytes` per model key (shared by the processes using it).

    Args:
        root: the cache directory (`--prefix-cache-dir`).
        fingerprint: identifies the model file, cache type and attention layout the states belong to.
        budget_bytes: most bytes of files kept for this fingerprint.
    """

    def __init__(self, root: Path, fingerprint: str, budget_bytes: int) -> None:
        self.dir = Path(root) / model_key(fingerprint)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # states are derived from users' prompts
        self.fingerprint = fingerprint.encode()
        self.budget_bytes = budget_bytes
        self.num_hits = 0
        self.num_written = 0
        self.num_evicted = 0
        self._index = PrefixIndex()
        self._lock = threading.Lock()  # the index: the engine thread looks up, the writer thread adds
        self._seen_mtime_ns = -1
        self._pending: queue.Queue[tuple[array[int], bytes | bytearray | memoryview] | None] = queue.Queue()
        self._pending_bytes = 0
        self._writer = threading.Thread(target=self._write_loop, name="llamafoundry-kv-disk", daemon=True)
        self._writer.start()

    # ---- lookups (engine thread) -----------------------------------------------------------------

    def longest(self, prompt: Sequence[int]) -> tuple[str | None, int]:
        """(file name, length) of the file sharing the longest prefix with `prompt`, or (None, 0)."""
        self.refresh()
        with self._lock:
            key, length = self._index.longest(prompt)
        return (key if isinstance(key, str) else None), length

    def covers(self, tokens: Sequence[int]) -> bool:
        return self.longest(tokens)[1] == len(tokens) > 0

    @contextlib.contextmanager
    def open_state(self, name: str) -> Iterator[memoryview | None]:
        """The state bytes of a file (mapped, not read into memory), or None when it is gone or not ours."""
        with contextlib.ExitStack() as stack:
            yield self._map_state(name, stack)

    def _map_state(self, name: str, stack: contextlib.ExitStack) -> memoryview | None:
        path = self.dir / name
        try:
            file = stack.enter_context(path.open("rb"))
            mapped = stack.enter_context(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
            view = stack.enter_context(memoryview(mapped))
            start = self._state_offset(view)
            if start is None:
                raise ValueError("not a state of this model")
            os.utime(path)  # a use: the least recently used files are trimmed first
        except (OSError, ValueError) as exc:
            log.debug("prefix cache file %s unusable: %s", path, exc)
            stack.close()
            self.forget(name)
            return None
        self.num_hits += 1
        return stack.enter_context(view[start:])

    def forget(self, name: str) -> None:
        """Drop a file from the index (it vanished, or llama.cpp refused its state) and delete it."""
        with self._lock:
            self._index.remove(name)
        with contextlib.suppress(OSError):
            (self.dir / name).unlink()

    def refresh(self) -> None:
        """Index the files other processes wrote and drop the ones they deleted (when the directory changed)."""
        try:
            mtime = self.dir.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._seen_mtime_ns:
            return
        self._seen_mtime_ns = mtime
        names = {entry.name for entry in os.scandir(self.dir) if entry.name.endswith(SUFFIX)}
        with self._lock:
            known = {name for name in names if name in self._index}
            for name in [k for k in self._known_names() if k not in names]:
                self._index.remove(name)
        for name in names - known:
            tokens = self._read_tokens(self.dir / name)
            if tokens is not None:
                with self._lock:
                    self._index.add(name, tokens)

    # ---- writes (handed to the writer thread) ----------------------------------------------------

    def put(self, tokens: Sequence[int], data: bytes | bytearray | memoryview) -> bool:
        """Write the state of exactly `tokens` in the background; False when it is not queued (too short, or
        too much is already waiting). `data` must not change afterwards."""
        if len(tokens) < BLOCK_TOKENS or len(data) > self.budget_bytes:
            return False
        if self._pending_bytes + len(data) > MAX_PENDING_BYTES:
            return False
        self._pending_bytes += len(data)
        self._pending.put((array("i", tokens), data))
        return True

    def flush(self) -> None:
        """Wait until every state handed over so far is written."""
        self._pending.join()

    def close(self) -> None:
        self._pending.put(None)
        self._writer.join()

    def _write_loop(self) -> None:
        while True:
            item = self._pending.get()
            try:
                if item is None:
                    return
                tokens, data = item
                self._pending_bytes -= len(data)
                self._write(tokens, data)
            except Exception:  # a full disk or a bad directory must not stop later writes
                log.exception("writing a prefix cache file failed")
            finally:
                self._pending.task_done()

    def _write(self, tokens: array[int], data: bytes | bytearray | memoryview) -> None:
        name = file_name(tokens)
        temp = self.dir / f".tmp-{os.getpid()}-{threading.get_ident()}-{name}"
        header = _HEADER.pack(MAGIC, VERSION, len(self.fingerprint), len(tokens)) + self.fingerprint
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(header)
            file.write(tokens.tobytes())
            file.write(data)
        os.replace(temp, self.dir / name)
        self.num_written += 1
        with self._lock:
            redundant = [k for k in self._index.prefixes_of(tokens) if k != name]
            self._index.add(name, tokens)
        for key in redundant:
            self.forget(str(key))
        self._trim()

    def _trim(self) -> None:
        """Delete the least recently used files until the directory is within budget, holding the lock file so
        that processes sharing the directory do not trim at once."""
        with (self.dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            files, total = [], 0
            now = time.time()
            for entry in os.scandir(self.dir):
                with contextlib.suppress(OSError):
                    stat = entry.stat()
                    if entry.name.endswith(SUFFIX):
                        files.append((stat.st_mtime, entry.name, stat.st_size))
                        total += stat.st_size
                    elif entry.name.startswith(".tmp-") and now - stat.st_mtime > STALE_TEMP_S:
                        os.unlink(entry.path)
            for _, name, size in sorted(files):
                if total <= self.budget_bytes:
                    break
                self.forget(name)
                total -= size
                self.num_evicted += 1

    # ---- file format -----------------------------------------------------------------------------

    def _state_offset(self, view: memoryview) -> int | None:
        """Where the state starts in a file's bytes, if the file is a state of this fingerprint."""
        if len(view) < _HEADER.size:
            return None
        magic, version, fp_len, num_tokens = _HEADER.unpack(view[: _HEADER.size])
        fingerprint = bytes(view[_HEADER.size : _HEADER.size + fp_len])
        if magic != MAGIC or version != VERSION or fingerprint != self.fingerprint:
            return None
        start = _HEADER.size + fp_len + 4 * num_tokens
        return start if start < len(view) else None

    def _read_tokens(self, path: Path) -> array[int] | None:
        try:
            with path.open("rb") as file:
                head = file.read(_HEADER.size)
                if len(head) < _HEADER.size:
                    return None
                magic, version, fp_len, num_tokens = _HEADER.unpack(head)
                if magic != MAGIC or version != VERSION or file.read(fp_len) != self.fingerprint:
                    return None
                tokens = array("i")
                tokens.frombytes(file.read(4 * num_tokens))
                return tokens if len(tokens) == num_tokens else None
        except OSError:
            return None

    def _known_names(self) -> list[str]:
        return [str(key) for key in self._index.keys()]
