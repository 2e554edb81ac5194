"""Pydantic models of the request bodies: `ChatCompletionsOptions` (Azure AI Model Inference, 2025-04-01) and
the Llama extra parameters that `extra-parameters: pass-through` lets through.

Models ignore unknown nested keys: SDKs echo response objects back into requests (`function.call_id`,
tool-call `index`, a tool message's `name`). Unknown top-level keys are governed by the `extra-parameters`
header before these models run (see `chat_request.py`). Lax mode is on on purpose: `"stream": "True"`,
numeric strings and an object as tool-call `arguments` are what real clients send.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llamafoundry.protocol.bounds import (
    MAX_CHOICES,
    MAX_LOGIT_BIAS,
    MAX_MESSAGES,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_STOP_TOKEN_IDS,
    MAX_TOKEN_ID,
    MAX_TOKENS,
    MAX_TOOLS,
    MIN_SEED,
    check_schema,
)

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
StopSequence = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# --- content parts -------------------------------------------------------------------------------------


class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImageUrl(_Model):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Model):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_Model):
    data: str
    format: str


class InputAudioPart(_Model):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioUrl(_Model):
    url: str


class AudioUrlPart(_Model):
    type: Literal["audio_url"]
    audio_url: AudioUrl


ContentPart = Annotated[TextPart | ImageUrlPart | InputAudioPart | AudioUrlPart, Field(discriminator="type")]
Content = str | list[ContentPart]


# --- messages ------------------------------------------------------------------------------------------


class FunctionCall(_Model):
    name: str
    arguments: str

    @field_validator("arguments", mode="before")
    @classmethod
    def _object_arguments_as_json(cls, value: Any) -> Any:
        # PY-TEST payloads send arguments as a JSON object; the model sees it as the string it stands for.
        return json.dumps(value) if isinstance(value, dict) else value


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Model):
    role: Literal["system", "developer"]  # developer (o1-style) is a system message for Llama
    content: Content
    name: str | None = None


class UserMessage(_Model):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Model):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(_Model):
    role: Literal["tool"]
    content: Content | None = None
    tool_call_id: str


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


# --- tools and response format -------------------------------------------------------------------------


class FunctionDefinition(_Model):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value, "The function's parameters schema")
        return value


class Tool(_Model):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"]
    function: FunctionName


class TextFormat(_Model):
    type: Literal["text"]


class JsonObjectFormat(_Model):
    type: Literal["json_object"]


class JsonSchema(_Model):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = False

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_schema(value, "The schema")
        return value


class JsonSchemaFormat(_Model):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


# --- the request ---------------------------------------------------------------------------------------


class ChatCompletionsOptions(_Model):
    """The body of `POST /chat/completions`. Ranges are the server's (temperature 0-2, as Llama and OpenAI)."""

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    model: str | None = None
    stream: bool | None = None
    frequency_penalty: FiniteFloat | None = Field(default=None, ge=-2, le=2)
    presence_penalty: FiniteFloat | None = Field(default=None, ge=-2, le=2)
    temperature: FiniteFloat | None = Field(default=None, ge=0, le=2)
    top_p: FiniteFloat | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: StopSequence | list[StopSequence] | None = None
    seed: int | None = Field(default=None, ge=MIN_SEED, le=MAX_SEED)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, min_length=1, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_sequences(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:  # counted before each one is validated
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(value)}")
        return value


# Top-level keys of ChatCompletionsOptions: anything else is an extra parameter.
SPEC_PARAMETERS = frozenset(ChatCompletionsOptions.model_fields)
# OpenAI's newer name of max_tokens (langchain-openai, langchain-azure-ai and recent SDK code send it): taken as
# max_tokens on every route, Azure's included.
RENAMED_PARAMETERS = frozenset({"max_completion_tokens"})
# OpenAI request keys that mean nothing for a Llama model here, accepted and ignored on the OpenAI routes (as vLLM
# does): a Llama 3 turn holds one tool call, so `parallel_tool_calls: false` always holds; nothing is stored.
OPENAI_IGNORED_PARAMETERS = frozenset(
    {"stream_options", "user", "parallel_tool_calls", "store", "metadata", "service_tier", "prompt_cache_key",
     "safety_identifier", "reasoning_effort", "verbosity", "modalities", "prompt_cache_retention"}
)  # fmt: skip
OPENAI_ROUTE_PARAMETERS = OPENAI_IGNORED_PARAMETERS | RENAMED_PARAMETERS
# The OpenAI fields that clients built on the openai SDK send to the Azure routes too (langchain-azure-ai's
# AzureAIChatCompletionsModel is langchain-openai's ChatOpenAI pointed at /chat/completions; its structured output
# and agents send `parallel_tool_calls: false`, `stream_usage=True` sends `stream_options: {"include_usage": true}`).
# They ask for what the server does anyway (a Llama 3 turn holds one tool call; a stream's last chunk carries its
# usage), so the Azure routes ignore them as well instead of refusing them as extra parameters.
AZURE_IGNORED_PARAMETERS = frozenset({"parallel_tool_calls", "stream_options"})


class LlamaExtras(_Model):
    """The parameters beyond the Azure spec that this server honours: OpenAI's `n`, `logprobs`, `top_logprobs`,
    `logit_bias` and vLLM's sampling extensions. On the Azure routes they are extra parameters (honoured under
    `extra-parameters: pass-through`); on the OpenAI routes (`/v1`, `/openai/...`) they are ordinary fields.

    `logprobs` is either OpenAI's boolean (with `top_logprobs`) or an integer N: log-probabilities of the
    sampled token and of the N most likely tokens.
    """

    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    best_of: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    logprobs: bool | Annotated[int, Field(ge=0)] | None = None
    top_logprobs: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None
    use_beam_search: bool | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]] | None = Field(
        default=None, max_length=MAX_STOP_TOKEN_IDS
    )
    skip_special_tokens: bool | None = None
    top_k: int | None = Field(default=None, ge=-1, le=MAX_TOKEN_ID)  # -1 and 0: every token (vLLM's "off")
    min_p: FiniteFloat | None = Field(default=None, ge=0, le=1)
    repetition_penalty: FiniteFloat | None = Field(default=None, gt=0, le=2)
    logit_bias: dict[str, Annotated[FiniteFloat, Field(ge=-100, le=100)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS
    )

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.strip().isdigit() or int(key) > MAX_TOKEN_ID:
                raise ValueError(f"its keys must be token ids (non-negative integers), got {key!r}")
        return value


LLAMA_EXTRA_PARAMETERS = frozenset(LlamaExtras.model_fields)
