"""The shapes of the API's answers, for `/openapi.json` only: the server writes its answers as dicts
(`protocol.render`, `protocol.completions`, `protocol.responses_render`, `protocol.errors`), so nothing here
validates or serializes a response. Request bodies are not described here: the spec takes them from the models
and field tables the server validates with (`api.openapi`).

Answers may carry more keys than listed (Azure's content-filter annotations, logprobs): `extra="allow"` says so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable machine-readable code, such as invalid_value or content_filter.")
    message: str = Field(description="A sentence: what was wrong and what to do.")
    param: str | None = Field(description="The request field at fault, such as messages[0].content.")
    type: None = None
    status: int = Field(description="The HTTP status, repeated.")


class ErrorEnvelope(_Answer):
    """Every 4xx and 5xx answer but the 401 (Azure's envelope, which OpenAI clients read too)."""

    error: ErrorDetail


class Unauthorized(BaseModel):
    """The 401 of a missing or wrong key (the Azure MaaS body, which azure-core reads)."""

    statusCode: Literal[401]  # noqa: N815 (the wire name)
    message: str


class ModelInfo(BaseModel):
    """`GET /info`: the served model."""

    model_name: str
    model_type: Literal["chat-completions"]
    model_provider_name: str


class Usage(_Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ToolCallAnswer(_Answer):
    id: str
    type: Literal["function"]
    function: dict[str, str] = Field(description="{name, arguments}: arguments is a JSON string.")


class AssistantAnswer(_Answer):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallAnswer] | None = None


class ChatChoice(_Answer):
    index: int
    message: AssistantAnswer
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] | None


class ChatCompletion(_Answer):
    """A non-streaming chat completion."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatCompletionChunk(_Answer):
    """One `data:` event of a streamed chat completion (`stream: true`); the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[dict[str, Any]] = Field(description="{index, delta: {role?, content?, tool_calls?}, finish_reason}")
    usage: Usage | None = None


class TextChoice(_Answer):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length", "content_filter"] | None


class TextCompletion(_Answer):
    """A non-streaming text completion (`POST /v1/completions`)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ResponseObject(_Answer):
    """A Responses API answer (`POST /v1/responses`); streamed, it is `response.*` events."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    model: str
    output: list[dict[str, Any]] = Field(description="message and function_call items")
    usage: dict[str, Any] | None = None


class Model(BaseModel):
    """A served model (`GET /v1/models`): send its `id` as `model`."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class ManagementObject(_Answer):
    """A management answer: a deployment, a key, a project, a policy... (docs/api.md describes each)."""


class ManagementList(_Answer):
    data: list[dict[str, Any]]


ANSWERS: list[type[BaseModel]] = [
    ErrorEnvelope, Unauthorized, ModelInfo, ChatCompletion, ChatCompletionChunk, TextCompletion, ResponseObject,
    Model, ModelList, ManagementObject, ManagementList,
]  # fmt: skip
