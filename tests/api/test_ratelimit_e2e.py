"""Rate limits and metering end to end: real `llamafoundry serve` processes on the tiny model, bounded load from
loopback clients, and the three counts that must agree: the client's, the meter's and /metrics'.

Loads are bounded in time and count and only ever go to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llamafoundry.cli import build_parser, main
from llamafoundry.platform.metering import UsageRecord, query_usage
from llamafoundry.platform.store import Store
from tests.api.conftest import MODEL_NAME, Server, start_server, stop_server
from tests.platform.redis_server import free_port, running_redis

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
MAX_REQUESTS_PER_WORKER = 150


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)
    tokens: int = 0  # usage.total_tokens of the 200s
    missing_headers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            self.request_ids.append(response.headers["x-request-id"])
            if response.status_code == 200:
                self.tokens += response.json()["usage"]["total_tokens"]
            if "x-ratelimit-remaining-requests" not in response.headers:
                self.missing_headers += 1


def hammer(urls: list[str], key: str, seconds: float, workers: int, max_tokens: int) -> Tally:
    """`workers` loopback clients sending chat requests round-robin over `urls` for `seconds` (bounded)."""
    tally = Tally()
    deadline = time.monotonic() + seconds

    def work(worker: int) -> None:
        with httpx.Client(timeout=60, headers={"api-key": key}) as client:
            for i in range(MAX_REQUESTS_PER_WORKER):
                if time.monotonic() >= deadline:
                    return
                url = urls[(worker + i) % len(urls)]
                body = {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0}
                tally.add(client.post(f"{url}/chat/completions", json=body))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))
    return tally


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metered(data_dir: Path) -> list[UsageRecord]:
    store = Store.open(data_dir)
    try:
        return query_usage(store.engine)
    finally:
        store.close()


def without_content_safety() -> list[str]:
    """Serve flags that turn the content filter off, where `serve` has one: these tests count requests and
    tokens, and the random-weight model's output must not be cut short by the filter."""
    _, unknown = build_parser().parse_known_args(["serve", "--content-safety", "off"])
    return [] if unknown else ["--content-safety", "off"]


@pytest.fixture
def limited_server(tiny_model_path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    (tmp_path / "data").mkdir()
    args = ["--ctx-size", "256", "--parallel", "4", "--data-dir", str(tmp_path / "data"), *without_content_safety(),
            *request.param]  # fmt: skip
    server = start_server(tiny_model_path, tmp_path, *args)
    yield server
    stop_server(server)


def check_counts_agree(server: Server, tally: Tally, data_dir: Path) -> list[UsageRecord]:
    """Client, /metrics and meter saw the same requests, each once."""
    found = scrape(server)
    label = (("deployment", MODEL_NAME),)
    for status, count in tally.statuses.items():
        assert found[("llamafoundry_requests_total", (*label, ("status", str(status))))] == count
    for gauge in ("llamafoundry_queue_depth", "llamafoundry_requests_running", "llamafoundry_kv_cache_usage_ratio"):
        assert 0 <= found[(gauge, label)] <= 64  # read from the engine at scrape time
    rejections = sum(v for (name, _), v in found.items() if name == "llamafoundry_rate_limit_rejections_total")
    assert rejections == tally.statuses[429]
    metric_tokens = sum(
        found[("llamafoundry_tokens_total", (*label, ("kind", kind)))] for kind in ("prompt", "completion")
    )
    stop_server(server)  # flushes the meter
    records = metered(data_dir)
    assert sorted(r.request_id for r in records) == sorted(tally.request_ids)  # none lost, none twice
    assert Counter(r.status for r in records) == tally.statuses
    assert sum(r.total_tokens for r in records) == tally.tokens == metric_tokens
    assert tally.missing_headers == 0
    return records


@pytest.mark.parametrize("limited_server", [["--rpm", "60", "--tpm", "100000"]], indirect=True)
def test_requests_per_minute_under_load(limited_server: Server, tmp_path: Path) -> None:
    # 60/min is 10 per 10 s: in an 6-second burst exactly 10 requests get through, whatever the load
    tally = hammer([limited_server.url], limited_server.key, seconds=6, workers=6, max_tokens=4)
    assert tally.statuses[200] == 10 and tally.statuses[429] > 20
    assert set(tally.statuses) == {200, 429}
    check_counts_agree(limited_server, tally, tmp_path / "data")


@pytest.mark.parametrize("limited_server", [["--rpm", "100000", "--tpm", "1200"]], indirect=True)
def test_tokens_per_minute_under_load(limited_server: Server, tmp_path: Path) -> None:
    max_tokens = 16
    tally = hammer([limited_server.url], limited_server.key, seconds=8, workers=6, max_tokens=max_tokens)
    assert tally.statuses[429] > 0
    records = check_counts_agree(limited_server, tally, tmp_path / "data")
    admitted = [r for r in records if r.status == 200]
    # reservations are never smaller than what requests use, so the real usage stays within the minute's limit,
    # and the limiter let through nearly all of it (at most one more reservation could not fit)
    reservation = admitted[0].prompt_tokens + max_tokens
    assert 1200 - 2 * reservation <= sum(r.total_tokens for r in admitted) <= 1200


@pytest.mark.parametrize("limited_server", [[]], indirect=True)
def test_an_aborted_stream_is_metered_with_the_tokens_so_far(limited_server: Server, tmp_path: Path) -> None:
    body = {"messages": MESSAGES, "max_tokens": 200, "stream": True, "temperature": 1.0}
    request_id = ""
    with httpx.Client(timeout=60, headers={"api-key": limited_server.key}) as client:
        with client.stream("POST", f"{limited_server.url}/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert int(response.headers["x-ratelimit-remaining-requests"]) == 999  # serverless defaults
            request_id = response.headers["x-request-id"]
            for number, _ in enumerate(response.iter_lines()):
                if number >= 8:
                    break  # leave mid-stream
    time.sleep(1.0)
    stop_server(limited_server)
    (record,) = metered(tmp_path / "data")
    assert record.request_id == request_id and record.status == 499 and record.is_stream
    assert 0 < record.completion_tokens < 200 and record.prompt_tokens > 0
    assert record.time_to_first_token_ms is not None


def test_two_gateways_share_one_limit_through_redis(tiny_model_path: Path, tmp_path: Path) -> None:
    with running_redis(tmp_path) as redis_url:
        common = ["--ctx-size", "256", "--parallel", "2", "--rpm", "60", "--redis-url", redis_url,
                  *without_content_safety()]  # fmt: skip
        servers = [start_server(tiny_model_path, tmp_path, *common, "--data-dir", str(tmp_path / f"d{i}"), "--create")
                   for i in range(2)]  # fmt: skip
        try:
            tally = hammer([s.url for s in servers], servers[0].key, seconds=6, workers=4, max_tokens=4)
            # one limit of 10 per 10 s for both gateways together, not 10 each
            assert tally.statuses[200] == 10 and tally.statuses[429] > 10
            per_gateway = [scrape(s) for s in servers]
            label = ("llamafoundry_requests_total", (("deployment", MODEL_NAME), ("status", "200")))
            assert all(found.get(label, 0) > 0 for found in per_gateway)  # both admitted some
            assert sum(found.get(label, 0) for found in per_gateway) == 10
        finally:
            for server in servers:
                stop_server(server)
        records = [r for i in range(2) for r in metered(tmp_path / f"d{i}")]
        assert len(records) == sum(tally.statuses.values())
        assert Counter(r.status for r in records) == tally.statuses


def test_a_redis_outage_is_a_503_to_retry_and_ends_when_redis_is_back(tiny_model_path: Path, tmp_path: Path) -> None:
    """Every request was a 500 (a traceback each) while Redis was down, and the first one after it came back too."""
    port = free_port()
    with running_redis(tmp_path, port) as redis_url:
        server = start_server(tiny_model_path, tmp_path, "--ctx-size", "256", "--redis-url", redis_url,
                              *without_content_safety())  # fmt: skip
    try:
        body = {"messages": MESSAGES, "max_tokens": 2}
        down = httpx.post(f"{server.url}/chat/completions", json=body, headers={"api-key": server.key}, timeout=60)
        assert down.status_code == 503 and down.headers["retry-after"] == "2", down.text
        assert "rate-limit store is unreachable" in down.json()["error"]["message"]
        with running_redis(tmp_path, port):
            back = httpx.post(f"{server.url}/chat/completions", json=body, headers={"api-key": server.key}, timeout=60)
            assert back.status_code == 200, back.text
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()


def cli_json(*argv: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return json.loads(out.getvalue())


def test_a_store_deployment_is_limited_by_its_own_rpm_and_reported(tiny_model_path: Path, tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data"), "--create"]
    model = ["--model", "Meta-Llama-3.1-8B-Instruct", "--weights", str(tiny_model_path)]
    created = cli_json("deploy", "create", "chat", *model, "--rpm", "6", *data)  # one request per 10 s
    admin_key = cli_json("deploy", "admin-key", "--regenerate", *data)["admin_key"]
    server = start_server(tiny_model_path, tmp_path, "--ctx-size", "256", *data, *without_content_safety())
    try:
        url = f"{server.url}/deployments/chat/chat/completions"
        headers = {"api-key": created["secondary_key"]}
        body = {"messages": MESSAGES, "max_tokens": 4}
        deadline, num_unavailable = time.monotonic() + 90, 0
        while (first := httpx.post(url, json=body, headers=headers, timeout=60)).status_code == 503:
            assert time.monotonic() < deadline, "the deployment's replica did not start"
            num_unavailable += 1  # metered as errors, not counted against the limit
            time.sleep(0.5)
        assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "6"
        second = httpx.post(url, json=body, headers=headers, timeout=60)
        assert second.status_code == 429 and "Try again in" in second.json()["error"]["message"]
        # the server's own model has its own (default) limits
        own = httpx.post(f"{server.url}/chat/completions", json=body, headers={"api-key": server.key}, timeout=60)
        assert own.status_code == 200 and own.headers["x-ratelimit-limit-requests"] == "1000"
        assert httpx.get(f"{server.url}/management/usage", timeout=10).status_code == 401  # admin key only
        report = httpx.get(f"{server.url}/management/usage", params={"deployment": "chat"},
                           headers={"api-key": admin_key}, timeout=10).json()  # fmt: skip
        (row,) = report["data"]
        expected = ("chat", 2 + num_unavailable, 1, 1 + num_unavailable)
        assert (row["deployment"], row["requests"], row["throttled"], row["errors"]) == expected
        assert row["cost_usd"] > 0  # the catalog's per-token prices
    finally:
        stop_server(server)
    records = [r for r in metered(tmp_path / "data") if r.deployment == "chat"]
    (key_id,) = {r.key_id for r in records}  # the key's id, never the key
    assert key_id and created["secondary_key"] not in key_id and created["primary_key"] not in key_id
    # each record keeps its cost: deleting the deployment (or re-creating it with other prices) keeps the report's
    assert sum(r.cost_usd or 0.0 for r in records) == pytest.approx(row["cost_usd"])
    assert main(["deploy", "delete", "chat", *data]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["usage", "--deployment", "chat", "--format", "json", *data]) == 0
    assert json.loads(out.getvalue())["total"]["cost_usd"] == row["cost_usd"]
