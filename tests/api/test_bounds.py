"""Bounded work per request: every limit of `api/bounds.py` answers a clear 400 (413 for the body) that names the
field and the limit, identically on every route, before the service sees the request; a request at a limit
passes. In-process over the fake service (what the service receives is recorded)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from llamafoundry.protocol import bounds
from tests.api.conftest import MODEL_NAME
from tests.api.fakes import FakeChatService

CHAT_ROUTES = ["/chat/completions", "/models/chat/completions", f"/deployments/{MODEL_NAME}/chat/completions",
               "/v1/chat/completions"]  # fmt: skip
PASS_THROUGH = {"extra-parameters": "pass-through"}
USER = [{"role": "user", "content": "Hi"}]


def nested(depth: int, leaf: Any = None) -> Any:
    """`depth` levels of arrays and objects (alternating)."""
    value = leaf if leaf is not None else {"type": "string"}
    for level in range(depth - 1):
        value = {"type": "array", "items": value} if level % 2 else [value]
    return value


def schema_nested(depth: int) -> dict[str, Any]:
    """A JSON schema whose arrays nest `depth` levels deep (one JSON object per level)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def tool(parameters: dict[str, Any], name: str = "f") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def error_of(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == status and error["message"]
    return error


OVER_THE_LIMITS: list[tuple[str, dict[str, Any], str, str]] = [
    # (what, body fields, param, a phrase of the message)
    ("messages", {"messages": USER * (bounds.MAX_MESSAGES + 1)}, "messages", "at most 2048 items"),
    ("prompt characters", {"messages": [{"role": "user", "content": "x" * (bounds.MAX_PROMPT_CHARS + 1)}]},
     "messages", "the limit is 1,048,576 characters"),
    ("tool-call arguments", {"messages": USER + [{"role": "assistant", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "x" * bounds.MAX_PROMPT_CHARS}}]}]},
     "messages", "the limit is 1,048,576 characters"),
    ("max_tokens", {"max_tokens": bounds.MAX_TOKENS + 1}, "max_tokens", "less than or equal to 131072"),
    ("n", {"n": bounds.MAX_CHOICES + 1}, "n", "less than or equal to 128"),
    ("best_of", {"best_of": bounds.MAX_CHOICES + 1}, "best_of", "less than or equal to 128"),
    ("n x max_tokens", {"n": 4, "max_tokens": 65_537}, "n", "262,144 tokens per request"),
    ("best_of x max_tokens", {"best_of": 3, "max_tokens": 100_000}, "best_of", "262,144 tokens per request"),
    ("stop sequences", {"stop": ["x"] * (bounds.MAX_STOP_SEQUENCES + 1)}, "stop",
     "at most 16 stop sequences are allowed, got 17"),
    ("a stop sequence's length", {"stop": ["y" * (bounds.MAX_STOP_CHARS + 1)]}, "stop[0]", "at most 512 characters"),
    ("a stop string's length", {"stop": "y" * (bounds.MAX_STOP_CHARS + 1)}, "stop", "at most 512 characters"),
    ("stop_token_ids", {"stop_token_ids": [1] * (bounds.MAX_STOP_TOKEN_IDS + 1)}, "stop_token_ids",
     "at most 256 items"),
    ("a stop token id", {"stop_token_ids": [2**31]}, "stop_token_ids[0]", "less than or equal to 2147483647"),
    ("seed above uint64", {"seed": 2**64}, "seed", "less than or equal to 18446744073709551615"),
    ("seed below int64", {"seed": -(2**63) - 1}, "seed", "greater than or equal to -9223372036854775808"),
    ("tools", {"tools": [tool({}, f"f{i}") for i in range(bounds.MAX_TOOLS + 1)]}, "tools", "at most 128 items"),
    ("a schema's depth", {"response_format": json_schema_format(schema_nested(bounds.MAX_SCHEMA_DEPTH + 1))},
     "response_format.json_schema.schema", "more than 64 levels deep"),
    ("a schema 300 levels deep", {"response_format": json_schema_format(schema_nested(300))},
     "response_format", "more than 128 levels deep; the limit is 128 levels (64 in a JSON schema)"),
    ("a tool schema's depth", {"tools": [tool(schema_nested(bounds.MAX_SCHEMA_DEPTH + 1))]},
     "tools[0].function.parameters", "more than 64 levels deep"),
    ("a schema's size", {"response_format": json_schema_format(
        {"type": "object", "properties": {f"p{i:05d}": {"type": "string"} for i in range(3000)}})},
     "response_format.json_schema.schema", "the limit is 65536"),
    ("the body's depth", {"metadata": nested(bounds.MAX_JSON_DEPTH + 1)}, "metadata", "more than 128 levels deep"),
]  # fmt: skip


@pytest.mark.parametrize("route", CHAT_ROUTES)
@pytest.mark.parametrize(("what", "fields", "param", "phrase"), OVER_THE_LIMITS, ids=[c[0] for c in OVER_THE_LIMITS])
def test_every_limit_is_a_400_that_names_the_field_on_every_chat_route(
    client: TestClient, fake_service: FakeChatService, route: str, what: str, fields: dict[str, Any],
    param: str | None, phrase: str,
) -> None:  # fmt: skip
    response = client.post(route, json={"messages": USER, **fields}, headers=PASS_THROUGH)
    error = error_of(response)
    assert error["param"] == param and phrase in error["message"], error
    assert not fake_service.requests  # refused before the model saw anything


TEXT_OVER_THE_LIMITS: list[tuple[dict[str, Any], str, str]] = [
    ({"prompt": "x" * (bounds.MAX_PROMPT_CHARS + 1)}, "prompt", "The prompt holds 1,048,577 characters"),
    ({"max_tokens": bounds.MAX_TOKENS + 1}, "max_tokens", "less than or equal to 131072"),
    ({"n": 2, "max_tokens": 131_073 // 1}, "max_tokens", "less than or equal to 131072"),
    ({"best_of": 4, "max_tokens": 65_537}, "best_of", "262,144 tokens per request"),
    ({"stop": ["x"] * 17}, "stop", "at most 16 stop sequences are allowed, got 17"),
    ({"seed": 2**64}, "seed", "less than or equal to"),
    ({"stop_token_ids": [1] * 257}, "stop_token_ids", "at most 256 items"),
]


@pytest.mark.parametrize(("fields", "param", "phrase"), TEXT_OVER_THE_LIMITS)
def test_text_completions_keep_the_same_limits(
    client: TestClient, fake_service: FakeChatService, fields: dict[str, Any], param: str, phrase: str
) -> None:
    response = client.post("/v1/completions", json={"prompt": "Once", **fields}, headers=PASS_THROUGH)
    error = error_of(response)
    assert error["param"] == param and phrase in error["message"], error
    assert not fake_service.requests


AT_THE_LIMITS: dict[str, Any] = {
    "messages": USER * bounds.MAX_MESSAGES,
    "max_tokens": bounds.MAX_GENERATED_TOKENS // 2,
    "n": 2,
    "stop": ["y" * bounds.MAX_STOP_CHARS] * bounds.MAX_STOP_SEQUENCES,
    "stop_token_ids": [bounds.MAX_TOKEN_ID] * bounds.MAX_STOP_TOKEN_IDS,
    "seed": bounds.MAX_SEED,
    "tools": [tool(schema_nested(bounds.MAX_SCHEMA_DEPTH), f"f{i}") for i in range(bounds.MAX_TOOLS)],
}
ONE_PAST: dict[str, Any] = {
    "messages": USER * (bounds.MAX_MESSAGES + 1),
    "max_tokens": bounds.MAX_GENERATED_TOKENS // 2 + 1,
    "stop_token_ids": [bounds.MAX_TOKEN_ID + 1],
    "seed": bounds.MAX_SEED + 1,
    "tools": [tool(schema_nested(bounds.MAX_SCHEMA_DEPTH + 1))],
}


@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_the_limits_are_exact(client: TestClient, fake_service: FakeChatService, route: str) -> None:
    response = client.post(route, json=AT_THE_LIMITS, headers=PASS_THROUGH)
    assert response.status_code == 200, response.text
    params = fake_service.requests[-1].params
    assert params.n == 2 and params.max_tokens == bounds.MAX_GENERATED_TOKENS // 2 and params.seed == bounds.MAX_SEED
    for field, value in ONE_PAST.items():
        assert client.post(route, json={**AT_THE_LIMITS, field: value}, headers=PASS_THROUGH).status_code == 400, field


def test_a_pydantic_models_schema_is_well_within_the_schema_limits() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Address(pydantic.BaseModel):
        street: str
        city: str
        zip_code: str | None = None

    class Person(pydantic.BaseModel):
        name: str
        age: int = pydantic.Field(ge=0, le=150)
        addresses: list[Address]
        manager: Person | None = None
        tags: dict[str, list[str]] = {}

    schema = Person.model_json_schema()
    bounds.check_schema(schema, "The schema")  # raises past a limit
    assert not bounds.depth_exceeds(schema, 8)
