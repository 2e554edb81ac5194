"""Every chat request is metered once, with its deployment, key id, tokens, status, latency and filtered flag;
the usage report reads them back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamafoundry.api.usage import usage_router
from llamafoundry.errors import QueueFullError
from llamafoundry.platform.metering import query_usage
from llamafoundry.platform.ratelimit import RateLimits
from llamafoundry.platform.usage import Pricing
from tests.api.accounting_fixtures import LimitedApp, limited_app
from tests.api.conftest import API_KEY, MODEL_NAME


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LimitedApp]:
    prices = {MODEL_NAME: Pricing("serverless", input_per_1k=1.0, output_per_1k=2.0)}
    for running in limited_app(tmp_path, RateLimits(tokens_per_minute=10_000, requests_per_minute=12)):
        running.client.app.include_router(usage_router(running.accounting, lambda project=None: prices))  # type: ignore[attr-defined]
        yield running


def records(app: LimitedApp) -> list:
    app.client.portal.call(app.accounting.meter.flush)  # type: ignore[union-attr]
    return query_usage(app.store.engine)


def test_each_request_is_recorded_once_with_what_it_used(app: LimitedApp) -> None:
    ok = app.chat()
    streamed = app.chat(stream=True)
    app.clock.now += 1
    refused = app.chat()
    invalid = app.chat(temperature=9)
    unauthorized = app.client.post("/chat/completions", json={"messages": []}, headers={"api-key": "wrong"})
    assert [r.status_code for r in (ok, streamed, refused, invalid, unauthorized)] == [200, 200, 429, 400, 401]
    found = records(app)
    assert [r.status for r in found] == [200, 200, 429, 400]  # the 401 is not metered
    assert [r.request_id for r in found] == [
        response.headers["x-request-id"] for response in (ok, streamed, refused, invalid)
    ]
    assert [(r.prompt_tokens, r.completion_tokens) for r in found] == [(7, 5), (7, 5), (0, 0), (0, 0)]
    assert [r.is_stream for r in found] == [False, True, False, False]
    assert all(r.deployment == MODEL_NAME and r.key_id == "default" and r.latency_ms > 0 for r in found)
    assert found[1].time_to_first_token_ms is not None
    assert not any(r.is_filtered for r in found)


def test_engine_errors_are_recorded_as_errors(app: LimitedApp) -> None:
    app.service.error = QueueFullError("The server is busy.")
    assert app.chat().status_code == 429
    (record,) = records(app)
    assert record.status == 429 and record.total_tokens == 0


def test_a_filtered_completion_is_flagged(app: LimitedApp) -> None:
    original = app.service._deltas

    def filtered(request):  # type: ignore[no-untyped-def]
        updates = original(request)
        updates[-1].deltas[0].finish_reason = "content_filter"
        return updates

    app.service._deltas = filtered  # type: ignore[method-assign]
    app.chat(stream=True)
    (record,) = records(app)
    assert record.is_filtered


def test_the_usage_report_over_http(app: LimitedApp) -> None:
    for _ in range(2):
        assert app.chat().status_code == 200
    body = app.client.get("/management/usage").json()
    assert body["by"] is None and len(body["data"]) == 1
    row = body["data"][0]
    assert (row["deployment"], row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (
        MODEL_NAME,
        2,
        14,
        10,
    )
    assert row["cost_usd"] == pytest.approx(14 / 1000 * 1.0 + 10 / 1000 * 2.0)
    assert body["total"]["requests"] == 2
    csv_text = app.client.get("/management/usage", params={"format": "csv", "by": "hour"}).text
    assert csv_text.splitlines()[0].startswith("deployment,period,requests")
    assert len(csv_text.splitlines()) == 3  # header, one hour, total
    bad = app.client.get("/management/usage", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_is_counted_before_its_client_has_the_last_byte(app: LimitedApp, stream: bool) -> None:
    """A client that reads the usage report or /metrics right after an answer must find that answer in it.
    Counting it only once the app's call had returned left a window where the next request overtook it."""
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": stream}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/chat/completions", "raw_path": b"/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"api-key", API_KEY.encode()),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    meter, seen_at_the_end, requests = app.accounting.meter, [], [{"type": "http.request", "body": body}]
    assert meter is not None

    async def receive() -> dict:
        if not requests:
            await asyncio.Event().wait()  # the client stays connected
        return requests.pop()

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            seen_at_the_end.append(meter.num_pending)

    app.client.portal.call(app.client.app, scope, receive, send)  # type: ignore[attr-defined]
    assert seen_at_the_end == [1]
    (record,) = records(app)
    assert record.status == 200 and record.is_stream == stream and record.completion_tokens > 0
