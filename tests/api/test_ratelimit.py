"""Rate limits as a client sees them: 429 with Retry-After and the Azure body, `x-ratelimit-*` on every
response, reservations of prompt + max_tokens x candidates corrected to the real usage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamafoundry.errors import QueueFullError
from llamafoundry.platform.ratelimit import UNLIMITED, RateLimits
from tests.api.accounting_fixtures import LimitedApp, limited_app
from tests.api.conftest import MODEL_NAME
from tests.api.fakes import FakeChatService

PROMPT_TOKENS = 7  # what the fake service counts for any prompt
COMPLETION_TOKENS = 5  # the fake's five words per choice


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LimitedApp]:
    yield from limited_app(tmp_path, RateLimits(tokens_per_minute=1_000, requests_per_minute=12))


def remaining(response: object) -> tuple[int, int]:
    headers = response.headers  # type: ignore[attr-defined]
    return int(headers["x-ratelimit-remaining-requests"]), int(headers["x-ratelimit-remaining-tokens"])


def test_every_chat_response_carries_the_remaining_counts(app: LimitedApp) -> None:
    ok = app.chat()
    assert ok.status_code == 200
    # admitted with 7 + 100 reserved; the header says what was left at admission
    assert remaining(ok) == (11, 1_000 - PROMPT_TOKENS - 100)
    assert ok.headers["x-ratelimit-limit-requests"] == "12" and ok.headers["x-ratelimit-limit-tokens"] == "1000"
    streamed = app.chat(stream=True)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    # the first request was settled to its real 12 tokens before the second was admitted
    assert remaining(streamed) == (10, 1_000 - 12 - PROMPT_TOKENS - 100)
    invalid = app.chat(temperature=5)
    assert invalid.status_code == 400
    assert remaining(invalid) == (10, 1_000 - 24)  # not admitted: a look at the counters, nothing counted


def test_over_the_request_limit_is_a_429_in_the_azure_shape(app: LimitedApp) -> None:
    assert [app.chat().status_code for _ in range(2)] == [200, 200]  # 12/min allows 2 per 10 s
    app.clock.now += 4.2
    refused = app.chat()
    assert refused.status_code == 429
    message = (
        "Rate limit is exceeded. Try again in 6 seconds. "
        "The deployment's call rate limit is 12 requests per minute, at most 2 in any 10 seconds."
    )
    assert refused.json() == {"error": {"code": "429", "message": message}}
    assert refused.headers["retry-after"] == "6" and refused.headers["retry-after-ms"] == "5800"
    assert remaining(refused) == (10, 1_000 - 24)
    app.clock.now += 5.8
    assert app.chat().status_code == 200


def test_tokens_reserve_max_tokens_for_every_candidate(app: LimitedApp) -> None:
    app.service.num_words = 1
    # n=3 (pass-through Llama extra) reserves 7 + 3 x 300 = 907 of 1,000
    first = app.client.post(
        "/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 300, "n": 3},
        headers={"extra-parameters": "pass-through"},
    )
    assert first.status_code == 200 and remaining(first)[1] == 1_000 - 907
    # settled to 7 + 3 x 1 = 10 tokens: a request reserving 907 fits again
    second = app.client.post(
        "/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 300, "n": 3},
        headers={"extra-parameters": "pass-through"},
    )
    assert second.status_code == 200 and remaining(second)[1] == 1_000 - 10 - 907


def test_a_reservation_that_does_not_fit_waits_for_the_window(tmp_path: Path) -> None:
    service = FakeChatService(model_name=MODEL_NAME, max_context=2048)
    for app in limited_app(tmp_path, RateLimits(tokens_per_minute=1_000, requests_per_minute=12), service):
        first = app.chat(max_tokens=600)
        assert first.status_code == 200
        refused = app.chat(max_tokens=990)  # 7 + 990 > 1,000 - 12
        assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
        assert refused.json()["error"]["message"] == (
            "Rate limit is exceeded. Try again in 60 seconds. "
            "The deployment's token rate limit is 1000 tokens per minute."
        )


def test_max_tokens_past_the_context_reserves_only_the_context(app: LimitedApp) -> None:
    """The model answers such a request with context_length_exceeded; the limiter must not first call it
    larger than the minute (it said "raise the deployment's limit" for max_tokens=10,000,000)."""
    response = app.chat(max_tokens=100_000)  # within the API's limit (131,072), past this context
    assert response.status_code == 200  # the fake model does not check its context
    assert remaining(response)[1] == 1_000 - 512  # 7 prompt + the 505 tokens left in its 512-token context


def test_without_max_tokens_the_rest_of_the_context_is_reserved(tmp_path: Path) -> None:
    service = FakeChatService(model_name=MODEL_NAME, max_context=512)
    for app in limited_app(tmp_path, RateLimits(tokens_per_minute=2_000, requests_per_minute=100), service):
        response = app.client.post("/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
        assert remaining(response)[1] == 2_000 - 512  # 7 prompt + 505 left in the context


def test_a_request_larger_than_the_minute_is_a_400_that_says_what_to_do(tmp_path: Path) -> None:
    for app in limited_app(tmp_path, RateLimits(tokens_per_minute=100, requests_per_minute=100)):
        response = app.chat(max_tokens=200)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "max_tokens" and "lower max_tokens" in error["message"]
        assert "retry-after" not in response.headers  # retrying cannot help


def test_a_full_engine_queue_is_a_429_with_retry_after(app: LimitedApp) -> None:
    app.service.error = QueueFullError("The server is busy: 64 requests are already waiting. Retry shortly.")
    response = app.chat()
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert remaining(response) == (11, 1_000 - PROMPT_TOKENS - 100)  # as admitted
    app.service.error = None
    # counted as a request, and its reservation released once it ended (it used no tokens)
    assert remaining(app.chat(temperature=5)) == (11, 1_000)


def test_an_unlimited_deployment_sends_no_limit_headers(tmp_path: Path) -> None:
    for app in limited_app(tmp_path, None):
        response = app.chat()
        assert response.status_code == 200 and "x-ratelimit-remaining-requests" not in response.headers


def test_a_limit_that_does_not_bind_has_no_headers(tmp_path: Path) -> None:
    """A managed deployment limited by requests only: no token counts (they used to read 4611686018427387904)."""
    for app in limited_app(tmp_path, RateLimits(tokens_per_minute=UNLIMITED, requests_per_minute=12)):
        response = app.chat()
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining-requests"] == "11"
        assert response.headers["x-ratelimit-limit-requests"] == "12"
        assert not [name for name in response.headers if name.endswith("-tokens")]
