"""The HTTP layer over a scripted fake service: routes, auth, headers, error mapping, response and stream shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.config import EngineSettings, ServeSettings
from llamafoundry.errors import (
    EngineError,
    EngineUnavailableError,
    GenerationError,
    InvalidSamplingParams,
    PromptTooLongError,
    QueueFullError,
    RequestTooLargeError,
)
from llamafoundry.service.chat_format import ChatFormatError
from tests.api.conftest import API_KEY, MODEL_NAME
from tests.api.fakes import WORDS, FakeChatService

BODY = {"messages": [{"role": "user", "content": "Hi"}]}
AUTH_BODY = {
    "statusCode": 401,
    "message": "Auth token validation failed. Please provide a valid key or a valid AAD token",
}


def events(text: str) -> list[Any]:
    assert text.endswith("\n\n") and "\r" not in text
    payloads = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block
        payloads.append(block[len("data: ") :])
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def assert_envelope(response: Any, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["status"] == status
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


# ---- routes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/chat/completions",
        "/models/chat/completions",
        f"/deployments/{MODEL_NAME}/chat/completions",
        "/deployments/TINY-LLAMA/chat/completions",
        "/v1/chat/completions",
    ],
)
def test_chat_routes(client: TestClient, path: str) -> None:
    response = client.post(path, json=BODY)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "".join(WORDS)


@pytest.mark.parametrize("path", ["/info", "/models/info", f"/deployments/{MODEL_NAME}/info"])
def test_info_routes(client: TestClient, path: str) -> None:
    response = client.get(path, params={"api-version": "2024-05-01-preview"})
    assert response.json() == {
        "model_name": MODEL_NAME,
        "model_type": "chat-completions",
        "model_provider_name": "Meta",
    }


def test_a_trailing_slash_is_the_same_route_not_an_empty_redirect(client: TestClient) -> None:
    for path in ("/chat/completions/", f"/deployments/{MODEL_NAME}/chat/completions/", "/v1/chat/completions/"):
        response = client.post(path, json=BODY, follow_redirects=False)
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "".join(WORDS)
    assert client.get("/info/", params={"api-version": "2024-05-01-preview"}).json()["model_name"] == MODEL_NAME
    assert_envelope(client.get("/nothing/here/"), 404, "NotFound")


def test_unknown_deployment_is_404(client: TestClient) -> None:
    assert_envelope(client.post("/deployments/other/chat/completions", json=BODY), 404, "NotFound")


def test_an_unknown_deployment_is_a_401_without_a_key_that_opens_anything(client: TestClient) -> None:
    """Names could be probed: an unknown one answered 404 to anybody, a known one 401."""
    for headers in ({"api-key": "wrong"}, {"api-key": ""}):
        unknown = client.post("/deployments/other/chat/completions", json=BODY, headers=headers)
        known = client.post(f"/deployments/{MODEL_NAME}/chat/completions", json=BODY, headers=headers)
        assert unknown.status_code == known.status_code == 401


@pytest.mark.parametrize("path", ["/embeddings", "/models/embeddings", "/images/embeddings"])
def test_embeddings_are_not_found(client: TestClient, path: str) -> None:
    response = client.post(path, json={"input": ["a"]})
    error = assert_envelope(response, 404, "NotFound")
    assert "not found" in error["message"].lower()
    assert response.headers["ms-azureml-model-error-statuscode"] == "404"


def test_openai_models(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [MODEL_NAME]
    assert client.get(f"/v1/models/{MODEL_NAME}").json()["id"] == MODEL_NAME
    assert_envelope(client.get("/v1/models/gpt-4"), 404)


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert_envelope(client.get("/nothing/here"), 404, "NotFound")
    response = client.get("/chat/completions")
    assert_envelope(response, 405, "MethodNotAllowed")
    assert response.headers["allow"] == "POST"


# ---- api-version -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2024-04-01-preview", "2024-05-01-preview", "2024-08-01-preview", "2025-04-01"])
def test_known_api_versions(client: TestClient, version: str) -> None:
    assert client.post("/chat/completions", params={"api-version": version}, json=BODY).status_code == 200


@pytest.mark.parametrize("path", ["/chat/completions", "/info"])
def test_unknown_api_version_is_400(client: TestClient, path: str) -> None:
    response = client.request(
        "POST" if "chat" in path else "GET", path, params={"api-version": "2023-01-01"}, json=BODY
    )
    assert_envelope(response, 400, "BadRequest", "api-version")


# ---- auth --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{"api-key": ""}, {"api-key": "wrong"}, {"api-key": "", "authorization": "Bearer nope"}]
)
def test_auth_failure_is_the_maas_401(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in [("POST", "/chat/completions"), ("GET", "/info"), ("POST", "/v1/chat/completions")]:
        response = client.request(method, path, json=BODY, headers=headers)
        assert response.status_code == 401
        assert response.content == json.dumps(AUTH_BODY).encode()
        assert response.headers["x-ms-error-reason"] and "retry-after" not in response.headers


@pytest.mark.parametrize("headers", [{"authorization": f"Bearer {API_KEY}"}, {"authorization": API_KEY}])
def test_authorization_header_forms(client: TestClient, headers: dict[str, str]) -> None:
    assert client.post("/chat/completions", json=BODY, headers={"api-key": "", **headers}).status_code == 200


def test_health_needs_no_key(client: TestClient) -> None:
    response = client.get("/health", headers={"api-key": ""})
    assert response.status_code == 200 and response.json()["status"] == "ready"


# ---- headers -----------------------------------------------------------------------------------------


def test_request_ids(client: TestClient) -> None:
    response = client.post("/chat/completions", json=BODY, headers={"x-ms-client-request-id": "abc-123"})
    assert response.headers["x-ms-client-request-id"] == "abc-123"
    assert len(response.headers["x-request-id"]) == 36
    other = client.post("/chat/completions", json={})
    assert other.headers["x-request-id"] != response.headers["x-request-id"]
    assert "x-ms-client-request-id" not in other.headers and "retry-after" not in other.headers


def test_streaming_is_chosen_by_the_body_not_accept(client: TestClient) -> None:
    response = client.post("/chat/completions", json={**BODY, "stream": True}, headers={"accept": "application/json"})
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    plain = client.post("/chat/completions", json=BODY, headers={"accept": "text/event-stream"})
    assert plain.headers["content-type"] == "application/json"


# ---- bodies ------------------------------------------------------------------------------------------


def test_completion_shape(client: TestClient) -> None:
    body = client.post("/chat/completions", json=BODY).json()
    assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
    assert isinstance(body["created"], int) and body["model"] == MODEL_NAME and body["object"] == "chat.completion"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(WORDS), "tool_calls": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 7 + len(WORDS)}


def test_completion_with_n_and_logprobs(client: TestClient) -> None:
    body = {**BODY, "n": 2, "logprobs": True, "top_logprobs": 2}
    result = client.post("/chat/completions", json=body, headers={"extra-parameters": "pass-through"}).json()
    assert [c["index"] for c in result["choices"]] == [0, 1]
    content = result["choices"][1]["logprobs"]["content"]
    assert [t["token"] for t in content] == WORDS
    assert set(content[0]) == {"token", "logprob", "bytes", "top_logprobs"} and len(content[0]["top_logprobs"]) == 2
    assert set(content[0]["top_logprobs"][0]) == {"token", "logprob", "bytes"}


def test_canonical_stream(client: TestClient) -> None:
    chunks = events(client.post("/chat/completions", json={**BODY, "stream": True}).text)
    assert len({(c["id"], c["created"], c["model"], c["object"]) for c in chunks}) == 1
    assert all(len(c["choices"]) == 1 for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(
        "role" not in c["choices"][0]["delta"] and isinstance(c["choices"][0]["delta"]["content"], str)
        for c in chunks[1:]
    )
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "".join(WORDS)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * len(WORDS) + ["stop"]
    assert ["usage" in c for c in chunks] == [False] * len(WORDS) + [True]
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def test_stream_with_several_choices_has_one_choice_per_chunk(client: TestClient) -> None:
    body = {**BODY, "stream": True, "n": 3, "logprobs": 1}
    chunks = events(client.post("/chat/completions", json=body, headers={"extra-parameters": "pass-through"}).text)
    assert all(len(c["choices"]) == 1 for c in chunks)
    for index in range(3):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(m["delta"]["content"] for m in mine) == "".join(WORDS)
        assert mine[-1]["finish_reason"] == "stop"
        assert [t["token"] for m in mine[1:] for t in m["logprobs"]["content"]] == WORDS
    assert "usage" in chunks[-1] and sum("usage" in c for c in chunks) == 1


def test_stream_failure_after_first_byte_ends_with_an_error_chunk(
    client: TestClient, fake_service: FakeChatService
) -> None:
    fake_service.fail_after = 2
    text = client.post("/chat/completions", json={**BODY, "stream": True}).text
    last = json.loads(text.strip().split("\n\n")[-1][len("data: ") :])
    assert "[DONE]" not in text and last["choices"] == [] and last["error"]["code"] == "InternalServerError"
    assert fake_service.streams[0].is_aborted


def test_a_request_whose_generation_failed_gets_an_error_event_that_names_the_cause(
    client: TestClient, fake_service: FakeChatService
) -> None:
    fake_service.fail_after = 2
    fake_service.stream_failure = GenerationError("Generating this request's output failed (IndexError: x).")
    text = client.post("/chat/completions", json={**BODY, "stream": True}).text
    last = json.loads(text.strip().split("\n\n")[-1][len("data: ") :])
    assert "[DONE]" not in text and last["choices"] == []
    assert last["error"]["code"] == "generation_failed" and last["error"]["status"] == 500
    assert "(IndexError: x)" in last["error"]["message"]


# ---- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code", "param"),
    [
        (InvalidSamplingParams("top_p", "top_p is wrong."), 400, "invalid_value", "top_p"),
        (ChatFormatError("Roles must alternate."), 400, "invalid_messages", "messages"),
        (PromptTooLongError("The prompt is too long."), 400, "context_length_exceeded", "messages"),
        (PromptTooLongError("Too many tokens.", param="max_tokens"), 400, "context_length_exceeded", "max_tokens"),
        (RequestTooLargeError("Too many."), 400, "too_many_sequences", "n"),
        (EngineError("The prompt is empty.", param="messages"), 400, "engine_error", "messages"),
        (QueueFullError("Busy."), 429, "queue_full", None),
        (EngineUnavailableError("Loading."), 503, "engine_unavailable", None),
        (GenerationError("Generating this request's output failed."), 500, "generation_failed", None),
        (RuntimeError("kaboom"), 500, "InternalServerError", None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_service_errors(
    client: TestClient,
    fake_service: FakeChatService,
    error: Exception,
    status: int,
    code: str,
    param: str | None,
    stream: bool,
) -> None:
    fake_service.error = error
    response = client.post("/chat/completions", json={**BODY, "stream": stream})
    body = assert_envelope(response, status, code, param)
    assert ("retry-after" in response.headers) == (status in (429, 503))
    assert "kaboom" not in response.text and "Traceback" not in body["message"]


def test_not_ready_is_503_with_retry_after(client: TestClient, fake_service: FakeChatService) -> None:
    fake_service.is_ready = False
    response = client.post("/chat/completions", json=BODY)
    assert_envelope(response, 503)
    assert response.headers["retry-after"] == "5"
    health = client.get("/health")
    assert health.status_code == 503 and health.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"not json"}, 400, "invalid_json"),
        ({"content": b""}, 400, "invalid_json"),
        ({"content": b"[1]"}, 400, "invalid_json"),
        # a lone surrogate reached the tokenizer and was a 500
        ({"content": b'{"messages": [{"role": "user", "content": "\\ud800 hi"}]}'}, 400, "invalid_json"),
        ({"content": b'{"messages": []}', "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"data": {"messages": "x"}}, 415, "unsupported_media_type"),  # form-encoded
        ({"json": {"messages": []}, "headers": {"extra-parameters": "sometimes"}}, 400, "invalid_extra_parameters"),
    ],
)
def test_malformed_requests(client: TestClient, kwargs: dict[str, Any], status: int, code: str) -> None:
    assert_envelope(client.post("/chat/completions", **kwargs), status, code)


def test_too_large_body_is_413(client: TestClient) -> None:
    big = {"messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    assert_envelope(client.post("/chat/completions", json=big), 413, "PayloadTooLarge")


# ---- lifecycle ---------------------------------------------------------------------------------------


def test_lifespan_starts_and_stops_the_service() -> None:
    service = FakeChatService()
    settings = ServeSettings(engine=EngineSettings(model_path="x.gguf"), model_name="m", api_key=API_KEY)
    started = []
    service.on_start = lambda: started.append(True)
    with TestClient(create_app(service, settings)) as test_client:
        assert test_client.get("/health").status_code == 200
        assert started == [True]
    assert service.num_stops == 1


def test_failed_load_keeps_health_at_503() -> None:
    service = FakeChatService(is_ready=False)

    def fail() -> None:
        raise RuntimeError("bad file")

    service.on_start = fail
    settings = ServeSettings(engine=EngineSettings(model_path="x.gguf"), model_name="m", api_key=API_KEY)
    with TestClient(create_app(service, settings)) as test_client:
        for _ in range(100):  # the load runs in a background task
            response = test_client.get("/health")
            if response.json()["error"]["code"] == "model_load_failed":
                break
        assert_envelope(response, 503, "model_load_failed")
        assert "retry-after" not in response.headers
