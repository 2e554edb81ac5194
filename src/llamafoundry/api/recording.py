"""Recording one chat request exactly once: journaled when admitted and as its stream goes, then its usage record
(the meter's, and the metrics) when it ends, on the disk before the client has the end of the answer.

`api.usage.AccountingMiddleware` makes one `Recorder` per request and puts it on the request's `RequestUsage`;
`limits.admit` and the tracked stream tell it how the request goes (`limits.UsageRecorder`).
"""

from __future__ import annotations

import time
from dataclasses import replace

from llamafoundry.api.context import RequestContext
from llamafoundry.api.limits import Accounting, RequestUsage
from llamafoundry.platform.catalog import MANAGED
from llamafoundry.platform.keys import DEFAULT_KEY_ID
from llamafoundry.platform.metering import STATUS_CLIENT_CLOSED, STATUS_CUT_BY_CRASH, Meter, UsageRecord
from llamafoundry.platform.usage import pricing_for

NOT_METERED = (401, 404)  # refused by authentication, or addressed to no deployment


class Recorder:
    """Records one request exactly once (satisfies `limits.UsageRecorder`): journaled when admitted, its
    progress as its stream goes, then its record (metrics and meter) when it ends, durable before the client has
    the end of the answer."""

    def __init__(self, accounting: Accounting, usage: RequestUsage, context: RequestContext) -> None:
        self.accounting = accounting
        self.usage = usage
        self.context = context
        self.status: int | None = None  # the response's, once it started
        self.is_recorded = False
        self._journaled: tuple[int, int] | None = None  # the tokens of the newest journal entry

    @property
    def _journal(self) -> Meter | None:
        meter = self.accounting.meter
        return meter if meter is not None and meter.journal is not None else None

    def admitted(self, prompt_tokens: int | None) -> None:
        meter = self._journal
        if meter is None:
            return
        usage = with_context(self.usage, self.context)
        record = usage_record(replace(usage, prompt_tokens=prompt_tokens or 0), STATUS_CUT_BY_CRASH)
        if record is not None:
            meter.begin(record)  # what it is recorded as if the server dies before it ends
            self._journaled = (usage.prompt_tokens, usage.completion_tokens)

    def progress(self) -> None:
        usage, meter = self.usage, self._journal
        tokens = (usage.prompt_tokens, usage.completion_tokens)
        if meter is None or self._journaled in (None, tokens):
            return
        self._journaled = tokens
        ttft_s = usage.first_token_at - usage.started if usage.first_token_at is not None else None
        meter.progress(
            usage.request_id,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_ms=(time.monotonic() - usage.started) * 1000,
            time_to_first_token_ms=ttft_s * 1000 if ttft_s is not None else None,
            is_filtered=usage.is_filtered,
            cost_usd=_token_cost(usage),
        )

    async def completed(self) -> None:
        await self.finish(final_status(self.status, True, self.usage))

    async def finish(self, status: int) -> None:
        """Record the request with `status` (once) and return when its record is on the disk."""
        meter = self.accounting.meter
        if self.finish_now(status) and meter is not None:
            await meter.sync()

    def finish_now(self, status: int) -> bool:
        """Record the request with `status` (once): the metrics, and the meter's record, journaled (no await:
        the caller's next byte is not delayed, nor a cancelled request's end). Whether it recorded anything."""
        if self.is_recorded:
            return False
        self.is_recorded = True
        usage = with_context(self.usage, self.context)
        record = usage_record(usage, status)
        if record is None:
            return False
        ttft_ms = record.time_to_first_token_ms
        self.accounting.metrics.observe(
            record.deployment, status, usage.prompt_tokens, usage.completion_tokens, record.latency_ms / 1000,
            ttft_ms / 1000 if ttft_ms is not None else None,
        )  # fmt: skip
        self.accounting.metrics.outcomes(record.deployment, usage.finish_reasons, usage.filter_blocks)
        if self.accounting.meter is not None:
            self.accounting.meter.record(record)
        return True


def usage_record(usage: RequestUsage, status: int) -> UsageRecord | None:
    """The request's record, as it stands, with `status`; None when it is not metered (401, 404)."""
    if status in NOT_METERED or usage.deployment is None:
        return None
    latency_s = time.monotonic() - usage.started
    ttft_s = usage.first_token_at - usage.started if usage.first_token_at is not None else None
    return UsageRecord(
        request_id=usage.request_id,
        deployment=usage.deployment,
        key_id=usage.key_id,
        created_at=usage.started_at,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        status=status,
        latency_ms=latency_s * 1000,
        is_filtered=usage.is_filtered,
        is_stream=usage.is_stream,
        time_to_first_token_ms=ttft_s * 1000 if ttft_s is not None else None,
        cost_usd=_token_cost(usage),
        project=usage.project,
    )


def with_context(usage: RequestUsage, context: RequestContext) -> RequestUsage:
    """`usage` with what the other layers learnt on the way: the request id, the key, the routed deployment."""
    usage.request_id = context.request_id or str(id(usage))
    usage.key_id = usage.key_id or context.key_id or DEFAULT_KEY_ID
    target = context.target  # set by routing once the deployment is known (header, body `model`)
    if target is not None:
        usage.deployment = target.name
        usage.pricing = pricing_for(target.deployment) if target.deployment is not None else None
        usage.project = target.deployment.project if target.deployment is not None else None
    return usage


def _token_cost(usage: RequestUsage) -> float | None:
    """The request's tokens at its deployment's prices now; None for the server's own model (it has no price)
    and for managed compute (billed by core-hours: once such a deployment is deleted its cost is unknown, not 0)."""
    if usage.pricing is None or usage.pricing.deployment_type == MANAGED:
        return None
    return usage.pricing.token_cost(usage.prompt_tokens, usage.completion_tokens)


def final_status(status: int | None, is_complete: bool, usage: RequestUsage) -> int:
    if status is None:
        return 500  # the app raised before answering; the outer middleware answers 500
    if usage.failed_status is not None:
        return usage.failed_status
    if not is_complete:
        return STATUS_CLIENT_CLOSED  # the response started but the client left before its end
    return status
