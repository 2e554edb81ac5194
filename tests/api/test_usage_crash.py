"""No usage lost or counted twice when the server is killed: a real `serve` under streamed load from loopback
clients is killed with SIGKILL, a new one starts on the same data directory, and the store must hold every
request the clients saw start, once: the finished ones as the clients saw them, the cut ones with the tokens the
clients had (or more: tokens generated but not yet received), on SQLite and on a real PostgreSQL.

Load is bounded (a few workers, at most a few seconds) and only ever goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from llamafoundry.platform.database import database_url
from llamafoundry.platform.metering import STATUS_CUT_BY_CRASH, UsageRecord, query_usage
from llamafoundry.platform.store import Store
from tests.api.conftest import Server, start_server, stop_server
from tests.platform.postgres_server import fresh_database, running_postgres

pytestmark = pytest.mark.slow

NUM_WORKERS = 6
LOAD_S = 3.0
MAX_TOKENS = (8, 24, 48)


@dataclass
class Seen:
    """One streamed request as its client saw it."""

    request_id: str
    num_chunks: int = 0  # chunks with content: at least one token each
    is_done: bool = False  # `[DONE]` arrived
    usage: dict[str, int] | None = None  # the final chunk's


@dataclass
class Load:
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def stream_once(self, client: httpx.Client, url: str, max_tokens: int) -> None:
        body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": max_tokens,
                "stream": True, "temperature": 1.0}  # fmt: skip
        with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            assert response.status_code == 200, response.read()
            seen = Seen(response.headers["x-request-id"])
            with self.lock:
                self.seen.append(seen)
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    seen.is_done = True
                elif line.startswith("data: "):
                    try:
                        chunk = json.loads(line[6:])
                    except ValueError:  # the line the kill cut in half
                        return
                    seen.num_chunks += any(c["delta"].get("content") for c in chunk["choices"])
                    seen.usage = chunk.get("usage") or seen.usage

    def worker(self, url: str, key: str, index: int) -> None:
        with httpx.Client(timeout=30, headers={"api-key": key}) as client:
            for i in range(1000):
                if self.stop.is_set():
                    return
                try:
                    self.stream_once(client, url, MAX_TOKENS[(index + i) % len(MAX_TOKENS)])
                except httpx.TransportError:
                    if self.stop.is_set():
                        return  # the server was killed under this request
                    raise


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """`serve` options for the store: the data directory's SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return []
    return ["--database-url", fresh_database(request.getfixturevalue("postgres_server"))]


def serve(model: Path, home: Path, database: list[str], log_dir: Path) -> Server:
    home.mkdir(exist_ok=True)
    return start_server(model, log_dir, "--data-dir", str(home), *database, "--ctx-size", "256", "--parallel", "4",
                        "--content-safety", "off", "--rpm", "100000", "--tpm", "100000000")  # fmt: skip


def stored(home: Path, database: list[str]) -> list[UsageRecord]:
    store = Store(database_url(home, database[1] if database else None))
    try:
        return query_usage(store.engine)
    finally:
        store.close()


def test_a_server_killed_under_streamed_load_loses_no_usage_and_counts_none_twice(
    tiny_model_path: Path, tmp_path: Path, database: list[str]
) -> None:
    home = tmp_path / "data"
    server = serve(tiny_model_path, home, database, tmp_path)
    load = Load()
    with ThreadPoolExecutor(NUM_WORKERS) as pool:
        workers = [pool.submit(load.worker, server.url, server.key, i) for i in range(NUM_WORKERS)]
        deadline = time.monotonic() + LOAD_S
        while time.monotonic() < deadline and not any(w.done() for w in workers):
            time.sleep(0.05)
        load.stop.set()
        server.process.kill()  # SIGKILL: no drain, no final flush
        server.process.wait()
        for worker in workers:
            worker.result()
    finished = [s for s in load.seen if s.is_done]
    cut = [s for s in load.seen if not s.is_done]
    assert finished and cut, f"the kill should come while streams run: {len(finished)} finished, {len(cut)} cut"

    restarted = serve(tiny_model_path, home, database, tmp_path)  # replays the dead server's journal at startup
    stop_server(restarted)
    assert "from the journal of a server that stopped" in restarted.log()
    rows = stored(home, database)
    by_id = {row.request_id: row for row in rows}
    assert len(by_id) == len(rows)
    missing = [s.request_id for s in load.seen if s.request_id not in by_id]
    assert missing == [], f"{len(missing)} of {len(load.seen)} requests the clients saw start have no usage record"
    for seen in finished:
        row, usage = by_id[seen.request_id], seen.usage
        assert usage is not None and row.status == 200
        assert (row.prompt_tokens, row.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    for seen in cut:  # cut while generating (500), or after its record was durable, in its last bytes (200)
        row = by_id[seen.request_id]
        assert row.status in (STATUS_CUT_BY_CRASH, 200) and row.is_stream
        assert seen.num_chunks <= row.completion_tokens <= max(MAX_TOKENS), (seen, row)
    known = {s.request_id for s in load.seen}
    for row in rows:
        if row.request_id not in known:  # admitted as the server died, before its client read the response start
            assert row.status == STATUS_CUT_BY_CRASH, row
    assert not any((home / "usage-journal").iterdir()), "replayed journals are deleted, and a clean stop leaves none"
