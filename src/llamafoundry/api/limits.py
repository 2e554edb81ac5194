"""The HTTP side of rate limiting: admission of a chat request, the 429 answer, the `x-ratelimit-*` headers.

A chat handler calls `admit()` once it has a valid request and before the service sees it; the request then
reserves its worst-case tokens (see `platform.ratelimit`). `api.usage` settles the reservation when the
response ends, and adds the headers to every chat response, errors included.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from llamafoundry.api.context import context_of
from llamafoundry.platform.keys import DEFAULT_KEY_ID
from llamafoundry.platform.ratelimit import (
    LIMITED_BY_TOKENS,
    UNLIMITED,
    Decision,
    RateLimiter,
    RateLimits,
    RateLimitStoreUnavailable,
    RequestExceedsLimitError,
)
from llamafoundry.protocol.errors import ApiError
from llamafoundry.service.types import PreparedRequest

if TYPE_CHECKING:
    from llamafoundry.api.metrics import Metrics
    from llamafoundry.platform.budgets import BudgetGuard
    from llamafoundry.platform.metering import Meter
    from llamafoundry.platform.usage import Pricing

logger = logging.getLogger(__name__)

RETRY_AFTER_STORE_S = 2  # a rate-limit store (Redis) that does not answer: retry soon
KEY_LIMIT_PREFIX = "key:"  # a project key's counters (a deployment name never holds a colon)


class RateLimitExceeded(ApiError):
    """429 in the Azure gateway's shape: exactly `{"error": {"code": "429", "message": ...}}`, the message
    opening with the gateway's own sentence (clients match "Try again in N seconds") and naming the limit (the
    deployment's, or the project key's own)."""

    def __init__(self, decision: Decision, scope: str = "deployment") -> None:
        seconds = decision.retry_after_s
        super().__init__(
            429,
            "429",
            f"Rate limit is exceeded. Try again in {seconds} seconds. {_which_limit(decision, scope)}",
            retry_after=seconds,
            headers={"retry-after-ms": str(max(1, decision.retry_after_ms)), **ratelimit_headers(decision)},
        )
        self.decision = decision

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class BudgetExceeded(ApiError):
    """429 once a spend budget is used up: no Retry-After (a budget resets at the end of its day or month, which no
    client should sleep until); the message says which budget, what is spent and when it resets."""

    def __init__(self, message: str) -> None:
        super().__init__(429, "BudgetExceeded", message)


def _which_limit(decision: Decision, scope: str = "deployment") -> str:
    limits = decision.limits
    whose = "This key's own" if scope == "key" else "The deployment's"
    if decision.limited_by == LIMITED_BY_TOKENS:
        return f"{whose} token rate limit is {limits.tokens_per_minute} tokens per minute."
    return (
        f"{whose} call rate limit is {limits.requests_per_minute} requests per minute, "
        f"at most {limits.max_burst_requests} in any 10 seconds."
    )


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """What every response of a limited deployment carries (Azure sends the `remaining` pair; the limits
    are extra, for clients that pace themselves). A limit that does not bind (a managed deployment limited
    by requests only) has no headers."""
    limits = decision.limits
    headers = {}
    if limits.requests_per_minute != UNLIMITED:
        headers["x-ratelimit-remaining-requests"] = str(decision.remaining_requests)
        headers["x-ratelimit-limit-requests"] = str(limits.requests_per_minute)
    if limits.tokens_per_minute != UNLIMITED:
        headers["x-ratelimit-remaining-tokens"] = str(decision.remaining_tokens)
        headers["x-ratelimit-limit-tokens"] = str(limits.tokens_per_minute)
    return headers


class LimitsSource:
    """Which limits apply to a deployment (None: not limited).

    Args:
        fixed: limits of deployments the server defines itself (the bare routes' model); they win.
        resolve: limits of any other deployment (the store's), looked up on every request.
    """

    def __init__(
        self,
        fixed: dict[str, RateLimits | None] | None = None,
        resolve: Callable[[str], RateLimits | None] | None = None,
    ) -> None:
        self.fixed = {name.lower(): limits for name, limits in (fixed or {}).items()}
        self.resolve = resolve

    def __call__(self, deployment: str) -> RateLimits | None:
        if deployment.lower() in self.fixed:
            return self.fixed[deployment.lower()]
        return self.resolve(deployment) if self.resolve is not None else None


@dataclass
class Accounting:
    """Everything that counts requests in one app: the limiter, the limits, the meter, the metrics.

    Args:
        limiter: in-process or Redis.
        limits: deployment name -> its limits.
        meter: where usage records go (None: not metered, e.g. no store).
        budgets: the store's spend budgets (None: none are checked).
        metrics: the app's Prometheus metrics.
        default_deployment: the name that the bare routes (`/chat/completions`, `/v1/...`) are metered under.
    """

    limiter: RateLimiter
    limits: LimitsSource
    metrics: Metrics
    meter: Meter | None = None
    default_deployment: str | None = None
    budgets: BudgetGuard | None = None
    _is_started: bool = field(default=False, repr=False)

    async def start(self) -> None:
        ping = getattr(self.limiter, "ping", None)
        if ping is not None:  # a wrong --redis-url stops the server at startup, not at the first request
            try:
                await ping()
            except Exception as exc:
                raise RuntimeError(
                    f"The Redis server for the rate limits cannot be reached ({exc}). Start it, or fix --redis-url."
                ) from exc
        if self.meter is not None and not self._is_started:
            await self.meter.start()
        if self.budgets is not None and not self._is_started:
            await self.budgets.start()
        self._is_started = True

    async def stop(self) -> None:
        if self.budgets is not None:
            await self.budgets.stop()
        if self.meter is not None:
            await self.meter.stop()
        await self.limiter.close()


class UsageRecorder(Protocol):
    """Records one request (`api.usage`): told when it is admitted and as its stream goes, so that a server that
    dies meanwhile still has its usage (the meter's journal)."""

    def admitted(self, prompt_tokens: int | None) -> None:
        """The request passed the limits (`prompt_tokens`: its prompt as counted for them, when it was)."""
        ...

    def progress(self) -> None:
        """Its `RequestUsage` has new token counts (a stream's update is about to go out)."""
        ...

    async def completed(self) -> None:
        """Its stream generated everything: record it now, durably, before its end goes out."""
        ...


@dataclass
class RequestUsage:
    """What one chat request used, filled in as it goes; kept in the request's context (`api/context.py`)."""

    request_id: str
    started_at: float  # unix seconds
    started: float  # monotonic seconds
    deployment: str | None = None
    project: str | None = None  # the deployment's (None: the server's own model)
    key_id: str | None = None
    is_stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    is_filtered: bool = False
    finish_reasons: list[str] = field(default_factory=list)  # of each choice that ended
    filter_blocks: list[tuple[str, str]] = field(default_factory=list)  # (category, prompt|completion) blocked
    first_token_at: float | None = None  # monotonic
    decision: Decision | None = None
    key_decision: Decision | None = None  # a project key's own limits (settled as `decision` is)
    failed_status: int | None = None  # a stream that failed after its 200 went out
    pricing: Pricing | None = None  # the deployment's prices (None: the server's own model, which has none)
    recorder: UsageRecorder | None = None  # set by the accounting middleware

    @classmethod
    def begin(cls, request_id: str) -> RequestUsage:
        return cls(request_id, time.time(), time.monotonic())


def request_usage(request: Request) -> RequestUsage | None:
    return context_of(request).usage


def accounting_of(request: Request) -> Accounting | None:
    return getattr(request.app.state, "accounting", None)


def reservation_tokens(prompt_tokens: int, max_tokens: int | None, num_candidates: int, max_context: int) -> int:
    """Prompt tokens + the completion budget (max_tokens, at most the rest of the context) for every candidate.

    A max_tokens larger than the context is the model's error to report (context_length_exceeded, "lower
    max_tokens"), not a reservation that no tokens-per-minute limit could hold."""
    room = max(0, max_context - prompt_tokens)
    budget = min(max_tokens, room) if max_tokens is not None else room
    return prompt_tokens + budget * num_candidates


async def admit(
    request: Request, prepared: PreparedRequest, max_context: int, *, deployment: str, key_id: str | None = None
) -> None:
    """Count the request against its budgets, its project key's limits and its deployment's limits, or refuse it.

    Args:
        prepared: the request, prepared by its backend (its prompt counted once, there).
        max_context: the backend's context (the reservation's completion budget is at most the rest of it).
        deployment: the deployment serving it (the name usage is recorded under).
        key_id: the id of the key the caller used (`primary`, `secondary`; never the key), if known; else
            the request context's, else `default` (the single key of `serve --api-key`).
    Raises:
        BudgetExceeded: a budget of the caller's project or key is spent (429); nothing was counted.
        RateLimitExceeded: over the key's or the deployment's limit; nothing was counted.
        ApiError: 400 when the request alone reserves more tokens than the whole minute allows.
    """
    usage, accounting = request_usage(request), accounting_of(request)
    if usage is None or accounting is None:
        return
    usage.deployment = deployment
    usage.is_stream = prepared.request.stream
    context = context_of(request)
    usage.key_id = key_id or context.key_id or DEFAULT_KEY_ID
    caller = context.caller  # set by `routing.authorize_request`
    if accounting.budgets is not None and caller is not None:
        exhausted = await accounting.budgets.check(caller.project, usage.key_id)
        if exhausted is not None:
            raise BudgetExceeded(exhausted.message())
    limits, key_limits = accounting.limits(deployment), getattr(caller, "limits", None)
    if limits is None and key_limits is None:
        if usage.recorder is not None:
            usage.recorder.admitted(None)
        return
    prompt_tokens = prepared.num_prompt_tokens
    params = prepared.params
    tokens = reservation_tokens(prompt_tokens, params.max_tokens, params.num_candidates, max_context)
    if key_limits is not None:  # the key's own limits first: a request it refuses counts nowhere
        key_counter = KEY_LIMIT_PREFIX + usage.key_id
        usage.key_decision = await _acquire(accounting, key_counter, key_limits, tokens, deployment, "key")
    if limits is not None:
        try:
            usage.decision = await _acquire(accounting, deployment, limits, tokens, deployment, "deployment")
        except Exception:
            await _release(accounting, usage.key_decision)
            raise
    if usage.recorder is not None:
        usage.recorder.admitted(prompt_tokens)


async def _acquire(
    accounting: Accounting, name: str, limits: RateLimits, tokens: int, deployment: str, scope: str
) -> Decision:
    """Count `tokens` under the counters `name` (a deployment's, or `key:<id>`), or raise the 429/400/503."""
    try:
        decision = await accounting.limiter.acquire(name, limits, tokens)
    except RequestExceedsLimitError as exc:
        raise ApiError(400, "tokens_limit_exceeded", str(exc), "max_tokens") from None
    except RateLimitStoreUnavailable as exc:
        logger.warning("refusing a request to %s: %s", name, exc)
        raise ApiError(
            503,
            "ServiceUnavailable",
            f"The server cannot count this request against the {scope}'s rate limits right now (its rate-limit "
            "store is unreachable); retry shortly.",
            retry_after=RETRY_AFTER_STORE_S,
        ) from None
    if not decision.is_allowed:
        reason = decision.limited_by or "requests"
        accounting.metrics.rejected(deployment, reason if scope == "deployment" else f"key_{reason}")
        raise RateLimitExceeded(decision, scope)
    return decision


async def _release(accounting: Accounting, decision: Decision | None) -> None:
    """Give back the tokens a key reserved for a request its deployment then refused (its request stays counted)."""
    if decision is not None and decision.reservation is not None:
        with contextlib.suppress(Exception):
            await accounting.limiter.settle(decision.reservation, 0)
