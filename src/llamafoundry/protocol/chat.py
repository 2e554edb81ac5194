"""A chat request body -> a validated `ChatRequest`: JSON, the `extra-parameters` header, field validation and
what this text-only Llama model cannot do. (The rules between generation fields, and the API's defaults, are the
service's: `service.sampling`.)

Every failure is an `ApiError` (400, 415 or 422) that names the field at fault.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import ValidationError

from llamafoundry.protocol.bounds import check_nesting, check_request_bounds
from llamafoundry.protocol.errors import ApiError, invalid, not_supported
from llamafoundry.protocol.schemas import (
    AZURE_IGNORED_PARAMETERS,
    LLAMA_EXTRA_PARAMETERS,
    OPENAI_ROUTE_PARAMETERS,
    SPEC_PARAMETERS,
    ChatCompletionsOptions,
    Content,
    LlamaExtras,
    Message,
    NamedToolChoice,
    TextPart,
)
from llamafoundry.protocol.validation import validation_error
from llamafoundry.service.types import ChatMessage, ChatRequest, GenerationOptions

logger = logging.getLogger(__name__)

EXTRA_PARAMETERS_MODES = ("error", "drop", "pass-through")


def extra_parameters_mode(header: str | None) -> str:
    """The `extra-parameters` header's mode; `error` when absent."""
    if header is None or not header.strip():
        return "error"
    mode = header.strip().lower()
    if mode not in EXTRA_PARAMETERS_MODES:
        text = (
            f"Unexpected EXTRA_PARAMETERS option {header.strip()}, expected options are {list(EXTRA_PARAMETERS_MODES)}"
        )
        raise ApiError(400, "invalid_extra_parameters", text, "extra-parameters", extra={"detail": text})
    return mode


def parse_json_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as a JSON object. Raises ApiError 415 for a non-JSON content type, 400 for anything else."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type '{media_type}' is not supported: send the body "
            "as JSON with 'Content-Type: application/json'.",
        )
    if not raw.strip():
        raise ApiError(400, "invalid_json", "The request body is empty: send a JSON object with 'messages'.")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
        raise ApiError(
            400, "invalid_json", f"The request body is not valid JSON ({reason}). Send a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "invalid_json",
            'The request body must be a JSON object, such as {"messages": [{"role": "user", "content": "Hello"}]}.',
        )
    check_nesting(body)
    if _MAYBE_SURROGATE.search(raw) and not _is_valid_unicode(body):
        raise ApiError(
            400,
            "invalid_json",
            "The request body has text that is not valid Unicode: a lone surrogate such as \\ud800 (half of a "
            "UTF-16 pair). Send whole characters; a pair such as \\ud83d\\ude00 is fine.",
        )
    return body


# JSON's \ud800-\udfff escapes, or a surrogate encoded in UTF-8 bytes (json.loads lets both through as lone
# surrogates, which no tokenizer can encode): the cheap test before the exact one
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _is_valid_unicode(body: dict[str, Any]) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_extras(extras: list[str], mode: str) -> None:
    """Refuse extra parameters under `extra-parameters: error` (or no header), with the MaaS body to the letter."""
    if extras and mode == "error":
        text = (
            f"Extra parameters {extras!r} are not allowed when extra-parameters is not set or set to be 'error'. "
            "Set extra-parameters to 'pass-through' to pass to the model."
        )
        raise ApiError(400, "extra_parameters_not_allowed", text, extra={"detail": text})


def _openai_max_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """`max_completion_tokens` (OpenAI's newer name) as `max_tokens`, validated as it is, on every route; both,
    unequal, is a contradiction."""
    if "max_completion_tokens" not in body:
        return body
    value = body["max_completion_tokens"]
    if body.get("max_tokens") is not None and value is not None and body["max_tokens"] != value:
        raise invalid(
            "max_completion_tokens",
            "max_tokens and max_completion_tokens differ; they are the same limit, so send one of them.",
        )
    body = {k: v for k, v in body.items() if k != "max_completion_tokens"}
    return {**body, "max_tokens": value} if value is not None else body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_chat(
    body: dict[str, Any], mode: str, *, is_openai_route: bool = False, accepts_images: bool = False
) -> ChatRequest:
    """Validate a chat body and build the service request.

    Args:
        body: the JSON object.
        mode: the `extra-parameters` header's mode: `error`, `drop` or `pass-through`.
        is_openai_route: an OpenAI route (`/v1`, `/openai/...`): OpenAI's fields and vLLM's sampling extensions
            are ordinary fields there (`OPENAI_ROUTE_PARAMETERS`, `LlamaExtras`), and `mode` decides only about
            keys nobody defines. On the Azure routes everything outside the spec is an extra parameter.
        accepts_images: the model takes `image_url` parts (Llama 3.2 Vision deployments); they are kept in
            `ChatMessage.content_parts`.
    """
    body = _openai_max_tokens(body)
    if is_openai_route:
        check_unserved(body, OPENAI_UNSERVED)
        known = SPEC_PARAMETERS | OPENAI_ROUTE_PARAMETERS | LLAMA_EXTRA_PARAMETERS | frozenset(OPENAI_UNSERVED)
        check_unknown([key for key in body if key not in known], mode)
        passed = {k: v for k, v in body.items() if k in LLAMA_EXTRA_PARAMETERS}
    else:
        extras = [key for key in body if key not in SPEC_PARAMETERS and key not in AZURE_IGNORED_PARAMETERS]
        check_extras(extras, mode)
        passed = {k: body[k] for k in extras if k in LLAMA_EXTRA_PARAMETERS} if mode == "pass-through" else {}
        if mode == "pass-through" and set(extras) - LLAMA_EXTRA_PARAMETERS:
            logger.debug("ignoring extra parameters this model does not know: %s", set(extras) - LLAMA_EXTRA_PARAMETERS)
    try:
        options = ChatCompletionsOptions.model_validate({k: v for k, v in body.items() if k in SPEC_PARAMETERS})
        llama = LlamaExtras.model_validate(passed)
    except ValidationError as exc:
        raise validation_error(exc) from None
    check_request_bounds(options, llama)
    _check_supported(options, accepts_images)
    _check_tool_choice(options)
    return ChatRequest(
        messages=[chat_message(m) for m in options.messages],
        options=generation_options(options, llama),
        tools=[t.model_dump(by_alias=True, exclude_none=True) for t in options.tools] if options.tools else None,
        tool_choice=_tool_choice(options.tool_choice),
        response_format=options.response_format.model_dump(by_alias=True) if options.response_format else None,
        stream=bool(options.stream),
    )


# OpenAI chat fields that ask for what a Llama model here does not do: 422 when set (null is "not set").
OPENAI_UNSERVED = {
    "audio": "Audio output is not supported: this model answers in text.",
    "prediction": "Predicted outputs are not supported; send the request without 'prediction'.",
    "web_search_options": "Web search is not supported by this server.",
    "functions": "The deprecated 'functions' field is not supported: send them as 'tools' "
    '([{"type": "function", "function": {...}}]).',
    "function_call": "The deprecated 'function_call' field is not supported: use 'tool_choice'.",
}


def check_unserved(body: dict[str, Any], unserved: dict[str, str]) -> None:
    """422 for a field (not null) that asks for a feature this server does not have; `modalities` may be text."""
    for key, why in unserved.items():
        if body.get(key) is not None:
            raise not_supported(key, why, key)
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise not_supported("modalities", "This model answers in text only: send modalities ['text'].", modalities)


def check_unknown(unknown: list[str], mode: str) -> None:
    """On the OpenAI routes, a key that neither OpenAI nor vLLM defines is a 400, as OpenAI answers it (a typo must
    not be silently ignored), unless `extra-parameters: drop` or `pass-through` asks to ignore such keys."""
    if unknown and mode == "error":
        raise ApiError(
            400,
            "unknown_parameter",
            f"Unrecognized request argument supplied: {unknown[0]}. Remove it, or send the header "
            "'extra-parameters: drop' to have parameters this server does not know ignored.",
            unknown[0],
        )


def _check_supported(options: ChatCompletionsOptions, accepts_images: bool = False) -> None:
    """422 for well-formed requests a text-only Llama cannot honour."""
    for i, message in enumerate(options.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if not isinstance(part, TextPart) and not (accepts_images and part.type == "image_url"):
                kind = "images" if part.type == "image_url" else "audio"
                raise not_supported(
                    f"messages[{i}].content[{j}]",
                    f"This model accepts text only and cannot read "
                    f"{kind} ('{part.type}' content part). Send text content parts only.",
                    part.type,
                )


def _check_tool_choice(options: ChatCompletionsOptions) -> None:
    choice = options.tool_choice
    if choice is None or choice in ("auto", "none"):
        return
    if not options.tools:
        raise invalid("tool_choice", "tool_choice needs tools: give the functions the model may call in 'tools'.")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in {t.function.name for t in options.tools}:
        raise invalid(
            "tool_choice",
            f"tool_choice names the function '{choice.function.name}', which is not in "
            "'tools'. Name one of the functions in 'tools'.",
        )


def _tool_choice(choice: str | NamedToolChoice | None) -> str | dict[str, Any] | None:
    return choice.model_dump() if isinstance(choice, NamedToolChoice) else choice


def generation_options(options: ChatCompletionsOptions, llama: LlamaExtras) -> GenerationOptions:
    """The generation fields as sent (the service applies defaults and cross-field rules: `service.sampling`)."""
    stop = [options.stop] if isinstance(options.stop, str) else options.stop
    return GenerationOptions(
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        seed=options.seed,
        stop=list(stop) if stop is not None else None,
        n=llama.n,
        best_of=llama.best_of,
        logprobs=llama.logprobs,
        top_logprobs=llama.top_logprobs,
        ignore_eos=llama.ignore_eos,
        use_beam_search=llama.use_beam_search,
        stop_token_ids=list(llama.stop_token_ids) if llama.stop_token_ids is not None else None,
        skip_special_tokens=llama.skip_special_tokens,
        top_k=llama.top_k,
        min_p=llama.min_p,
        repetition_penalty=llama.repetition_penalty,
        logit_bias={int(k): v for k, v in llama.logit_bias.items()} if llama.logit_bias else None,
    )


def chat_message(message: Message) -> ChatMessage:
    """The service's message: developer -> system, text parts joined, tool calls kept."""
    role = "system" if message.role == "developer" else message.role
    tool_calls = getattr(message, "tool_calls", None)
    return ChatMessage(
        role=role,
        content=_text(message.content),
        tool_calls=[call.model_dump() for call in tool_calls] if tool_calls else None,
        tool_call_id=getattr(message, "tool_call_id", None),
        name=getattr(message, "name", None),
        content_parts=_parts_with_images(message.content),
    )


def _parts_with_images(content: Content | None) -> list[dict[str, Any]] | None:
    """The content parts as sent, when some are not text (only image parts get this far, and only for models
    that take images)."""
    if not isinstance(content, list) or all(isinstance(part, TextPart) for part in content):
        return None
    return [part.model_dump(exclude_none=True) for part in content]


def _text(content: Content | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if isinstance(part, TextPart))
