"""The rate limiter with its counters in Redis, so that several gateway processes share one limit.

Each deployment is one Redis hash, `<prefix>:<deployment>`, with fields `r<second>` (requests admitted in
that second) and `t<second>` (tokens they hold). One Lua script does the check and the update atomically; it
mirrors `ratelimit.evaluate` exactly (the same tests run against both limiters). Time comes from the Redis
server (`TIME`), so gateways with slightly different clocks still agree.
"""

from __future__ import annotations

from collections.abc import Callable

from llamafoundry.platform.ratelimit import (
    LIMITED_BY_REQUESTS,
    LIMITED_BY_TOKENS,
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    RateLimits,
    RateLimitStoreUnavailable,
    Reservation,
    check_reservation,
)

DEFAULT_PREFIX = "llamafoundry:ratelimit"

# KEYS[1]: the deployment's hash. ARGV: op (acquire|settle|peek), now_ms (-1: Redis TIME), tpm, rpm, burst
# (requests per 10 s), tokens (acquire: reservation; settle: used), bucket (settle: admission second),
# reserved (settle). Returns {allowed, used_requests, used_tokens, retry_ms, limited_by (0, 1 requests,
# 2 tokens), bucket}.
_SCRIPT = """
local now_ms = tonumber(ARGV[2])
if now_ms < 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local now = now_ms / 1000
local now_s = math.floor(now)
local op, tpm, rpm, burst = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens = tonumber(ARGV[6])
local oldest = now_s - 59

local req, tok, seconds, seen, stale = {}, {}, {}, {}, {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local kind, second, amount = string.sub(flat[i], 1, 1), tonumber(string.sub(flat[i], 2)), tonumber(flat[i + 1])
  if second < oldest then
    table.insert(stale, flat[i])
  else
    if not seen[second] then seen[second] = true; table.insert(seconds, second) end
    if kind == 'r' then req[second] = amount else tok[second] = amount end
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
table.sort(seconds)

if op == 'settle' then
  local bucket, reserved = tonumber(ARGV[7]), tonumber(ARGV[8])
  if bucket >= oldest and tok[bucket] ~= nil then
    redis.call('HSET', KEYS[1], 't' .. bucket, math.max(0, tok[bucket] + tokens - reserved))
  end
  return {1, 0, 0, 0, 0, 0}
end

local used_req, used_tok, burst_req = 0, 0, 0
for _, s in ipairs(seconds) do
  used_req = used_req + (req[s] or 0)
  used_tok = used_tok + (tok[s] or 0)
  if s >= now_s - 9 then burst_req = burst_req + (req[s] or 0) end
end
if op == 'peek' then return {1, used_req, used_tok, 0, 0, 0} end

local function wait(amounts, used, need, limit, window, from)
  local excess = used + need - limit
  if excess <= 0 then return 0 end
  for _, s in ipairs(seconds) do
    if s >= from then
      excess = excess - (amounts[s] or 0)
      if excess <= 0 then return math.max(1, math.ceil((s + window - now) * 1000)) end
    end
  end
  return window * 1000
end

local wait_req = math.max(wait(req, used_req, 1, rpm, 60, oldest), wait(req, burst_req, 1, burst, 10, now_s - 9))
local wait_tok = wait(tok, used_tok, tokens, tpm, 60, oldest)
if wait_req > 0 or wait_tok > 0 then
  local limited_by = 1
  if wait_tok > wait_req then limited_by = 2 end
  return {0, used_req, used_tok, math.max(wait_req, wait_tok), limited_by, 0}
end
redis.call('HINCRBY', KEYS[1], 'r' .. now_s, 1)
redis.call('HINCRBY', KEYS[1], 't' .. now_s, tokens)
redis.call('PEXPIRE', KEYS[1], 61000)
return {1, used_req, used_tok, 0, 0, now_s}
"""

_LIMITED_BY = {0: None, 1: LIMITED_BY_REQUESTS, 2: LIMITED_BY_TOKENS}
RETRIES = 2
CONNECT_TIMEOUT_S = 0.5  # loopback or a LAN: a Redis that does not answer in half a second is down


class RedisRateLimiter:
    """`RateLimiter` over a Redis server.

    Args:
        url: `redis://host:port/db` (or `rediss://`, `unix://`).
        prefix: key prefix, so several gateways of different projects can share one Redis.
        clock: seconds since the epoch; None uses the Redis server's clock (tests inject one).
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] | None = None) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        # A pooled connection that Redis closed (a restart) is retried on a new one; a Redis that is down fails
        # within about a second (redis-py retries nothing unless told which errors to retry).
        self._client = redis.Redis.from_url(
            url,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        self._script = self._client.register_script(_SCRIPT)
        self._prefix = prefix
        self._clock = clock

    async def _call(self, op: str, key: str, limits: RateLimits, tokens: int, *extra: int) -> list[int]:
        import redis.asyncio as redis

        now_ms = int(self._clock() * 1000) if self._clock is not None else -1
        # a tuple, not a list: its items keep their types (str, int) where a list's would widen to `object`
        args = (op, now_ms, limits.tokens_per_minute, limits.requests_per_minute, limits.max_burst_requests, tokens)
        try:
            result = await self._script(keys=[f"{self._prefix}:{key}"], args=[*args, *extra])
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise RateLimitStoreUnavailable(f"the Redis server of the rate limits cannot be reached ({exc})") from exc
        return [int(value) for value in result]

    async def acquire(self, key: str, limits: RateLimits, tokens: int) -> Decision:
        check_reservation(tokens, limits)
        allowed, used_requests, used_tokens, retry_ms, limited_by, bucket = await self._call(
            "acquire", key, limits, tokens
        )
        remaining_requests = limits.requests_per_minute - used_requests
        remaining_tokens = limits.tokens_per_minute - used_tokens
        if not allowed:
            return Decision(False, remaining_requests, remaining_tokens, limits, retry_ms, _LIMITED_BY[limited_by])
        return Decision(
            True,
            remaining_requests - 1,
            remaining_tokens - tokens,
            limits,
            reservation=Reservation(key, bucket, tokens),
        )

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        unused = RateLimits(1, 1)  # settle reads no limit
        await self._call("settle", reservation.key, unused, used_tokens, reservation.bucket, reservation.tokens)

    async def peek(self, key: str, limits: RateLimits) -> Decision:
        _, used_requests, used_tokens, _, _, _ = await self._call("peek", key, limits, 0)
        return Decision(
            True, limits.requests_per_minute - used_requests, limits.tokens_per_minute - used_tokens, limits
        )

    async def ping(self) -> None:
        """Raises when the server cannot be reached (checked at startup, so a wrong URL fails loudly)."""
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()


def build_limiter(redis_url: str | None) -> RateLimiter:
    """The in-process limiter, or the Redis one when a URL is given."""
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()
