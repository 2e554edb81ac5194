"""Per-deployment rate limits: tokens per minute and requests per minute, as Azure counts them.

The counting (shared by the in-process limiter and the Redis script, which mirror each other):

- Time is cut into 1-second buckets; each bucket holds the requests admitted in that second and the tokens
  they hold. The window is the last 60 seconds: a bucket counts until 60 s after it opened (a sliding
  window with 1 s resolution, so there is no burst at a minute boundary).
- Requests: at most `requests_per_minute` in the window, and at most `ceil(requests_per_minute / 6)` in the
  last 10 seconds (Azure evaluates RPM over short sub-windows, so a minute's quota cannot arrive in one burst).
  A request counts when it is admitted, whatever happens to it later.
- Tokens: at admission a request *reserves* its worst case (prompt tokens + max_tokens times the number of
  candidates) in the bucket of its admission second; when it ends, `settle` replaces the reservation with
  the tokens it really used (if that bucket is still in the window). A request is refused when the window's
  sum plus its reservation exceeds `tokens_per_minute`.
- A refused request counts nowhere. Its `retry_after_ms` is the time until enough buckets leave the
  window for it to fit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

WINDOW_S = 60
BURST_WINDOW_S = 10
BURST_DIVISOR = 6  # requests allowed per 10 s = ceil(rpm / 6)

LIMITED_BY_REQUESTS = "requests"
LIMITED_BY_TOKENS = "tokens"


@dataclass(frozen=True)
class RateLimits:
    """The limits of one deployment."""

    tokens_per_minute: int
    requests_per_minute: int

    def __post_init__(self) -> None:
        if self.tokens_per_minute < 1:
            raise ValueError(f"tokens per minute must be at least 1, got {self.tokens_per_minute}")
        if self.requests_per_minute < 1:
            raise ValueError(f"requests per minute must be at least 1, got {self.requests_per_minute}")

    @property
    def max_burst_requests(self) -> int:
        """Requests allowed within any 10-second window."""
        return math.ceil(self.requests_per_minute / BURST_DIVISOR)


SERVERLESS_LIMITS = RateLimits(tokens_per_minute=200_000, requests_per_minute=1_000)


def default_limits(deployment_type: str) -> RateLimits | None:
    """The limits a deployment gets when none are configured.

    Serverless deployments have Azure's 200,000 tokens / 1,000 requests per minute. Managed compute is the
    user's own capacity (the engine queue pushes back when it is full), so it is not limited unless asked.
    """
    return SERVERLESS_LIMITS if deployment_type == "serverless" else None


UNLIMITED = 2**62  # a limit that never binds
SETTING_TOKENS_PER_MINUTE = "tokens_per_minute"  # keys in a deployment's settings
SETTING_REQUESTS_PER_MINUTE = "requests_per_minute"


def resolve_limits(
    deployment_type: str, tokens_per_minute: int | None, requests_per_minute: int | None
) -> RateLimits | None:
    """Configured limits over the type's defaults: None takes the default, 0 means not limited. Returns None
    when neither limit binds (nothing to count)."""
    base = default_limits(deployment_type)

    def pick(value: int | None, default: int | None) -> int:
        if value is None:
            return default if default is not None else UNLIMITED
        return value if value > 0 else UNLIMITED

    tokens = pick(tokens_per_minute, base.tokens_per_minute if base else None)
    requests = pick(requests_per_minute, base.requests_per_minute if base else None)
    return None if tokens == requests == UNLIMITED else RateLimits(tokens, requests)


def deployment_limits(deployment_type: str, settings: Mapping[str, Any]) -> RateLimits | None:
    """The limits of a stored deployment (`deploy create/update --tpm/--rpm` write them to its settings)."""
    return resolve_limits(
        deployment_type, settings.get(SETTING_TOKENS_PER_MINUTE), settings.get(SETTING_REQUESTS_PER_MINUTE)
    )


def limit_settings(tokens_per_minute: int | None, requests_per_minute: int | None) -> dict[str, int]:
    """The settings `deploy create/update --tpm/--rpm` store (only the limits given; 0 means not limited)."""
    found = {SETTING_TOKENS_PER_MINUTE: tokens_per_minute, SETTING_REQUESTS_PER_MINUTE: requests_per_minute}
    for flag, value in zip(("--tpm", "--rpm"), found.values(), strict=True):
        if value is not None and value < 0:
            raise ValueError(f"{flag} {value}: give a number of tokens or requests per minute, or 0 for no limit.")
    return {name: value for name, value in found.items() if value is not None}


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one admitted request; hand it to `settle` when the request ends."""

    key: str
    bucket: int  # the admission second (unix time, whole seconds)
    tokens: int


@dataclass(frozen=True)
class Decision:
    """The answer to one admission (or a `peek`).

    `remaining_*` are what is left in the window after this request (negative when reservations of requests
    admitted earlier were corrected upwards). `retry_after_ms` is 0 when allowed.
    """

    is_allowed: bool
    remaining_requests: int
    remaining_tokens: int
    limits: RateLimits
    retry_after_ms: int = 0
    limited_by: str | None = None
    reservation: Reservation | None = None

    @property
    def retry_after_s(self) -> int:
        """`retry_after_ms` rounded up to whole seconds (at least 1 when refused)."""
        return max(1, math.ceil(self.retry_after_ms / 1000)) if not self.is_allowed else 0


class RequestExceedsLimitError(ValueError):
    """One request reserves more tokens than the deployment may use in a whole minute: it can never run."""

    def __init__(self, tokens: int, limits: RateLimits) -> None:
        super().__init__(
            f"This request reserves {tokens} tokens (prompt plus max_tokens for every choice), more than this "
            f"deployment's limit of {limits.tokens_per_minute} tokens per minute. Set a lower max_tokens, "
            "or raise the deployment's limit (deploy update NAME --tpm N)."
        )
        self.tokens = tokens
        self.limits = limits


class RateLimitStoreUnavailable(RuntimeError):
    """The shared counters (Redis) cannot be reached: requests cannot be counted, so they are refused (a 503) rather
    than let through uncounted."""


class RateLimiter(Protocol):
    """Counts admissions per key (a deployment name). Implementations: `MemoryRateLimiter` (one process) and
    `RedisRateLimiter` (several gateway processes sharing one limit).

    `acquire` is called once per request before it reaches the engine; when it returns an allowed decision,
    the caller must call `settle` exactly once with the tokens the request really used (0 if it never ran).
    """

    async def acquire(self, key: str, limits: RateLimits, tokens: int) -> Decision: ...

    async def settle(self, reservation: Reservation, used_tokens: int) -> None: ...

    async def peek(self, key: str, limits: RateLimits) -> Decision: ...

    async def close(self) -> None: ...


def check_reservation(tokens: int, limits: RateLimits) -> None:
    if tokens > limits.tokens_per_minute:
        raise RequestExceedsLimitError(tokens, limits)


# ---- the counting, over {second: (requests, tokens)} ---------------------------------------------------------


def window_start(now_s: int, window_s: int = WINDOW_S) -> int:
    """The oldest bucket second still inside a window ending at `now_s`."""
    return now_s - window_s + 1


def wait_ms(amounts: Iterable[tuple[int, int]], used: int, need: int, limit: int, now: float, window_s: int) -> int:
    """Milliseconds until `need` more fits under `limit`, as the buckets `(second, amount)` (oldest first) age out."""
    excess = used + need - limit
    if excess <= 0:
        return 0
    for second, amount in amounts:
        excess -= amount
        if excess <= 0:
            return max(1, math.ceil((second + window_s - now) * 1000))
    return window_s * 1000  # unreachable when need <= limit: every bucket ages out within the window


def evaluate(
    buckets: dict[int, list[int]], now: float, limits: RateLimits, tokens: int, num_requests: int = 1
) -> tuple[bool, int, str | None, int, int]:
    """(allowed, retry_after_ms, limited_by, requests in window, tokens in window) for a request that needs
    `tokens` now. `buckets` must hold only seconds inside the window."""
    now_s = int(now)
    seconds = sorted(buckets)
    used_requests = sum(buckets[s][0] for s in seconds)
    used_tokens = sum(buckets[s][1] for s in seconds)
    burst_start = window_start(now_s, BURST_WINDOW_S)
    burst = [(s, buckets[s][0]) for s in seconds if s >= burst_start]
    waits = {
        LIMITED_BY_REQUESTS: max(
            wait_ms(
                ((s, buckets[s][0]) for s in seconds),
                used_requests,
                num_requests,
                limits.requests_per_minute,
                now,
                WINDOW_S,
            ),
            wait_ms(burst, sum(a for _, a in burst), num_requests, limits.max_burst_requests, now, BURST_WINDOW_S),
        ),
        LIMITED_BY_TOKENS: wait_ms(
            ((s, buckets[s][1]) for s in seconds), used_tokens, tokens, limits.tokens_per_minute, now, WINDOW_S
        ),
    }
    limited_by = max(waits, key=lambda k: waits[k]) if any(waits.values()) else None
    retry = waits[limited_by] if limited_by else 0
    return limited_by is None, retry, limited_by, used_requests, used_tokens


class MemoryRateLimiter:
    """The in-process limiter: exact, and shared by every request of this process only.

    Args:
        clock: seconds since the epoch (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[str, dict[int, list[int]]] = {}
        self._lock = threading.Lock()

    def _window(self, key: str, now: float) -> dict[int, list[int]]:
        buckets = self._buckets.setdefault(key, {})
        oldest = window_start(int(now))
        for second in [s for s in buckets if s < oldest]:
            del buckets[second]
        return buckets

    async def acquire(self, key: str, limits: RateLimits, tokens: int) -> Decision:
        check_reservation(tokens, limits)
        with self._lock:
            now = self._clock()
            buckets = self._window(key, now)
            allowed, retry, limited_by, used_requests, used_tokens = evaluate(buckets, now, limits, tokens)
            if not allowed:
                return Decision(
                    False,
                    limits.requests_per_minute - used_requests,
                    limits.tokens_per_minute - used_tokens,
                    limits,
                    retry,
                    limited_by,
                )
            bucket = buckets.setdefault(int(now), [0, 0])
            bucket[0] += 1
            bucket[1] += tokens
        return Decision(
            True,
            limits.requests_per_minute - used_requests - 1,
            limits.tokens_per_minute - used_tokens - tokens,
            limits,
            reservation=Reservation(key, int(now), tokens),
        )

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        with self._lock:
            buckets = self._window(reservation.key, self._clock())
            bucket = buckets.get(reservation.bucket)
            if bucket is not None:
                bucket[1] = max(0, bucket[1] + used_tokens - reservation.tokens)

    async def peek(self, key: str, limits: RateLimits) -> Decision:
        with self._lock:
            buckets = self._window(key, self._clock())
            used_requests = sum(b[0] for b in buckets.values())
            used_tokens = sum(b[1] for b in buckets.values())
        return Decision(
            True, limits.requests_per_minute - used_requests, limits.tokens_per_minute - used_tokens, limits
        )

    async def close(self) -> None:
        return None
