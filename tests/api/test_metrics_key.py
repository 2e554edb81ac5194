"""`serve --metrics-key`: /metrics behind a key of its own, for operators who expose the port."""

from __future__ import annotations

import httpx

from tests.api.conftest import Server, module_server

METRICS_KEY = "scrape-0123456789abcdef0123456789"

keyed_server = module_server("--metrics-key", METRICS_KEY)


def test_metrics_answer_only_with_their_key(keyed_server: Server) -> None:
    url = f"{keyed_server.url}/metrics"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"api-key": keyed_server.key}, timeout=30).status_code == 401  # the API's key
    refused = httpx.get(url, headers={"authorization": "Bearer wrong"}, timeout=30)
    assert refused.status_code == 401 and refused.json()["statusCode"] == 401  # the API's own 401 body
    for headers in ({"authorization": f"Bearer {METRICS_KEY}"}, {"api-key": METRICS_KEY}):
        scraped = httpx.get(url, headers=headers, timeout=30)
        assert scraped.status_code == 200 and "llamafoundry_requests_running" in scraped.text, scraped.text[:200]
    assert METRICS_KEY not in keyed_server.log()
