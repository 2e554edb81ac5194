"""Structured output end to end: schemas written by Pydantic (unions, numeric bounds, enums, `$defs`) through the real
`azure-ai-inference` SDK, on the bare route and through `/deployments/<name>` of a local replica deployment and of an
upstream deployment (`target`, tests/api/targets.py), and the issue's schema bomb answered in bounded memory by
every process involved.

The model has random weights: only constrained decoding makes its output JSON, so every answer must validate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import (
    ChatCompletionsNamedToolChoice,
    ChatCompletionsNamedToolChoiceFunction,
    ChatCompletionsToolDefinition,
    FunctionDefinition,
    JsonSchemaFormat,
    UserMessage,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from pydantic import BaseModel, Field

from tests.api.deployment_fixtures import chat
from tests.api.targets import Target

pytestmark = pytest.mark.slow

MAX_RSS_MIB = 1536  # each process: a gateway or replica of the tiny model runs at ~200-400 MiB


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    """Pydantic's schema: `$defs`, a discriminated union (`oneOf`), bounds, an enum, an optional field."""

    name: str = Field(min_length=1, max_length=10)
    size: Literal["S", "M", "L"]
    weight: float = Field(gt=0, lt=100)
    animal: Cat | Dog = Field(discriminator="kind")
    nick: str | None = Field(default=None, max_length=6)


class Forecast(BaseModel):
    city: str = Field(max_length=20)
    days: int = Field(ge=1, le=14)


def client(target: Target) -> ChatCompletionsClient:
    return ChatCompletionsClient(target.url, AzureKeyCredential(target.key), retry_total=0)


def test_a_forced_call_of_a_pydantic_function_keeps_to_its_bounds(target: Target) -> None:
    tool = ChatCompletionsToolDefinition(
        function=FunctionDefinition(name="forecast", description="Weather", parameters=Forecast.model_json_schema())
    )
    force = ChatCompletionsNamedToolChoice(function=ChatCompletionsNamedToolChoiceFunction(name="forecast"))
    with client(target) as sdk:
        response = sdk.complete(
            messages=[UserMessage("Weather in Oslo?")], tools=[tool], tool_choice=force, max_tokens=48,
            temperature=1.0, seed=3, model_extras={"n": 2},
        )  # fmt: skip
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        Forecast.model_validate_json(call.function.arguments)  # 1 <= days <= 14, a city of at most 20 characters


def pet_answers(target: Target) -> list[str]:
    fmt = JsonSchemaFormat(name="pet", schema=Pet.model_json_schema(), strict=True)
    with client(target) as sdk:
        response = sdk.complete(
            messages=[UserMessage("Describe a pet.")], response_format=fmt, max_tokens=96, temperature=1.0,
            top_p=0.95, seed=11, model_extras={"n": 2, "logprobs": True},
        )  # fmt: skip
        streamed = list(
            sdk.complete(
                messages=[UserMessage("A pet?")], response_format=fmt, max_tokens=96, temperature=0, stream=True
            )  # fmt: skip
        )
    assert all(c.finish_reason == "stop" for c in response.choices)
    assert streamed[-1].choices[0].finish_reason == "stop"
    return [c.message.content for c in response.choices] + ["".join(u.choices[0].delta.content or "" for u in streamed)]


def test_a_pydantic_response_format_always_validates(target: Target) -> None:
    for content in pet_answers(target):
        Pet.model_validate_json(content)


def test_beam_search_under_a_schema_returns_n_valid_answers(target: Target) -> None:
    """Beam search with a response_format was a 400; every returned beam now validates."""
    fmt = JsonSchemaFormat(name="pet", schema=Pet.model_json_schema(), strict=True)
    with client(target) as sdk:
        response = sdk.complete(
            messages=[UserMessage("Describe a pet.")], response_format=fmt, max_tokens=96,
            model_extras={"use_beam_search": True, "best_of": 2, "n": 2},
        )  # fmt: skip
    assert len(response.choices) == 2
    for choice in response.choices:
        assert choice.finish_reason == "stop"
        Pet.model_validate_json(choice.message.content)


def test_a_keyword_that_cannot_be_enforced_is_422_naming_it(target: Target) -> None:
    fmt = JsonSchemaFormat(name="n", schema={"type": "array", "items": {"type": "integer"}, "uniqueItems": True})
    with client(target) as sdk, pytest.raises(HttpResponseError) as caught:
        sdk.complete(messages=[UserMessage("Numbers.")], response_format=fmt)
    assert caught.value.status_code == 422 and "'uniqueItems'" in caught.value.error.message


BOMBS: list[dict[str, Any]] = [
    {"type": "string", "minLength": 1_000_000_000},
    {"type": "string", "maxLength": 10_000_000},
]


@pytest.mark.parametrize("schema", BOMBS, ids=["minLength", "maxLength"])
def test_the_schema_bomb_is_answered_within_max_tokens_in_bounded_memory(
    target: Target, schema: dict[str, Any]
) -> None:
    """The issue: minLength 1e9 made the grammar builder allocate until the OOM killer ended the gateway (22 GB)
    and every replica with it; maxLength 1e7 built an 80 MB grammar. Now a string the length of max_tokens."""
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for stream in (False, True):
        answer = chat(f"{target.url}/chat/completions", target.key, response_format=fmt, max_tokens=24,
                      stream=stream)  # fmt: skip
        assert answer.status_code == 200, answer.text
    usage = chat(f"{target.url}/chat/completions", target.key, response_format=fmt, max_tokens=24).json()
    assert usage["usage"]["completion_tokens"] <= 24
    for pid in [*target.pids, *(child for parent in target.pids for child in descendants(parent))]:
        assert rss_mib(pid) < MAX_RSS_MIB, f"process {pid} holds {rss_mib(pid)} MiB"
    healthy = chat(f"{target.url}/chat/completions", target.key, response_format={"type": "json_object"})
    assert healthy.status_code == 200


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a gateway's replicas), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak resident size, so a spike that was freed again still counts
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmHWM for process {pid}")
