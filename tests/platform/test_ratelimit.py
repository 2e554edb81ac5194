"""The limiter's counting, run against both backends (in-process and a real redis-server) with a fake clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamafoundry.platform.ratelimit import (
    LIMITED_BY_REQUESTS,
    LIMITED_BY_TOKENS,
    SERVERLESS_LIMITS,
    UNLIMITED,
    MemoryRateLimiter,
    RateLimiter,
    RateLimits,
    RateLimitStoreUnavailable,
    RequestExceedsLimitError,
    default_limits,
    deployment_limits,
    resolve_limits,
)
from llamafoundry.platform.ratelimit_redis import RedisRateLimiter
from tests.platform.redis_server import free_port, running_redis

T0 = 1_700_000_000.0  # a whole second


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


MakeLimiter = Callable[[FakeClock], RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> MakeLimiter:
    if request.param == "memory":
        return lambda clock: MemoryRateLimiter(clock)
    url = request.getfixturevalue("redis_url")
    prefix = f"test:{request.node.name}"  # each test starts from empty counters
    return lambda clock: RedisRateLimiter(url, prefix=prefix, clock=clock)


def run(coro):  # noqa: ANN001, ANN201 - tiny helper
    return asyncio.run(coro)


def test_the_burst_window_allows_a_sixth_of_the_minute_per_10_seconds(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limits = RateLimits(tokens_per_minute=10_000, requests_per_minute=12)  # 2 per 10 s

    async def scenario() -> None:
        limiter = make_limiter(clock)
        assert (await limiter.acquire("d", limits, 10)).is_allowed
        clock.now += 3.5
        assert (await limiter.acquire("d", limits, 10)).is_allowed
        refused = await limiter.acquire("d", limits, 10)
        assert not refused.is_allowed and refused.limited_by == LIMITED_BY_REQUESTS
        assert refused.retry_after_ms == 6_500  # the first second's bucket leaves the 10 s window at T0 + 10
        assert refused.retry_after_s == 7
        clock.now = T0 + 10
        assert (await limiter.acquire("d", limits, 10)).is_allowed
        await limiter.close()

    run(scenario())


def test_requests_per_minute_over_a_sliding_60_seconds(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limits = RateLimits(tokens_per_minute=10_000, requests_per_minute=6)  # 1 per 10 s

    async def scenario() -> None:
        limiter = make_limiter(clock)
        for step in range(6):
            clock.now = T0 + 10 * step
            decision = await limiter.acquire("d", limits, 1)
            assert decision.is_allowed and decision.remaining_requests == 5 - step
        clock.now = T0 + 59.25
        refused = await limiter.acquire("d", limits, 1)
        assert not refused.is_allowed and refused.retry_after_ms == 750
        assert refused.remaining_requests == 0
        clock.now = T0 + 60
        assert (await limiter.acquire("d", limits, 1)).is_allowed
        await limiter.close()

    run(scenario())


def test_tokens_are_reserved_then_corrected_to_real_usage(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limits = RateLimits(tokens_per_minute=1_000, requests_per_minute=1_000)

    async def scenario() -> None:
        limiter = make_limiter(clock)
        first = await limiter.acquire("d", limits, 600)
        assert first.is_allowed and first.remaining_tokens == 400 and first.reservation is not None
        clock.now += 30.2
        refused = await limiter.acquire("d", limits, 600)
        assert not refused.is_allowed and refused.limited_by == LIMITED_BY_TOKENS
        assert refused.retry_after_ms == 29_800  # the reservation leaves the window at T0 + 60
        assert refused.remaining_tokens == 400
        await limiter.settle(first.reservation, 120)  # it used 120 tokens in the end
        assert (await limiter.peek("d", limits)).remaining_tokens == 880
        second = await limiter.acquire("d", limits, 600)
        assert second.is_allowed and second.remaining_tokens == 280
        await limiter.close()

    run(scenario())


def test_settling_after_the_window_moved_on_changes_nothing(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limits = RateLimits(tokens_per_minute=1_000, requests_per_minute=1_000)

    async def scenario() -> None:
        limiter = make_limiter(clock)
        old = await limiter.acquire("d", limits, 500)
        clock.now += 61
        fresh = await limiter.acquire("d", limits, 300)
        assert fresh.remaining_tokens == 700
        assert old.reservation is not None
        await limiter.settle(old.reservation, 0)
        peek = await limiter.peek("d", limits)
        assert (peek.remaining_tokens, peek.remaining_requests) == (700, 999)
        await limiter.close()

    run(scenario())


def test_a_refused_request_counts_nowhere_and_deployments_are_separate(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limits = RateLimits(tokens_per_minute=100, requests_per_minute=60)

    async def scenario() -> None:
        limiter = make_limiter(clock)
        assert (await limiter.acquire("a", limits, 90)).is_allowed
        for _ in range(3):
            assert not (await limiter.acquire("a", limits, 20)).is_allowed
        peek = await limiter.peek("a", limits)
        assert (peek.remaining_requests, peek.remaining_tokens) == (59, 10)
        assert (await limiter.acquire("b", limits, 90)).is_allowed
        await limiter.close()

    run(scenario())


def test_a_request_larger_than_the_whole_minute_is_refused_outright(make_limiter: MakeLimiter) -> None:
    async def scenario() -> None:
        limiter = make_limiter(FakeClock())
        with pytest.raises(RequestExceedsLimitError, match="more than this deployment's limit of 100 tokens"):
            await limiter.acquire("d", RateLimits(100, 10), 101)
        await limiter.close()

    run(scenario())


def test_concurrent_gateways_sharing_redis_admit_exactly_the_limit(redis_url: str) -> None:
    """Two limiter clients (two gateway processes) racing for one deployment's tokens: no over-admission."""
    limits = RateLimits(tokens_per_minute=1_000, requests_per_minute=10_000)

    async def scenario() -> int:
        gateways = [RedisRateLimiter(redis_url, prefix="test:race") for _ in range(2)]
        decisions = await asyncio.gather(*(gateways[i % 2].acquire("d", limits, 100) for i in range(40)))
        for gateway in gateways:
            await gateway.close()
        return sum(d.is_allowed for d in decisions)

    assert run(scenario()) == 10


def test_a_restarted_redis_is_reconnected_and_a_stopped_one_fails_fast(tmp_path: Path) -> None:
    """The pooled connection Redis closed on restart was a 500 on the next request; a Redis that is down made
    every request a 500 after seconds of retries. Now: reconnected, and a quick RateLimitStoreUnavailable."""
    limits = RateLimits(tokens_per_minute=1_000, requests_per_minute=100)
    port = free_port()

    async def acquire(limiter: RedisRateLimiter) -> bool:
        return (await limiter.acquire("d", limits, 10)).is_allowed

    async def scenario() -> float:
        with running_redis(tmp_path, port) as url:
            limiter = RedisRateLimiter(url)
            assert await acquire(limiter)
        with running_redis(tmp_path, port):  # the same address, a new server: the pool's connection is dead
            assert await acquire(limiter)
        started = time.monotonic()
        with pytest.raises(RateLimitStoreUnavailable, match="cannot be reached"):
            await acquire(limiter)
        took = time.monotonic() - started
        await limiter.close()
        return took

    assert run(scenario()) < 5  # fails within the retries' backoff, not after redis-py's ten default retries


def test_defaults_follow_the_deployment_type() -> None:
    assert default_limits("serverless") == SERVERLESS_LIMITS == RateLimits(200_000, 1_000)
    assert default_limits("managed") is None
    assert resolve_limits("serverless", 5_000, None) == RateLimits(5_000, 1_000)
    assert resolve_limits("managed", None, 30) == RateLimits(UNLIMITED, 30)
    assert resolve_limits("serverless", 0, 0) is None and resolve_limits("managed", None, None) is None
    assert resolve_limits("serverless", 0, None) == RateLimits(UNLIMITED, 1_000)
    assert deployment_limits("serverless", {"tokens_per_minute": 500}) == RateLimits(500, 1_000)
    with pytest.raises(ValueError, match="at least 1"):
        RateLimits(0, 10)
