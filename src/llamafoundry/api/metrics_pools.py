"""The `/metrics` series of `--upstream` pools: each server's health, requests in flight, and the requests it did
not accept that went on to another server. Read from the gateway's deployments' `status()["upstreams"]`
(`platform.upstream_pool`) at scrape time, by a collector of its own beside `api.metrics`'."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llamafoundry.api.metrics import NAMESPACE
from llamafoundry.platform.gateway import Gateway, serving


class UpstreamPoolCollector(Collector):
    """`llamafoundry_upstream_up`, `llamafoundry_upstream_in_flight` and `llamafoundry_upstream_retries`, labelled by
    deployment and upstream (its base URL)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["deployment", "upstream"]
        up = GaugeMetricFamily(
            f"{NAMESPACE}_upstream_up", "1 when the upstream server is healthy, else 0.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            f"{NAMESPACE}_upstream_in_flight",
            "Requests forwarded to the upstream server and not finished.",
            labels=labels,
        )
        retries = CounterMetricFamily(
            f"{NAMESPACE}_upstream_retries",
            "Requests the upstream server did not accept (no connection, closed before answering, 502, 503) that "
            "went on to another server of the pool.",
            labels=labels,
        )
        for name, upstreams in self._pools():
            for upstream in upstreams:
                key = [name, str(upstream["url"])]
                up.add_metric(key, 1.0 if upstream["up"] else 0.0)
                in_flight.add_metric(key, float(upstream["in_flight"]))
                retries.add_metric(key, float(upstream["retries"]))
        yield up
        yield in_flight
        yield retries

    def _pools(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        for name, target in list(self.gateway.targets.items()):
            upstreams = serving(target).service.status().get("upstreams")
            if upstreams:
                yield name, upstreams
