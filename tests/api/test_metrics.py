"""`/metrics`: Prometheus text with per-deployment requests, tokens, latency histograms and rejections."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from llamafoundry.api.metrics import Metrics
from llamafoundry.platform.ratelimit import RateLimits
from tests.api.accounting_fixtures import limited_app
from tests.api.conftest import MODEL_NAME


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_requests_tokens_and_rejections(tmp_path: Path) -> None:
    for app in limited_app(tmp_path, RateLimits(tokens_per_minute=10_000, requests_per_minute=6)):
        assert app.chat().status_code == 200
        assert app.chat(stream=True).status_code == 429  # one per 10 s at 6/min
        app.clock.now += 10
        assert app.chat(stream=True).status_code == 200
        response = app.client.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        d = (("deployment", MODEL_NAME),)
        assert found[("llamafoundry_requests_total", (*d, ("status", "200")))] == 2
        assert found[("llamafoundry_requests_total", (*d, ("status", "429")))] == 1
        assert found[("llamafoundry_tokens_total", (*d, ("kind", "prompt")))] == 14
        assert found[("llamafoundry_tokens_total", (*d, ("kind", "completion")))] == 10
        assert found[("llamafoundry_rate_limit_rejections_total", (*d, ("limit", "requests")))] == 1
        assert found[("llamafoundry_request_duration_seconds_count", d)] == 3
        assert found[("llamafoundry_time_to_first_token_seconds_count", d)] == 1  # the streamed one
        assert found[("llamafoundry_time_per_output_token_seconds_count", d)] == 1
        assert ("llamafoundry_queue_depth", d) not in found  # the fake service has no engine to read


def test_a_collector_registered_beside_has_its_families_merged_and_a_failing_refresh_spares_the_scrape() -> None:
    """The seam other collectors use (the replicas' series, an upstream pool's health): a family of a name the
    app reports too (`process_open_fds`) becomes one family, and a refresh that fails leaves the others' work."""
    metrics = Metrics()
    refreshed: list[str] = []

    class Pool(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            family = GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", labels=["upstream"])
            family.add_metric(["a"], 3.0)
            yield family

    async def fails() -> None:
        raise OSError("the pool's server is gone")

    async def works() -> None:
        refreshed.append("works")

    metrics.add_collector(Pool(), fails)
    metrics.add_collector(Pool(), works)
    asyncio.run(metrics.refresh())
    assert refreshed == ["works"]
    text = metrics.exposition().decode()
    families = [f for f in text_string_to_metric_families(text) if f.name == "process_open_fds"]
    assert len(families) == 1
    assert [s.labels for s in families[0].samples] == [{}, {"upstream": "a"}, {"upstream": "a"}]
