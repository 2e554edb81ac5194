"""OpenAI's Responses API (`POST /v1/responses`, Azure's `/openai/v1/responses`): a body -> a `ChatRequest`.

The request is written as the chat completions body it stands for and parsed by `protocol.chat.parse_chat`, so the
same bounds, tools, structured output, sampling rules and errors apply: `instructions` becomes the system message,
`input` (a string, or message, `function_call` and `function_call_output` items) the messages, flat function
`tools` the chat's tools, `text.format` the `response_format`, `max_output_tokens` the `max_tokens`.

The server keeps no state: `previous_response_id`, `conversation`, `prompt` (a stored prompt) and `item_reference`
inputs are a 400 that says to send the whole conversation in `input`. Rendering the answer is
`protocol.responses_render`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from llamafoundry.protocol.chat import check_unknown, parse_chat
from llamafoundry.protocol.errors import ApiError, invalid, not_supported
from llamafoundry.protocol.validation import validation_error
from llamafoundry.service.types import ChatRequest

STATELESS = (
    "This server keeps no responses or conversations (store: false): send the whole conversation in 'input' "
    "(earlier output items included) instead of '{field}'."
)
# Accepted and ignored: they ask for bookkeeping this stateless server does not do, or tune models it has not.
IGNORED_FIELDS = frozenset(
    {"model", "store", "metadata", "user", "include", "truncation", "reasoning", "parallel_tool_calls",
     "service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "safety_identifier",
     "stream_options", "max_tool_calls", "context_management", "background"}
)  # fmt: skip
STATEFUL_FIELDS = ("previous_response_id", "conversation", "prompt")
SAMPLING_FIELDS = ("temperature", "top_p", "stream", "top_logprobs")
VLLM_FIELDS = ("top_k", "min_p", "repetition_penalty", "ignore_eos", "stop_token_ids", "skip_special_tokens")
KNOWN_FIELDS = frozenset({"input", "instructions", "tools", "tool_choice", "text", "max_output_tokens"}).union(
    IGNORED_FIELDS, STATEFUL_FIELDS, SAMPLING_FIELDS, VLLM_FIELDS
)
# Chat fields as the Responses API names them, for the `param` of errors found by the chat's rules.
_PARAM_NAMES = {"max_tokens": "max_output_tokens", "response_format": "text.format", "messages": "input"}


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Item):
    type: Literal["input_text", "output_text", "text"]
    text: str


class ImagePart(_Item):
    type: Literal["input_image"]
    image_url: str | None = None
    detail: str | None = None


class OtherPart(_Item):
    type: Literal["input_file", "input_audio", "refusal"]


Part = Annotated[TextPart | ImagePart | OtherPart, Field(discriminator="type")]


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str

    @field_validator("arguments", mode="before")
    @classmethod
    def _object_as_json(cls, value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict) else value


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Part]


_ITEMS: dict[str, TypeAdapter[Any]] = {
    "message": TypeAdapter(MessageItem),
    "function_call": TypeAdapter(FunctionCallItem),
    "function_call_output": TypeAdapter(FunctionCallOutputItem),
}


@dataclass
class ParsedResponse:
    """A Responses body as the service's request, and what the answer echoes back."""

    request: ChatRequest
    echo: dict[str, Any]


def parse_response(body: dict[str, Any], mode: str, *, accepts_images: bool = False) -> ParsedResponse:
    """Validate a Responses body. Raises ApiError: 400 naming the field, 422 for what is not served.

    Args:
        body: the JSON object.
        mode: the `extra-parameters` header's mode (it decides only about keys the Responses API does not define).
        accepts_images: the model takes images (`input_image` parts; text-only models answer 422).
    """
    check_unknown([key for key in body if key not in KNOWN_FIELDS], mode)
    for field in STATEFUL_FIELDS:
        if body.get(field) is not None:
            raise invalid(field, STATELESS.format(field=field))
    if body.get("background"):
        raise invalid("background", "Background responses need stored responses, which this server does not keep; "
                      "leave 'background' out and stream instead.")  # fmt: skip
    messages, origins = _messages(body)
    chat_body: dict[str, Any] = {"messages": messages}
    chat_body.update({k: body[k] for k in (*SAMPLING_FIELDS, *VLLM_FIELDS) if body.get(k) is not None})
    if body.get("top_logprobs"):
        chat_body["logprobs"] = True
    if body.get("max_output_tokens") is not None:
        chat_body["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat_body["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat_body["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat_body["response_format"] = response_format
    try:
        request = parse_chat(chat_body, "error", is_openai_route=True, accepts_images=accepts_images)
    except ApiError as exc:
        raise _renamed(exc, origins) from None
    return ParsedResponse(request, _echo(body))


def _messages(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """`instructions` and `input` as chat messages (consecutive function calls join one assistant turn), and where
    each came from (`instructions`, `input[3]`), for errors."""
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions", "'instructions' must be a string (the system message).")
        messages.append({"role": "system", "content": instructions})
        origins.append("instructions")
    value = body.get("input")
    if value is None:
        raise ApiError(400, "missing_required_parameter", "'input' is required: a string or a list of items.", "input")
    if isinstance(value, str):
        return [*messages, {"role": "user", "content": value}], [*origins, "input"]
    if not isinstance(value, list) or not value:
        raise invalid("input", "'input' must be a string or a non-empty list of input items.")
    for index, raw in enumerate(value):
        item = _item(raw, index)
        if item is None:
            continue
        if isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _content(item.output, index)})
        else:
            messages.append({"role": item.role, "content": _content(item.content, index)})
        origins.append(f"input[{index}]")
    return messages, origins


def _item(raw: Any, index: int) -> MessageItem | FunctionCallItem | FunctionCallOutputItem | None:
    """One input item, validated (errors name `input[index]`); None for items that carry nothing to prompt."""
    if not isinstance(raw, dict):
        raise invalid(f"input[{index}]", f"input[{index}] must be an object (a message or an item).")
    kind = raw.get("type") or ("message" if "role" in raw else None)
    if kind == "reasoning":
        return None  # a reasoning model's summary: Llama does not read them back
    if kind == "item_reference":
        raise invalid(f"input[{index}]", STATELESS.format(field="item_reference"))
    adapter = _ITEMS.get(str(kind))
    if adapter is None:
        raise not_supported(f"input[{index}].type", f"Input items of type '{kind}' are not supported: send messages, "
                            "function_call and function_call_output items.", kind)  # fmt: skip
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        raise validation_error(exc, ("input", index)) from None


def _content(content: str | list[Any], index: int) -> str | list[dict[str, Any]]:
    """Text parts as chat text parts; an image as an `image_url` part (422 unless the model reads images)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart) and part.image_url:
            parts.append({"type": "image_url", "image_url": {"url": part.image_url}})
        else:
            raise not_supported(f"input[{index}].content[{j}]", f"This model reads text only: '{part.type}' "
                                "content parts are not supported. Send input_text parts.", part.type)  # fmt: skip
    return parts


def _tools(tools: Any) -> list[dict[str, Any]]:
    """Flat function tools (`{"type": "function", "name", "parameters"}`) as chat tools; hosted tools are 422."""
    if not isinstance(tools, list):
        raise invalid("tools", "'tools' must be a list of function tools.")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise not_supported(f"tools[{i}].type", f"Only function tools are supported here, not '{kind}'.", kind)
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            kind = choice.get("type")
            raise not_supported("tool_choice", f"tool_choice of type '{kind}' is not supported: send 'auto', 'none', "
                                "'required' or {\"type\": \"function\", \"name\": ...}.", kind)  # fmt: skip
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as the chat's `response_format` (`text.verbosity` means nothing for Llama: ignored)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise invalid("text", '\'text\' must be an object, such as {"format": {"type": "text"}}.')
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    return dict(fmt)  # json_object, or a type the chat's rules name as invalid


def _renamed(error: ApiError, origins: list[str]) -> ApiError:
    """An error of the chat's rules, its `param` named as the Responses API names the field (`messages[2].content`
    is the item it came from: `input[1].content`)."""
    param = error.param or ""
    match = re.match(r"^messages\[(\d+)\](.*)$", param)
    if match is not None and int(match[1]) < len(origins):
        renamed = origins[int(match[1])] + match[2]
    else:
        head, sep, rest = param.partition(".")
        renamed = _PARAM_NAMES[head] + sep + rest if head in _PARAM_NAMES else param
    if renamed != param:
        error.message = error.message.replace(f"'{param}'", f"'{renamed}'")
        error.param = renamed
    return error


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """What a Response object repeats of its request."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "temperature": body.get("temperature"),
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "top_logprobs": body.get("top_logprobs"),
        "text": {"format": {"type": "text"}, **(text or {})},
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
    }
