"""Usage metering into the store's database, and usage reports with latency percentiles and cost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path

import pytest

from llamafoundry.platform.database import database_url
from llamafoundry.platform.metering import Meter, UsageRecord, query_usage, record_all
from llamafoundry.platform.store import Deployment, Store
from llamafoundry.platform.usage import Pricing, percentile, pricing_for, report, summarize
from tests.platform.postgres_server import fresh_database, running_postgres

DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def usage(request_id: str, *, at: float = DAY0, deployment: str = "chat", **values: object) -> UsageRecord:
    fields: dict[str, object] = dict(
        key_id="primary", prompt_tokens=100, completion_tokens=50, status=200, latency_ms=200.0
    )
    fields.update(values)
    return UsageRecord(request_id=request_id, deployment=deployment, created_at=at, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The store on SQLite and on a real PostgreSQL server: the usage table comes from the same migrations."""
    if request.param == "sqlite":
        opened = Store.open(tmp_path)
    else:
        opened = Store(database_url(tmp_path, fresh_database(request.getfixturevalue("postgres_server"))))
    yield opened
    opened.close()


def test_records_are_written_once_even_when_a_batch_is_retried(store: Store) -> None:
    meter = Meter(store.engine)
    meter.record(usage("a"))
    meter.record(usage("b", at=DAY0 + 1, status=499, completion_tokens=3, is_stream=True))
    meter.flush_sync()
    meter.record(usage("b", at=DAY0 + 1))  # the same request again: must not count twice
    meter.record(usage("c", at=DAY0 + 2, deployment="other"))
    meter.flush_sync()
    records = query_usage(store.engine)
    assert [r.request_id for r in records] == ["a", "b", "c"]
    assert records[1].status == 499 and records[1].completion_tokens == 3 and records[1].is_stream
    assert [r.request_id for r in query_usage(store.engine, since=DAY0 + 1, deployment="chat")] == ["b"]


def test_the_background_writer_flushes_on_stop(store: Store) -> None:
    async def scenario() -> None:
        meter = Meter(store.engine, flush_interval_s=0.05)
        await meter.start()
        meter.record(usage("a"))
        deadline = time.monotonic() + 10  # a few intervals, or many more on a busy machine
        while not query_usage(store.engine) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(query_usage(store.engine)) == 1
        meter.record(usage("b"))
        await meter.stop()

    asyncio.run(scenario())
    assert len(query_usage(store.engine)) == 2


class SlowMeter(Meter):
    """A meter whose database writes wait until the test lets them through."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writing, self.may_write = threading.Event(), threading.Event()

    def _write(self, batch: list[UsageRecord]) -> None:
        self.writing.set()
        assert self.may_write.wait(10)
        super()._write(batch)

    async def ends_after_the_write(self, operation: Coroutine[object, object, None]) -> None:
        """Run `operation`, started while a batch is being written, and check that it ends only after that write."""
        await asyncio.to_thread(self.writing.wait, 10)
        task = asyncio.create_task(operation)
        await asyncio.sleep(0.1)
        assert not task.done()
        self.may_write.set()
        await task


def test_a_flush_returns_only_after_a_batch_the_background_task_is_writing(store: Store) -> None:
    """A usage report flushes, then reads: a batch the periodic flush took a moment before must be in what it reads
    (it was not: the report's flush found nothing pending and returned while that batch was still being written)."""

    async def scenario() -> None:
        meter = SlowMeter(store.engine)
        meter.record(usage("a"))
        background = asyncio.create_task(meter.flush())
        await meter.ends_after_the_write(meter.flush())  # the report's
        assert [r.request_id for r in query_usage(store.engine)] == ["a"]
        await background

    asyncio.run(scenario())


def test_stopping_waits_for_the_batch_being_written(store: Store) -> None:
    """The server stops the meter, then closes the store: the batch the background task is writing must be
    written by then (cancelling that task returned at once, with the write still in its thread)."""

    async def scenario() -> None:
        meter = SlowMeter(store.engine, flush_interval_s=0.01)
        await meter.start()
        meter.record(usage("a"))
        await meter.ends_after_the_write(meter.stop())
        assert [r.request_id for r in query_usage(store.engine)] == ["a"]

    asyncio.run(scenario())


def test_the_key_itself_is_never_stored(store: Store) -> None:
    record_all(store.engine, [usage("a", key_id="secondary")])
    with store.engine.connect() as conn:
        columns = list(conn.exec_driver_sql("SELECT * FROM usage").keys())
    assert "key_id" in columns and not any("key_hash" in c or c == "key" for c in columns)


def test_serverless_cost_uses_catalog_prices_unless_overridden() -> None:
    deployment = Deployment("chat", "Meta-Llama-3.1-8B-Instruct", "serverless", 1, DAY0)
    price = pricing_for(deployment)
    assert (price.input_per_1k, price.output_per_1k) == (0.0003, 0.00061)
    records = [
        usage("a", prompt_tokens=2000, completion_tokens=1000),
        usage("b", status=429, prompt_tokens=0, completion_tokens=0, latency_ms=1.0),
    ]
    rows = summarize(records, {"chat": price}, now=DAY0 + 10)
    assert rows[0].cost == pytest.approx(2 * 0.0003 + 1 * 0.00061)
    assert (rows[0].requests, rows[0].throttled, rows[0].errors) == (2, 1, 1)
    overridden = pricing_for(
        Deployment(
            "chat",
            "Meta-Llama-3.1-8B-Instruct",
            "serverless",
            1,
            DAY0,
            settings={"input_price_per_1k": 1.0, "output_price_per_1k": 2.0},
        )
    )
    assert summarize(records, {"chat": overridden}, now=DAY0)[0].cost == pytest.approx(2 * 1.0 + 1 * 2.0)


def test_managed_cost_is_core_hours_since_creation() -> None:
    deployment = Deployment(
        "big", "Meta-Llama-3.1-8B-Instruct", "managed", 2, DAY0 - 1800, instance_type="Standard_D4as_v4"
    )
    price = pricing_for(deployment)
    assert price.num_cores == 8 and price.price_per_core_hour == 0.048
    rows = summarize([usage("a", deployment="big")], {"big": price}, by="hour", since=DAY0 - 7200, now=DAY0 + 5400)
    hourly = {r.period: r for r in rows if r.deployment == "big"}
    # created half an hour before DAY0: half of the first hour, all of the second, half of the third
    assert hourly[DAY0 - 3600].cost == pytest.approx(0.5 * 8 * 0.048)
    assert hourly[DAY0].cost == pytest.approx(8 * 0.048) and hourly[DAY0].requests == 1
    assert hourly[DAY0 + 3600].cost == pytest.approx(0.5 * 8 * 0.048)
    assert rows[-1].deployment == "total" and rows[-1].cost == pytest.approx(2 * 8 * 0.048)


def test_rows_by_day_with_percentiles_errors_and_filtered() -> None:
    records = [usage(f"r{i}", at=DAY0 + i, latency_ms=float(10 * (i + 1))) for i in range(20)]
    records += [
        usage("bad", at=DAY0 + 86400 + 5, status=400, prompt_tokens=0, completion_tokens=0, latency_ms=1.0),
        usage("filtered", at=DAY0 + 86400 + 6, is_filtered=True, latency_ms=30.0),
        usage("gone", at=DAY0 + 86400 + 7, status=499, latency_ms=5000.0),
    ]
    price = Pricing("serverless", 0.001, 0.002, DAY0)
    first, second, total = summarize(records, {"chat": price}, by="day", now=DAY0 + 2 * 86400)
    assert (first.requests, first.p50_latency_ms, first.p95_latency_ms) == (20, 100.0, 190.0)
    assert (second.requests, second.errors, second.filtered) == (3, 1, 1)
    assert second.p50_latency_ms == 30.0  # latency is over answered requests only
    assert total.requests == 23 and total.prompt_tokens == 22 * 100
    assert second.as_dict()["period"] == "2026-01-02T00:00:00Z"


def test_an_unknown_price_gives_an_unknown_cost() -> None:
    rows = summarize([usage("a", deployment="tiny")], {}, now=DAY0)
    assert rows[0].cost is None and rows[-1].cost is None
    assert percentile([], 50) is None and percentile([3.0], 95) == 3.0


def test_recorded_costs_outlive_the_deployment_and_its_prices() -> None:
    """A record keeps what its tokens cost when it was metered: deleting the deployment, or re-creating it under
    the same name on managed compute, does not re-price it (it read n/a, then 0.0000)."""
    records = [usage("a", cost_usd=0.25), usage("b", cost_usd=0.5)]
    assert summarize(records, {}, now=DAY0)[0].cost == pytest.approx(0.75)  # deleted: no pricing
    recreated = Pricing("managed", created_at=DAY0 + 3600, num_cores=4, price_per_core_hour=0.1)
    (row, total) = summarize(records, {"chat": recreated}, since=DAY0, now=DAY0 + 7200)
    assert row.cost == pytest.approx(0.75 + 4 * 0.1)  # the old tokens, then one hour of the new compute
    managed_gone = summarize([usage("m", cost_usd=None)], {}, now=DAY0)[0]  # managed records carry no token cost
    assert managed_gone.cost is None  # a deleted managed deployment's compute is unknown: n/a, not 0
    legacy = usage("c")  # metered before costs were recorded: priced as before, at the current prices
    price = Pricing("serverless", 1.0, 2.0, DAY0)
    assert summarize([legacy], {"chat": price}, now=DAY0)[0].cost == pytest.approx(0.1 + 0.1)


def test_the_total_is_the_priced_part_and_counts_what_has_no_price() -> None:
    """The server's own model has no price: its row is n/a, and the total no longer turns n/a with it."""
    records = [usage("a", cost_usd=0.25), usage("own", deployment="tiny-llama"), usage("own2", deployment="tiny-llama")]
    rows = {row.deployment: row for row in summarize(records, {}, now=DAY0)}
    assert rows["tiny-llama"].cost is None and rows["tiny-llama"].unpriced_requests == 2
    total = rows["total"]
    assert total.cost == pytest.approx(0.25) and total.unpriced_requests == 2 and total.is_partly_priced
    assert total.as_dict()["cost_usd"] == 0.25 and total.as_dict()["unpriced_requests"] == 2
    assert not rows["chat"].is_partly_priced


def test_the_report_reads_back_from_the_database(store: Store) -> None:
    record_all(store.engine, [usage("a", at=DAY0 + 5), usage("b", at=DAY0 + 3605, status=429, prompt_tokens=0,
                                                            completion_tokens=0)])  # fmt: skip
    price = Pricing("serverless", 0.001, 0.002, DAY0)
    hourly = report(store.engine, {"chat": price}, by="hour", since=DAY0, now=DAY0 + 7200)
    assert [(r.period, r.requests, r.throttled) for r in hourly[:-1]] == [(DAY0, 1, 0), (DAY0 + 3600, 1, 1)]
    assert hourly[-1].cost == pytest.approx(100 / 1000 * 0.001 + 50 / 1000 * 0.002)
    record_all(store.engine, [usage("c", at=DAY0 + 10, cost_usd=0.125)])  # the cost column round-trips
    assert report(store.engine, {}, since=DAY0, now=DAY0 + 7200)[0].cost == pytest.approx(0.125)


def test_records_survive_a_failed_write(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    meter = Meter(store.engine)
    meter.record(usage("a"))
    calls = []

    def failing_write(batch: list[UsageRecord]) -> None:
        calls.append(len(batch))
        raise OSError("database is restarting")

    meter._write = failing_write  # type: ignore[method-assign]
    with pytest.raises(OSError):
        asyncio.run(meter.flush())
    assert meter.num_pending == 1 and calls == [1]
    del meter._write  # the real writer again
    meter.record(usage("b"))
    asyncio.run(meter.flush())
    assert [r.request_id for r in query_usage(store.engine)] == ["a", "b"]
    store.close()
