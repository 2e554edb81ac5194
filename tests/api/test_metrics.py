"""`/metrics`: Prometheus text with per-deployment requests, tokens, latency histograms and rejections."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

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
