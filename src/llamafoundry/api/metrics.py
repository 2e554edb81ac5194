"""Prometheus metrics at `/metrics` (prometheus-client's text format), labelled by deployment.

Counters and histograms are observed once per request when it ends (see `api.usage`); queue depth, running
requests, KV-cache use and the prefix cache's counters are read from the engines when Prometheus scrapes. Time to
first token and time per output token are measured on streaming requests, the only ones whose tokens leave as they
are made. The process's own series (`process_*`, `python_info`) and `llamafoundry_build_info` come with every app.

Other collectors register beside these with `Metrics.add_collector` (a local deployment's replicas: their
`/metrics` scraped and relabelled, `api/replica_metrics.py`); collectors that read something over the network
give an async `refresh` that runs, concurrently with the others' and bounded in time, before each scrape, so that
`collect()` itself only reads what was fetched. Families of the same name from several collectors (the gateway's
`process_*` and its replicas') are merged into one in the exposition.

Each app has its own registry, so several apps in one process (tests) do not share counters.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from llamafoundry import __version__
from llamafoundry.hardware.llama_build import read_record

logger = logging.getLogger(__name__)

NAMESPACE = "llamafoundry"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
REFRESH_TIMEOUT_S = 1.5  # a collector's refresh that takes longer is left out of this scrape (its own bound is ~1 s)

Refresh = Callable[[], Awaitable[None]]
StatusSource = Callable[[], Mapping[str, Mapping[str, Any] | None]]  # deployment -> its backend's status()
ModelSource = Callable[[], Iterable[Mapping[str, str]]]  # the labels of one llamafoundry_model_info series each


class _EngineCollector(Collector):
    """Reads queue depth, running requests, KV-cache use and the prefix cache's and speculation's counters from
    each watched backend's `status()` at scrape time (a key the status lacks is not reported)."""

    def __init__(self) -> None:
        self.backends: dict[str, Callable[[], Mapping[str, Any] | None]] = {}
        self.sources: list[StatusSource] = []

    def statuses(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for deployment, get_status in list(self.backends.items()):
            status = get_status()
            if status is not None:
                yield deployment, status
        for source in list(self.sources):
            for deployment, status in source().items():
                if status is not None:
                    yield deployment, status

    def collect(self) -> Iterator[Metric]:
        families = engine_families()
        for deployment, status in self.statuses():
            add_engine_samples(families, deployment, status)
        yield from families.values()


def engine_families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    """The empty families of an engine's series, by `status()` key (their names are the replicas' too)."""
    d = ["deployment"]
    return {
        "waiting": GaugeMetricFamily(f"{NAMESPACE}_queue_depth", "Requests waiting for a sequence slot.", labels=d),
        "running": GaugeMetricFamily(f"{NAMESPACE}_requests_running", "Requests holding sequence slots.", labels=d),
        "kv_cache_usage": GaugeMetricFamily(
            f"{NAMESPACE}_kv_cache_usage_ratio", "Fraction of KV-cache cells in use (0 to 1).", labels=d
        ),
        "drafted": CounterMetricFamily(
            f"{NAMESPACE}_speculative_draft_tokens",
            "Tokens guessed by prompt-lookup speculative decoding and checked by the model.",
            labels=d,
        ),  # fmt: skip
        "accepted": CounterMetricFamily(
            f"{NAMESPACE}_speculative_accepted_tokens",
            "Guessed tokens the model produced too (each saved a decode step).",
            labels=d,
        ),  # fmt: skip
        "prefix_cache_tokens": CounterMetricFamily(
            f"{NAMESPACE}_prefix_cache_reused_tokens",
            "Prompt tokens taken from the prefix cache instead of computed (the hits), by where they were held "
            "(slot: the KV cache itself; ram, disk: states saved out of it).",
            labels=[*d, "source"],
        ),
        "prefix_cache_computed_tokens": CounterMetricFamily(
            f"{NAMESPACE}_prefix_cache_computed_tokens",
            "Prompt tokens of finished requests that no cache held, so were computed (the misses).",
            labels=d,
        ),  # fmt: skip
        "prefix_cache_requests": CounterMetricFamily(
            f"{NAMESPACE}_prefix_cache_requests",
            "Finished requests by whether part of their prompt came from the prefix cache (result: hit, miss) "
            "and from which tier (slot, ram, disk; none for a miss).",
            labels=[*d, "result", "tier"],
        ),
        "prefix_cache_copy_seconds": CounterMetricFamily(
            f"{NAMESPACE}_prefix_cache_copy_seconds",
            "Seconds spent copying KV states from one sequence slot to another (direction: slot), out of the KV "
            "cache into host memory or disk (save) and back into a slot (load); no sequence decodes meanwhile.",
            labels=[*d, "direction"],
        ),
        "prefix_cache_ram_bytes": GaugeMetricFamily(
            f"{NAMESPACE}_prefix_cache_ram_bytes", "Bytes of KV states held in host memory.", labels=d
        ),
    }


def add_engine_samples(
    families: dict[str, GaugeMetricFamily | CounterMetricFamily], deployment: str, status: Mapping[str, Any]
) -> None:
    """`status` (a `ChatBackend.status()`) as samples of `families` (`engine_families()`)."""
    for key in ("waiting", "running", "kv_cache_usage", "prefix_cache_computed_tokens", "prefix_cache_ram_bytes"):
        if status.get(key) is not None:
            families[key].add_metric([deployment], float(status[key]))
    for source, count in (status.get("prefix_cache_tokens") or {}).items():
        families["prefix_cache_tokens"].add_metric([deployment, source], float(count))
    for direction, seconds in (status.get("prefix_cache_copy_seconds") or {}).items():
        families["prefix_cache_copy_seconds"].add_metric([deployment, direction], float(seconds))
    for tier, count in (status.get("prefix_cache_requests") or {}).items():
        result = ("miss", "none") if tier == "miss" else ("hit", tier)
        families["prefix_cache_requests"].add_metric([deployment, *result], float(count))
    if status.get("speculative_counts") is not None:
        families["drafted"].add_metric([deployment], float(status["speculative_counts"][0]))
        families["accepted"].add_metric([deployment], float(status["speculative_counts"][1]))


class _ModelInfoCollector(Collector):
    """`llamafoundry_model_info{deployment, model, ...} 1` for each model a source lists at scrape time."""

    def __init__(self) -> None:
        self.sources: list[ModelSource] = []

    def collect(self) -> Iterator[Metric]:
        rows = [dict(row) for source in list(self.sources) for row in source()]
        labels = sorted({name for row in rows for name in row})
        family = GaugeMetricFamily(
            f"{NAMESPACE}_model_info", "The model each deployment serves (value 1; the labels say what).", labels=labels
        )
        for row in rows:
            family.add_metric([row.get(name, "") for name in labels], 1.0)
        yield family


class _Merged:
    """The registry's families with those of the same name merged (several collectors report `process_*`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for family in self.registry.collect():
            found = families.get(family.name)
            if found is None:
                families[family.name] = family
            else:  # a new family: neither collector's own object is changed
                merged = Metric(found.name, found.documentation, found.type, found.unit)
                merged.samples = [*found.samples, *family.samples]
                families[family.name] = merged
        yield from families.values()


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
        self.finish_reasons = Counter(
            f"{NAMESPACE}_finish_reasons",
            "Choices that ended, by finish reason (stop, length, tool_calls, content_filter).",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.content_filter_blocks = Counter(
            f"{NAMESPACE}_content_filter_blocks",
            "Prompts and completions blocked by the content filter, by category (hate, sexual, violence, "
            "self_harm, jailbreak, ...) and direction (prompt, completion).",
            [*labels, "category", "direction"],
            registry=self.registry,
        )
        self._engines = _EngineCollector()
        self.registry.register(self._engines)
        self._models = _ModelInfoCollector()
        self.registry.register(self._models)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)  # python_info
        build = Info(f"{NAMESPACE}_build", "The server's build (value 1; the labels say what).", registry=self.registry)
        build.info(build_info())
        self._refreshes: list[Refresh] = []

    def add_collector(self, collector: Collector, refresh: Refresh | None = None) -> None:
        """Report `collector`'s families at every scrape, merged with those of the same name. `refresh`, if given,
        is awaited before each scrape (with the other collectors', concurrently; one that has not finished in
        REFRESH_TIMEOUT_S is cancelled and its collector reports what it had); `collect()` must not block."""
        self.registry.register(collector)
        if refresh is not None:
            self._refreshes.append(refresh)

    def watch(self, deployment: str, get_status: Callable[[], Mapping[str, Any] | None]) -> None:
        """Report the engine gauges of `get_status()` (a `ChatBackend.status()`: `running`, `waiting`,
        `kv_cache_usage`, ... where it has them) at scrapes; None: nothing to report now."""
        self._engines.backends[deployment] = get_status

    def watch_all(self, statuses: StatusSource, models: ModelSource | None = None) -> None:
        """Like `watch`, for a changing set of deployments: `statuses()` maps each to its status at scrape time;
        `models()` gives each one's `llamafoundry_model_info` labels."""
        self._engines.sources.append(statuses)
        if models is not None:
            self._models.sources.append(models)

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

    def outcomes(self, deployment: str, finish_reasons: Iterable[str], blocks: Iterable[tuple[str, str]]) -> None:
        """One finished request's choices' finish reasons, and what the content filter blocked in it (category,
        direction)."""
        for reason in finish_reasons:
            self.finish_reasons.labels(deployment, reason).inc()
        for category, direction in blocks:
            self.content_filter_blocks.labels(deployment, category, direction).inc()

    def rejected(self, deployment: str, limit: str) -> None:
        self.rejections.labels(deployment, limit).inc()

    async def refresh(self) -> None:
        """Run the collectors' refreshes, concurrently, each for REFRESH_TIMEOUT_S at most."""
        results = await asyncio.gather(
            *(asyncio.wait_for(refresh(), REFRESH_TIMEOUT_S) for refresh in self._refreshes), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("a metrics collector could not refresh: %r", result)

    def exposition(self) -> bytes:
        return generate_latest(_Merged(self.registry))

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics."""
        await self.refresh()
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)


def build_info() -> dict[str, str]:
    """The labels of `llamafoundry_build_info`: this package's version, llama-cpp-python's, the CPU features its
    llama.cpp was built with (from the install's build record; "unknown" without one) and Python's version."""
    try:
        llama_version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        llama_version = "none"
    plan = (read_record(Path(sys.prefix)) or {}).get("plan")
    features = plan.get("features") if isinstance(plan, dict) else None
    return {
        "version": __version__,
        "llama_cpp_python": llama_version,
        "cpu_build": ",".join(sorted(features)) if features else "unknown",
        "python": ".".join(map(str, sys.version_info[:3])),
    }
