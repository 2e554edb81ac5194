"""Usage metering: one row per request, written to the store's database.

Every chat request that passed authentication is recorded exactly once, when it ends: its deployment, the id
of the key it used (the key's slot, never the key), when it arrived, prompt and completion tokens, the HTTP
status it got (499 when the client went away, tokens counted so far), its latency, whether content safety
filtered it, and what its tokens cost at the deployment's prices of that moment (so a deployment deleted, or
re-created with other prices, does not re-price its past). `request_id` (the response's `x-request-id`) is
unique, so a record can never be counted twice.

Rows are buffered and written in batches on a worker thread, so the event loop never waits for the database;
`flush()` writes what is pending (the server flushes on shutdown, and before answering a usage query). With a
`UsageJournal` (`serve` has one) every request is journaled as it goes and its record is durable before its
client has the end of the answer (`sync()`), so a server that dies loses none: the next one replays the journal
(`platform/usage_journal.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from llamafoundry.outage import RepeatedFailure
from llamafoundry.platform.store import metadata

if TYPE_CHECKING:
    from llamafoundry.platform.usage_journal import UsageJournal

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
MAX_PENDING = 100_000  # records kept while the database is unreachable; the oldest go first
STATUS_CLIENT_CLOSED = 499  # the client went away before the response ended (nginx's code)
STATUS_CUT_BY_CRASH = 500  # the server died while the request ran (replayed from the journal): it failed it

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("deployment", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("is_filtered", sa.Boolean, nullable=False),
    sa.Column("is_stream", sa.Boolean, nullable=False),
    sa.Column("time_to_first_token_ms", sa.Float),
    sa.Column("cost_usd", sa.Float),
    sa.Column("project", sa.String(64)),
    sa.Index("ix_usage_deployment_created_at", "deployment", "created_at"),
    sa.Index("ix_usage_created_at", "created_at"),
    sa.Index("ix_usage_project_created_at", "project", "created_at"),
    sa.Index("ix_usage_key_id_created_at", "key_id", "created_at"),
)


@dataclass(frozen=True)
class UsageRecord:
    """One request, as metered. `created_at` is when it arrived (unix seconds)."""

    request_id: str
    deployment: str
    key_id: str | None
    created_at: float
    prompt_tokens: int
    completion_tokens: int
    status: int
    latency_ms: float
    is_filtered: bool = False
    is_stream: bool = False
    time_to_first_token_ms: float | None = None
    cost_usd: float | None = None  # its tokens at the deployment's prices when it ended; None: no price then
    project: str | None = None  # the deployment's project (None: the server's own model)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def is_error(self) -> bool:
        """A request the service answered with an error (a client that went away is not one)."""
        return self.status >= 400 and self.status != STATUS_CLIENT_CLOSED


class Meter:
    """Buffers usage records and writes them to the `usage` table.

    Args:
        engine: the store's SQLAlchemy engine (the table is created by the store's migrations).
        flush_interval_s: how often the background task writes the buffer, once `start()` ran.
        journal: the durable copy of records not yet in the database (None: records pending in memory are lost
            if the process dies).
    """

    def __init__(
        self, engine: Engine, flush_interval_s: float = FLUSH_INTERVAL_S, journal: UsageJournal | None = None
    ) -> None:
        self.engine = engine
        self.flush_interval_s = flush_interval_s
        self.journal = journal
        self._pending: list[UsageRecord] = []
        self._lock = threading.Lock()  # one writer at a time; keeps batches in order
        self._flushing = asyncio.Lock()  # one flush at a time, so a flush waits for the one in progress
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()  # made anew by start(), in the loop that runs the task

    def begin(self, provisional: UsageRecord) -> None:
        """A request was admitted: journal the record it gets if the server dies before it ends."""
        if self.journal is not None:
            self.journal.start(provisional)

    def progress(self, request_id: str, **changes: Any) -> None:
        """A request's record so far changed (a stream's tokens): journal it."""
        if self.journal is not None:
            self.journal.progress(request_id, **changes)

    def record(self, record: UsageRecord) -> None:
        """Queue one record, journaled (never blocks; durable once `sync()` returns)."""
        self._pending.append(record)
        if self.journal is not None:
            self.journal.end(record)

    async def sync(self) -> None:
        """Returns once every record queued before the call is on the disk (at once without a journal)."""
        if self.journal is not None:
            await self.journal.sync()

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write every queued record. If the database fails, the records stay queued for the next flush
        (request ids are unique, so a batch that was written after all is not counted twice).

        Returns only once every record queued before the call is written, including a batch the background
        task took a moment earlier and is still writing: a usage report that flushes first sees them all."""
        async with self._flushing:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception:
                self._pending = (batch + self._pending)[-MAX_PENDING:]
                raise
            if self.journal is not None:
                self.journal.stored(record.request_id for record in batch)
                if self.journal.needs_checkpoint:
                    await self.journal.checkpoint()

    def flush_sync(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._write(batch)

    def _write(self, batch: list[UsageRecord]) -> None:
        with self._lock:
            try:
                with self.engine.begin() as conn:
                    conn.execute(usage.insert(), [asdict(record) for record in batch])
            except sa.exc.IntegrityError:
                self._write_one_by_one(batch)

    def _write_one_by_one(self, batch: list[UsageRecord]) -> None:
        """A batch with a request id already stored (a retried flush): write the others, skip the duplicates."""
        for record in batch:
            try:
                with self.engine.begin() as conn:
                    conn.execute(usage.insert(), [asdict(record)])
            except sa.exc.IntegrityError:
                logger.warning("usage of request %s is already recorded; not counting it twice", record.request_id)

    async def start(self) -> None:
        """Replay the journals of servers that died (their records the store lacks), then write in the background."""
        await self.recover()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._flush_periodically())

    async def recover(self) -> int:
        """Queue the records of dead servers' journals that the store lacks (all of them if it cannot be read:
        request ids keep the writes from counting one twice); returns how many. They are journaled here before
        the dead journals are deleted, so they are not lost if this server dies too."""
        if self.journal is None:
            return 0
        records, delete = await asyncio.to_thread(self.journal.replay_dead)
        if records:
            try:
                records = await asyncio.to_thread(self._not_stored, records)
            except sa.exc.SQLAlchemyError as exc:
                logger.warning("cannot check which replayed usage records the store has (%s); queueing all", exc)
            for record in records:
                self.record(record)
            await self.sync()
        await asyncio.to_thread(delete)
        if records:
            logger.info("recorded the usage of %d requests from the journal of a server that stopped", len(records))
        return len(records)

    def _not_stored(self, records: list[UsageRecord]) -> list[UsageRecord]:
        ids = [record.request_id for record in records]
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                query = sa.select(usage.c.request_id).where(usage.c.request_id.in_(ids[i : i + 500]))
                found.update(conn.execute(query).scalars())
        return [record for record in records if record.request_id not in found]

    async def stop(self) -> None:
        """Stop the background task and write what is pending. The task is asked to end, not cancelled: a
        cancelled flush would let go of the batch it is writing while its thread still writes it. The journal
        is closed (deleted when everything reached the store)."""
        if self._task is not None:
            self._stopping.set()
            await asyncio.gather(self._task, return_exceptions=True)  # its failures were logged as they came
            self._task = None
        try:
            await self.flush()
        finally:
            if self.journal is not None:
                await self.journal.close()

    async def _flush_periodically(self) -> None:
        failures = RepeatedFailure(logger, "writing usage records to the store")
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_interval_s)
            try:
                await self.flush()
            except Exception as exc:  # the database may be briefly unavailable: keep serving, retry next time
                failures.failed(exc)
            else:
                failures.succeeded()


def query_usage(
    engine: Engine, since: float | None = None, until: float | None = None, deployment: str | None = None,
    project: str | None = None,
) -> list[UsageRecord]:
    """Usage records, oldest first, arrived in [since, until), optionally of one deployment or project."""
    query = sa.select(*[c for c in usage.c if c.name != "id"]).order_by(usage.c.created_at, usage.c.id)
    if since is not None:
        query = query.where(usage.c.created_at >= since)
    if until is not None:
        query = query.where(usage.c.created_at < until)
    if deployment is not None:
        query = query.where(usage.c.deployment == deployment)
    if project is not None:
        query = query.where(usage.c.project == project)
    with engine.connect() as conn:
        return [_record(row) for row in conn.execute(query).mappings()]


def _record(row: sa.RowMapping) -> UsageRecord:
    values = dict(row)
    values["is_filtered"] = bool(values["is_filtered"])
    values["is_stream"] = bool(values["is_stream"])
    return UsageRecord(**values)


def record_all(engine: Engine, records: Iterable[UsageRecord]) -> None:
    """Write records at once (tests, imports)."""
    meter = Meter(engine)
    for record in records:
        meter.record(record)
    meter.flush_sync()
