"""The gateway's `/metrics` for its deployments: each local deployment's replicas' own series, scraped and
relabelled, beside the deployments' model info.

A replica is a `llamafoundry serve --replica` process on a loopback port whose `/metrics` labels its series with
the catalog model's name (it knows nothing of deployments). Before each scrape of the gateway, every replica's
`/metrics` is read, concurrently and for SCRAPE_TIMEOUT_S at most, parsed with prometheus-client's parser, and its
engine and process series are re-exported with `deployment="<name>"` and `replica="<index>"`: the same names and
help as the bare route's series, so one dashboard serves both. What the gateway counts itself for the deployment
(requests, tokens, latencies, finish reasons: every request passes through it) is left out, or it would be counted
twice. A replica that does not answer in time is reported down (`llamafoundry_replica_up` 0) and its series are
left out of that scrape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from llamafoundry.api.metrics import NAMESPACE, Metrics
from llamafoundry.platform.gateway import Gateway, Target

SCRAPE_TIMEOUT_S = 1.0
# Families the gateway observes itself for every request it forwards, and its own info series.
GATEWAY_COUNTED = frozenset(
    f"{NAMESPACE}_{name}"
    for name in ("requests", "tokens", "rate_limit_rejections", "request_duration_seconds",
                 "time_to_first_token_seconds", "time_per_output_token_seconds", "finish_reasons",
                 "content_filter_blocks", "build", "build_info", "model_info", "replica_up", "replica_restarts")
)  # fmt: skip


@dataclass(frozen=True)
class ReplicaView:
    """One replica as its deployment's status reports it."""

    deployment: str
    index: int
    url: str
    is_healthy: bool
    num_restarts: int


class ReplicaScraper(Collector):
    """Re-exports the series of the gateway's replicas (`refresh()` fetches them, `collect()` reports them), and
    `llamafoundry_replica_up` / `llamafoundry_replica_restarts_total` by deployment and replica."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._scraped: list[tuple[ReplicaView, list[Metric] | None]] = []

    async def refresh(self) -> None:
        views = replicas_of(self.gateway)
        if not views:
            self._scraped = []
            return
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as http:
            families = await asyncio.gather(*(_scrape(http, view) for view in views))
        self._scraped = list(zip(views, families, strict=True))

    def collect(self) -> Iterator[Metric]:
        labels = ["deployment", "replica"]
        up = GaugeMetricFamily(
            f"{NAMESPACE}_replica_up",
            "Whether a local deployment's replica is serving and answered this scrape (1) or not (0).", labels=labels,
        )  # fmt: skip
        restarts = CounterMetricFamily(
            f"{NAMESPACE}_replica_restarts",
            "Times a local deployment's replica exited and was started again.", labels=labels,
        )  # fmt: skip
        relabelled: dict[str, Metric] = {}
        for view, families in self._scraped:
            replica = [view.deployment, str(view.index)]
            up.add_metric(replica, 1.0 if view.is_healthy and families is not None else 0.0)
            restarts.add_metric(replica, float(view.num_restarts))
            for family in families or []:
                _relabel_into(relabelled, family, view)
        yield up
        yield restarts
        yield from relabelled.values()


def replicas_of(gateway: Gateway) -> list[ReplicaView]:
    """The replicas of the deployments the gateway serves now (from each one's `status()["replicas"]`)."""
    views = []
    for target in list(gateway.targets.values()):
        for replica in target.service.status().get("replicas") or []:
            views.append(ReplicaView(target.name, int(replica["index"]), str(replica["url"]),
                                     bool(replica["healthy"]), int(replica.get("restarts") or 0)))  # fmt: skip
    return views


async def _scrape(http: httpx.AsyncClient, view: ReplicaView) -> list[Metric] | None:
    """The replica's families, or None when it did not answer in time (or answered something unreadable)."""
    try:
        response = await http.get(f"{view.url}/metrics")
        response.raise_for_status()
        return list(text_string_to_metric_families(response.text))
    except (httpx.HTTPError, ValueError):
        return None


def _relabel_into(relabelled: dict[str, Metric], family: Metric, view: ReplicaView) -> None:
    if family.name.removesuffix("_created") in GATEWAY_COUNTED:  # the text parser gives `_created` its own family
        return
    found = relabelled.get(family.name)
    if found is None:
        found = relabelled[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
    for sample in family.samples:
        labels = {**sample.labels, "deployment": view.deployment, "replica": str(view.index)}
        found.samples.append(sample._replace(labels=labels))


def watch_gateway(metrics: Metrics, gateway: Gateway) -> None:
    """Report the gateway's deployments at `metrics`' scrapes: their replicas' series, their engines' where
    they run in this process, and the model info of every target."""
    scraper = ReplicaScraper(gateway)
    metrics.add_collector(scraper, scraper.refresh)
    metrics.watch_all(
        lambda: {t.name: t.service.status() for t in list(gateway.targets.values())},
        lambda: [model_info(t) for t in gateway.all_targets()],
    )


def model_info(target: Target) -> Mapping[str, str]:
    """The labels of a target's `llamafoundry_model_info`."""
    service: Any = target.service
    deployment = target.deployment
    return {
        "deployment": target.name,
        "model": deployment.model if deployment is not None else str(getattr(service, "model_name", "")),
        "provider": str(getattr(service, "model_provider", "")),
        "context": str(getattr(service, "max_context", "")),
        "type": deployment.type if deployment is not None else "server",
        "instances": str(deployment.instances) if deployment is not None else "1",
        "upstream": "yes" if deployment is not None and deployment.upstream_url else "no",
    }
