"""Server health for the Usage page, from the Prometheus metrics that exist: the gateway's `/metrics` (every
deployment's request and token counters, the server's own model's engine gauges) and each replica's `/metrics`
(its engine's queue depth and running sequences). Tokens per second are the completion-token counters' growth
between two readings."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

QUEUE = "llamafoundry_queue_depth"
RUNNING = "llamafoundry_requests_running"
KV_CACHE = "llamafoundry_kv_cache_usage_ratio"
TOKENS = "llamafoundry_tokens_total"
REQUESTS = "llamafoundry_requests_total"
REPLICA_TIMEOUT_S = 1.0


@dataclass
class Health:
    """One deployment's (or the server's own model's) line in the health table."""

    name: str
    queue_depth: float | None = None
    running: float | None = None
    kv_cache: float | None = None
    completion_tokens: float = 0.0
    requests: float = 0.0
    tokens_per_s: float | None = None


@dataclass
class HealthReader:
    """Keeps the previous reading, to turn counters into rates."""

    previous: tuple[float, dict[str, float]] | None = None

    def read(self, gateway_metrics: str, replica_metrics: dict[str, list[str]], now: float | None = None
             ) -> list[Health]:  # fmt: skip
        """The health lines from the gateway's metrics text and each deployment's replicas' texts."""
        now = time.monotonic() if now is None else now
        lines: dict[str, Health] = {}
        for name, sample, value in _samples(gateway_metrics):
            line = lines.setdefault(name, Health(name))
            if sample == TOKENS:
                line.completion_tokens += value
            elif sample == REQUESTS:
                line.requests += value
            else:
                _gauge(line, sample, value)
        for name, texts in replica_metrics.items():
            line = lines.setdefault(name, Health(name))
            for text in texts:
                for _, sample, value in _samples(text):
                    if sample in (QUEUE, RUNNING):
                        _gauge(line, sample, value, add=True)
        totals = {name: line.completion_tokens for name, line in lines.items()}
        if self.previous is not None and now > self.previous[0]:
            elapsed = now - self.previous[0]
            for name, line in lines.items():
                before = self.previous[1].get(name)
                if before is not None:
                    line.tokens_per_s = max(0.0, line.completion_tokens - before) / elapsed
        self.previous = (now, totals)
        return sorted(lines.values(), key=lambda h: h.name)

    async def replica_texts(self, urls: dict[str, list[str]]) -> dict[str, list[str]]:
        """Each deployment's replicas' `/metrics` (a replica that does not answer in a second is left out)."""
        async with httpx.AsyncClient(timeout=REPLICA_TIMEOUT_S) as client:

            async def one(url: str) -> str:
                try:
                    response = await client.get(f"{url.rstrip('/')}/metrics")
                    return response.text if response.status_code == 200 else ""
                except httpx.HTTPError:
                    return ""

            found: dict[str, list[str]] = {}
            for name, replica_urls in urls.items():
                found[name] = list(await asyncio.gather(*(one(u) for u in replica_urls)))
            return found


def _samples(text: str) -> list[tuple[str, str, float]]:
    """(deployment, sample name, value) of the samples the health table uses; completion tokens only."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in (QUEUE, RUNNING, KV_CACHE, TOKENS, REQUESTS):
                continue
            if sample.name == TOKENS and sample.labels.get("kind") != "completion":
                continue
            found.append((sample.labels.get("deployment", ""), sample.name, float(sample.value)))
    return found


def _gauge(line: Health, sample: str, value: float, add: bool = False) -> None:
    attribute = {QUEUE: "queue_depth", RUNNING: "running", KV_CACHE: "kv_cache"}[sample]
    current = getattr(line, attribute)
    setattr(line, attribute, (current or 0.0) + value if add else value)
