"""Prometheus metrics at `/metrics` (prometheus-client's text format), labelled by deployment.

Counters and histograms are observed once per request when it ends (see `api.usage`); queue depth, running
requests and KV-cache use are read from the engines when Prometheus scrapes. Time to first token and time
per output token are measured on streaming requests, the only ones whose tokens leave as they are made.

Each app has its own registry, so several apps in one process (tests) do not share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

NAMESPACE = "llamafoundry"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)


class _EngineCollector(Collector):
    """Reads queue depth, running requests, KV-cache use and the prefix cache's and speculation's counters from
    each watched backend's `status()` at scrape time (a key the status lacks is not reported)."""

    def __init__(self) -> None:
        self.backends: dict[str, Callable[[], Mapping[str, Any] | None]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        waiting = GaugeMetricFamily(
            f"{NAMESPACE}_queue_depth", "Requests waiting for a sequence slot.", labels=["deployment"]
        )
        running = GaugeMetricFamily(
            f"{NAMESPACE}_requests_running", "Requests holding sequence slots.", labels=["deployment"]
        )
        kv_cache = GaugeMetricFamily(
            f"{NAMESPACE}_kv_cache_usage_ratio", "Fraction of KV-cache cells in use (0 to 1).", labels=["deployment"]
        )
        drafted = CounterMetricFamily(
            f"{NAMESPACE}_speculative_draft_tokens",
            "Tokens guessed by prompt-lookup speculative decoding and checked by the model.",
            labels=["deployment"],
        )
        accepted = CounterMetricFamily(
            f"{NAMESPACE}_speculative_accepted_tokens",
            "Guessed tokens the model produced too (each saved a decode step).",
            labels=["deployment"],
        )
        reused = CounterMetricFamily(
            f"{NAMESPACE}_prefix_cache_reused_tokens",
            "Prompt tokens taken from the prefix cache instead of computed, by where they were held (slot: the KV "
            "cache itself; ram, disk: states saved out of it).",
            labels=["deployment", "source"],
        )
        ram_bytes = GaugeMetricFamily(
            f"{NAMESPACE}_prefix_cache_ram_bytes", "Bytes of KV states held in host memory.", labels=["deployment"]
        )
        for deployment, get_status in list(self.backends.items()):
            status = get_status()
            if status is None:
                continue
            for source, count in (status.get("prefix_cache_tokens") or {}).items():
                reused.add_metric([deployment, source], float(count))
            if status.get("prefix_cache_ram_bytes") is not None:
                ram_bytes.add_metric([deployment], float(status["prefix_cache_ram_bytes"]))
            if "waiting" in status:
                waiting.add_metric([deployment], float(status["waiting"]))
            if "running" in status:
                running.add_metric([deployment], float(status["running"]))
            if status.get("kv_cache_usage") is not None:
                kv_cache.add_metric([deployment], float(status["kv_cache_usage"]))
            if status.get("speculative_counts") is not None:
                drafted.add_metric([deployment], float(status["speculative_counts"][0]))
                accepted.add_metric([deployment], float(status["speculative_counts"][1]))
        yield waiting
        yield running
        yield kv_cache
        yield drafted
        yield accepted
        yield reused
        yield ram_bytes


class Metrics:
    """The metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["deployment"]
        self.requests = Counter(
            f"{NAMESPACE}_requests",
            "Chat requests that ended, by HTTP status (499: the client went away).",
            [*labels, "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            f"{NAMESPACE}_tokens", "Tokens processed, by kind (prompt, completion).", [*labels, "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.rejections = Counter(
            f"{NAMESPACE}_rate_limit_rejections",
            "Requests refused with 429 by the rate limiter, by the limit that was reached (requests, tokens).",
            [*labels, "limit"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{NAMESPACE}_request_duration_seconds", "Time from request to the end of the response.", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.time_to_first_token = Histogram(
            f"{NAMESPACE}_time_to_first_token_seconds", "Streaming: time from request to the first token.", labels,
            buckets=TTFT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.time_per_output_token = Histogram(
            f"{NAMESPACE}_time_per_output_token_seconds",
            "Streaming: time between output tokens after the first.", labels,
            buckets=TPOT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._engines = _EngineCollector()
        self.registry.register(self._engines)

    def watch(self, deployment: str, get_status: Callable[[], Mapping[str, Any] | None]) -> None:
        """Report the engine gauges of `get_status()` (a `ChatBackend.status()`: `running`, `waiting`,
        `kv_cache_usage`, ... where it has them) at scrapes; None: nothing to report now."""
        self._engines.backends[deployment] = get_status

    def observe(
        self,
        deployment: str,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        time_to_first_token_s: float | None = None,
    ) -> None:
        """One finished request."""
        self.requests.labels(deployment, str(status)).inc()
        self.tokens.labels(deployment, "prompt").inc(prompt_tokens)
        self.tokens.labels(deployment, "completion").inc(completion_tokens)
        self.latency.labels(deployment).observe(latency_s)
        if time_to_first_token_s is not None:
            self.time_to_first_token.labels(deployment).observe(time_to_first_token_s)
            if completion_tokens > 1:
                per_token = (latency_s - time_to_first_token_s) / (completion_tokens - 1)
                self.time_per_output_token.labels(deployment).observe(max(0.0, per_token))

    def rejected(self, deployment: str, limit: str) -> None:
        self.rejections.labels(deployment, limit).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics."""
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)
