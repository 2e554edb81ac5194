"""Per-request accounting of chat requests: rate-limit headers, settling reservations, metering, metrics.

`AccountingMiddleware` wraps every `POST` that generates (`.../chat/completions`, `.../completions`,
`.../responses`). It puts a `RequestUsage` in the request's context (`api/context.py`) that the handler fills in
(`limits.admit`, `track_stream`, `track_result`), with a
`recording.Recorder` that journals the request as it goes; the request is recorded once (meter and metrics), its
record on the disk before the client has the end of the answer (a stream: before its final chunk and `[DONE]`),
or when the client goes away; then the rate-limit reservation is settled to the tokens really used. Requests
refused by authentication (401) or addressed to no deployment (404) are not metered.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamafoundry.api.auth import AuthError, presented_keys
from llamafoundry.api.context import context_in
from llamafoundry.api.errors import from_service_exception, json_response
from llamafoundry.api.limits import (
    Accounting,
    LimitsSource,
    RequestUsage,
    ratelimit_headers,
    request_usage,
)
from llamafoundry.api.metrics import Metrics
from llamafoundry.api.metrics_pools import UpstreamPoolCollector
from llamafoundry.api.recording import NOT_METERED, Recorder, final_status
from llamafoundry.api.replica_metrics import watch_gateway
from llamafoundry.config import ServeSettings
from llamafoundry.platform.catalog import SERVERLESS
from llamafoundry.platform.keys import StoredKey, hash_key, match_key
from llamafoundry.platform.metering import Meter
from llamafoundry.platform.ratelimit import RateLimits, RateLimitStoreUnavailable, deployment_limits, resolve_limits
from llamafoundry.platform.ratelimit_redis import build_limiter
from llamafoundry.platform.usage import Pricing, check_period, parse_since, period_label, report, to_csv
from llamafoundry.protocol.errors import ApiError, invalid
from llamafoundry.service.types import CONTENT_FILTER, ChatResult, ChatStream, ChatUpdate

logger = logging.getLogger(__name__)

# `/deployments/<name>/chat/completions`, Azure OpenAI's `/openai/deployments/<name>/[chat/]completions`
_DEPLOYMENT_PATH = re.compile(r"^(?:/openai)?/deployments/([^/]+)/(?:chat/)?completions$")
METERED_ROUTES = ("/completions", "/responses")  # what generates tokens: chat and text completions, responses


class AccountingMiddleware:
    """ASGI middleware; install with `app.add_middleware(AccountingMiddleware, accounting=...)`."""

    def __init__(self, app: ASGIApp, accounting: Accounting) -> None:
        self.app = app
        self.accounting = accounting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith(METERED_ROUTES):
            await self.app(scope, receive, send)
            return
        context = context_in(scope)
        usage = RequestUsage.begin(request_id="")
        match = _DEPLOYMENT_PATH.match(scope["path"])
        usage.deployment = match.group(1) if match else self.accounting.default_deployment
        recorder = usage.recorder = Recorder(self.accounting, usage, context)
        context.usage = usage

        async def send_accounted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = recorder.status = int(message["status"])
                headers = MutableHeaders(scope=message)
                for name, value in (await self._headers(usage, status)).items():
                    if name not in headers:
                        headers[name] = value
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # counted, and its record on the disk, before the client has its last byte: a report or a scrape
                # it makes next includes it, and a crash after this cannot lose it
                await recorder.finish(final_status(recorder.status, True, usage))
            await send(message)

        try:
            await self.app(scope, receive, send_accounted)
        finally:
            # the app raised, or the client left before the end (its record is written, its sync follows anyway)
            recorder.finish_now(final_status(recorder.status, False, usage))
            await self._settle(usage)

    async def _headers(self, usage: RequestUsage, status: int) -> dict[str, str]:
        if usage.decision is not None or usage.key_decision is not None:
            return ratelimit_headers(usage.decision or usage.key_decision)  # type: ignore[arg-type]
        if status in NOT_METERED or usage.deployment is None:
            return {}
        limits = self.accounting.limits(usage.deployment)
        if limits is None:
            return {}
        try:
            return ratelimit_headers(await self.accounting.limiter.peek(usage.deployment, limits))
        except RateLimitStoreUnavailable as exc:  # the headers are informative; never fail a response for them
            logger.warning("no rate-limit headers: %s", exc)
            return {}
        except Exception:
            logger.exception("reading the rate-limit counters failed")
            return {}

    async def _settle(self, usage: RequestUsage) -> None:
        """Settle the request's rate-limit reservations (its deployment's, its project key's) to the tokens it
        really used."""
        for decision in (usage.decision, usage.key_decision):
            if decision is not None and decision.reservation is not None:
                await self._settle_one(usage, decision)

    async def _settle_one(self, usage: RequestUsage, decision: Any) -> None:
        try:
            await self.accounting.limiter.settle(decision.reservation, usage.prompt_tokens + usage.completion_tokens)
        except RateLimitStoreUnavailable as exc:  # the reservation stands until its minute is over
            logger.warning("the reservation of %s stays as reserved: %s", usage.request_id, exc)
        except Exception:
            logger.exception("settling the rate-limit reservation of %s failed", usage.request_id)


# ---- what the handler reports ----------------------------------------------------------------------------------


def track_result(request: Request, result: ChatResult) -> None:
    """A non-streaming request finished with `result`."""
    usage = request_usage(request)
    if usage is None:
        return
    usage.prompt_tokens = result.usage.prompt_tokens
    usage.completion_tokens = result.usage.completion_tokens
    usage.is_filtered = usage.is_filtered or any(c.finish_reason == CONTENT_FILTER for c in result.choices)
    for choice in result.choices:
        note_finish(usage, choice.finish_reason, choice.content_filter_results)


def track_stream(request: Request, stream: ChatStream) -> ChatStream:
    """`stream`, counting tokens (so far, for a stream that is aborted) and the time to the first token."""
    usage = request_usage(request)
    return stream if usage is None else _TrackedStream(stream, usage)


def note_finish(usage: RequestUsage, finish_reason: str, filter_results: Mapping[str, Any] | None) -> None:
    """A choice ended with `finish_reason`; a choice the content filter blocked counts as a block of each
    category its annotation says was filtered."""
    usage.finish_reasons.append(finish_reason)
    if finish_reason == CONTENT_FILTER:
        usage.is_filtered = True
        usage.filter_blocks += [(category, "completion") for category in blocked_categories(filter_results)]


def blocked_categories(filter_results: Mapping[str, Any] | None) -> list[str]:
    """The categories an Azure content-filter annotation marks `filtered` (`custom_blocklists` is a list, one
    entry per list; "unknown" when it names none)."""
    found = [name for name, result in (filter_results or {}).items() if _is_filtered(result)]
    return found or ["unknown"]


def _is_filtered(result: Any) -> bool:
    if isinstance(result, list):
        return any(_is_filtered(item) for item in result)
    return isinstance(result, dict) and bool(result.get("filtered"))


class _TrackedStream:
    """Satisfies `service.types.ChatStream`."""

    def __init__(self, stream: ChatStream, usage: RequestUsage) -> None:
        self._stream = stream
        self._usage = usage

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._updates()

    async def _updates(self) -> AsyncIterator[ChatUpdate]:
        usage, recorder = self._usage, self._usage.recorder
        try:
            async for update in self._stream:
                usage.prompt_tokens = update.usage.prompt_tokens
                usage.completion_tokens = update.usage.completion_tokens
                if usage.first_token_at is None and any(d.text for d in update.deltas):
                    usage.first_token_at = time.monotonic()
                for delta in update.deltas:
                    if delta.finish_reason is not None:
                        note_finish(usage, delta.finish_reason, delta.content_filter_results)
                if recorder is not None:
                    recorder.progress()  # journaled before the chunk goes out: the journal has what the client has
                yield update
        except Exception as exc:
            error = from_service_exception(exc)  # the 200 went out already; the stream ends with an error event
            usage.failed_status = error.status if error is not None else 500
            raise
        if recorder is not None:
            await recorder.completed()  # on the disk before the last chunk and [DONE] go out

    def abort(self) -> None:
        self._stream.abort()


# ---- GET /management/usage -------------------------------------------------------------------------------------


def usage_router(
    accounting: Accounting,
    pricing: Callable[[str | None], Mapping[str, Pricing]],
    dependencies: Sequence[Any] = (),
    path: str = "/management/usage",
) -> APIRouter:
    """`GET /management/usage?deployment=&project=&since=&by=hour|day&format=json|csv`: the usage report (a project
    key's: of its own project only).

    Args:
        accounting: its meter's database is read (after pending records are flushed).
        pricing: the prices of the deployments that exist now (of one project, when given one).
        dependencies: FastAPI dependencies guarding the route (the management API's admin-key check).
        path: the route (`/usage` when included in the `/management` router, whose admin check then applies).
    """

    async def get_usage(request: Request) -> Response:
        meter = accounting.meter
        if meter is None:
            raise ApiError(404, "NotFound", "Usage is not metered on this server: it was started without a store.")
        query = request.query_params
        fmt = query.get("format", "json")
        if fmt not in ("json", "csv"):
            raise invalid("format", f"format '{fmt}' is not supported: use json or csv.")
        try:
            since = parse_since(query["since"]) if query.get("since") else None
        except ValueError as exc:
            raise invalid("since", str(exc)) from None
        try:
            by = check_period(query.get("by") or None)
        except ValueError as exc:
            raise invalid("by", str(exc)) from None
        project = query.get("project") or None
        principal = getattr(request.state, "principal", None)
        if principal is not None:
            project = principal.scope(project)  # a project key sees its own project only
        await meter.flush()
        deployment = query.get("deployment") or None
        rows = await asyncio.to_thread(
            lambda: report(meter.engine, pricing(project), deployment=deployment, since=since, by=by, project=project)
        )
        if fmt == "csv":
            return Response(to_csv(rows), media_type="text/csv; charset=utf-8")
        body = {
            "since": period_label(since) if since is not None else None,
            "by": by,
            "data": [row.as_dict() for row in rows[:-1]],
            "total": rows[-1].as_dict(),
        }
        return json_response(body)

    router = APIRouter(dependencies=list(dependencies))
    router.add_api_route(path, get_usage, methods=["GET"], name="usage.show")
    return router


# ---- wiring -------------------------------------------------------------------------------------------------


def build_accounting(settings: ServeSettings, meter: Meter | None = None) -> Accounting:
    """The accounting of `serve`: the bare routes' model limited by `--tpm/--rpm` (serverless defaults), the
    in-process limiter or Redis (`--redis-url`), and the given meter."""
    limits = resolve_limits(SERVERLESS, settings.tokens_per_minute, settings.requests_per_minute)
    return Accounting(
        limiter=build_limiter(settings.redis_url),
        limits=LimitsSource({settings.model_name: limits}),
        metrics=Metrics(),
        meter=meter,
        default_deployment=settings.model_name,
    )


def install_accounting(
    app: FastAPI, service: Any, settings: ServeSettings, accounting: Accounting | None
) -> Accounting:
    """Add the accounting middleware and `GET /metrics` to `app`; returns the accounting (built from `settings`
    when None). Its `start()`/`stop()` belong in the app's lifespan."""
    accounting = accounting or build_accounting(settings)
    gateway = getattr(app.state, "gateway", None)
    if accounting.limits.resolve is None and gateway is not None:
        accounting.limits.resolve = gateway_limits(gateway)
    app.state.accounting = accounting
    app.add_middleware(AccountingMiddleware, accounting=accounting)
    endpoint: Callable[[Request], Awaitable[Response]] = accounting.metrics.endpoint
    if settings.metrics_key:
        endpoint = _keyed(endpoint, settings.metrics_key)
    app.add_api_route("/metrics", endpoint, methods=["GET"], include_in_schema=False)
    if service is not None:
        accounting.metrics.watch(settings.model_name, service.status)
    if gateway is not None:
        watch_gateway(accounting.metrics, gateway)
        accounting.metrics.add_collector(UpstreamPoolCollector(gateway))  # --upstream pools' health
    return accounting


def _keyed(endpoint: Callable[[Request], Awaitable[Response]], key: str) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint` for requests that present `key` (`serve --metrics-key`); others get the 401 of a wrong key."""
    expected = [StoredKey("metrics", hash_key(key), 0.0)]

    async def metrics(request: Request) -> Response:
        if match_key(presented_keys(request.headers), expected) is None:  # the API keys' constant-time check
            raise AuthError()
        return await endpoint(request)

    return metrics


def gateway_limits(gateway: Any) -> Callable[[str], RateLimits | None]:
    """Limits of the gateway's deployments, from their settings (`deploy create/update --tpm/--rpm`) over their
    type's defaults; read on every request, so changes apply as soon as the gateway sees them."""

    def resolve(name: str) -> RateLimits | None:
        target = gateway.targets.get(name.lower())
        if target is None or target.deployment is None:
            return None
        return deployment_limits(target.deployment.type, target.deployment.settings)

    return resolve
