"""Property tests: malformed requests on every route always get a 4xx JSON error envelope, never a 500, and
the server keeps serving. Run in-process over a fake service (many examples) and against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.config import EngineSettings, ServeSettings
from llamafoundry.protocol.schemas import LLAMA_EXTRA_PARAMETERS, OPENAI_ROUTE_PARAMETERS, SPEC_PARAMETERS
from tests.api.conftest import API_KEY, MODEL_NAME, Server
from tests.api.fakes import FakeChatService

CHAT_PATHS = [
    "/chat/completions",
    "/models/chat/completions",
    f"/deployments/{MODEL_NAME}/chat/completions",
    "/v1/chat/completions",
    "/deployments/other/chat/completions",
    f"/openai/deployments/{MODEL_NAME}/chat/completions?api-version=2024-10-21",
    "/openai/v1/chat/completions",
    "/v1/responses",
]
GET_PATHS = ["/info", "/models/info", f"/deployments/{MODEL_NAME}/info", "/v1/models", f"/v1/models/{MODEL_NAME}"]
OTHER_PATHS = ["/embeddings", "/images/embeddings", "/models/embeddings", "/nope", "/v1/completions", "/health/x"]
VALID_MESSAGES = [{"role": "user", "content": "Hi"}]
ROLES = {"system", "developer", "user", "assistant", "tool"}
BOOL_WORDS = {"true", "false", "0", "1", "yes", "no", "on", "off", "t", "f", "y", "n"}

finite = {"allow_nan": False, "allow_infinity": False}
non_null_scalars = st.booleans() | st.integers() | st.floats(**finite) | st.text()
json_scalars = st.none() | non_null_scalars
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
not_a_number = (
    st.text().filter(lambda s: not _is_number(s))
    | st.lists(json_scalars, max_size=2)
    | st.dictionaries(st.text(max_size=4), json_scalars)
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def outside(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=high + 1e-4, **finite) | st.floats(max_value=low - 1e-4, **finite)


def not_in(words: set[str]) -> st.SearchStrategy[str]:
    return st.text().filter(lambda s: s.strip().lower() not in words)


bad_messages = (
    st.just([])
    | non_null_scalars
    | st.lists(json_scalars, min_size=1)
    | st.lists(
        st.fixed_dictionaries({"role": st.text().filter(lambda r: r not in ROLES)}, optional={"content": json_values}),
        min_size=1,
    )
)
# A value each field can never accept ("n" and "logprobs" are sent with extra-parameters: pass-through).
BAD_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "temperature": outside(0, 2) | not_a_number,
    "top_p": outside(0, 1),
    "presence_penalty": outside(-2, 2),
    "frequency_penalty": outside(-2, 2) | not_a_number,
    "max_tokens": st.integers(max_value=0) | st.floats(min_value=0.1, max_value=1e6).filter(lambda x: x != int(x)),
    "seed": st.text().filter(lambda s: not s.strip().lstrip("+-").isdigit()) | st.lists(st.integers(), min_size=1),
    "stop": st.integers() | st.lists(st.just(""), min_size=1) | st.lists(st.integers(), min_size=1),
    "stream": not_in(BOOL_WORDS),
    "messages": bad_messages,
    "tools": st.just([]) | non_null_scalars | st.lists(st.dictionaries(st.text(max_size=5), json_scalars), min_size=1),
    "tool_choice": not_in({"auto", "none", "required"}) | st.integers(),
    "response_format": non_null_scalars | st.fixed_dictionaries({"type": st.text().filter(lambda t: t != "text")}),
    "n": st.integers(max_value=0),
    "logprobs": st.integers(max_value=-1) | not_in(BOOL_WORDS),
}
MEDIA_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml"]
header_values = st.text(min_size=1, max_size=12, alphabet=st.characters(min_codepoint=33, max_codepoint=126))


@st.composite
def malformed_chat(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A request body (and headers) that no chat route may accept."""
    kind = draw(st.sampled_from(["bytes", "json", "missing_messages", "bad_field", "extra", "content_type", "header"]))
    headers = {"content-type": "application/json"}
    base = {"messages": VALID_MESSAGES, "max_tokens": 1}
    if kind == "bytes":
        return draw(st.binary(max_size=200)), headers
    if kind == "json":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode(), headers
    if kind == "missing_messages":
        body = draw(st.dictionaries(st.sampled_from(["model", "temperature", "stream", "max_tokens"]), json_scalars))
        return json.dumps(body).encode(), headers
    if kind == "bad_field":
        field = draw(st.sampled_from(sorted(BAD_FIELD_VALUES)))
        if field in ("n", "logprobs"):
            headers["extra-parameters"] = "pass-through"
        return json.dumps({**base, field: draw(BAD_FIELD_VALUES[field])}).encode(), headers
    if kind == "extra":
        name = draw(
            st.text(min_size=1, max_size=10).filter(
                lambda k: k not in SPEC_PARAMETERS | OPENAI_ROUTE_PARAMETERS | LLAMA_EXTRA_PARAMETERS
            )
        )
        return json.dumps({**base, name: draw(json_values)}).encode(), headers
    if kind == "content_type":
        return json.dumps(base).encode(), {"content-type": draw(st.sampled_from(MEDIA_TYPES))}
    headers["extra-parameters"] = draw(
        header_values.filter(lambda v: v.lower() not in {"error", "drop", "pass-through"})
    )
    return json.dumps(base).encode(), headers


requests = st.one_of(
    st.tuples(st.just("POST"), st.sampled_from(CHAT_PATHS), malformed_chat()),
    st.tuples(st.sampled_from(["GET", "PUT", "DELETE"]), st.sampled_from(CHAT_PATHS), malformed_chat()),
    st.tuples(st.sampled_from(["POST", "PUT", "DELETE"]), st.sampled_from(GET_PATHS), malformed_chat()),
    st.tuples(st.sampled_from(["GET", "POST", "DELETE"]), st.sampled_from(OTHER_PATHS), malformed_chat()),
    st.tuples(st.just("GET"), st.just("/v1/models/unknown"), malformed_chat()),
    st.tuples(st.just("POST"), st.sampled_from(CHAT_PATHS[:4]), st.just((b'{"messages": []}', {"api-key": "wrong"}))),
)


def assert_error_answer(status: int, content_type: str, body: bytes, request: Any) -> None:
    assert 400 <= status < 500, (status, body, request)
    assert content_type == "application/json", (content_type, request)
    payload = json.loads(body)
    if status == 401:
        assert payload["statusCode"] == 401 and payload["message"]
        return
    error = payload["error"]
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str) and error["message"]
    assert error["status"] == status and "Traceback" not in error["message"]


# ---- in-process ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_client() -> Iterator[TestClient]:
    settings = ServeSettings(engine=EngineSettings(model_path=Path("x.gguf")), model_name=MODEL_NAME, api_key=API_KEY)
    with TestClient(create_app(FakeChatService(model_name=MODEL_NAME), settings)) as client:
        yield client


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_malformed_requests_in_process(app_client: TestClient, request: Any) -> None:
    method, path, (content, headers) = request
    response = app_client.request(method, path, content=content, headers={"api-key": API_KEY, **headers})
    assert_error_answer(response.status_code, response.headers.get("content-type", ""), response.content, request)


@settings(max_examples=100, deadline=None)
@given(version=st.text(max_size=20), path=st.sampled_from(["/chat/completions", "/info", "/models/info"]))
def test_unknown_api_versions(app_client: TestClient, version: str, path: str) -> None:
    known = {"2024-04-01-preview", "2024-05-01-preview", "2024-08-01-preview", "2025-04-01"}
    if version in known:
        return
    method = "POST" if "chat" in path else "GET"
    response = app_client.request(method, path, params={"api-version": version}, json={"messages": VALID_MESSAGES},
                                  headers={"api-key": API_KEY})  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["param"] == "api-version"


# ---- against a real server -----------------------------------------------------------------------------


@pytest.mark.slow
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(request=requests)
def test_malformed_requests_against_a_real_server(server: Server, request: Any) -> None:
    method, path, (content, headers) = request
    response = httpx.request(method, server.url + path, content=content, headers={"api-key": server.key, **headers},
                             timeout=30)  # fmt: skip
    assert_error_answer(response.status_code, response.headers.get("content-type", ""), response.content, request)


@pytest.mark.slow
def test_the_server_still_serves_after_the_fuzzing(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    response = httpx.post(f"{server.url}/chat/completions", json={"messages": VALID_MESSAGES, "max_tokens": 2},
                          headers={"api-key": server.key}, timeout=30)  # fmt: skip
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 2
