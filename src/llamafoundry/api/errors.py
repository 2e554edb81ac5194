"""Errors users see: one exception type for the HTTP layer, the Azure error envelope, and the map from the
service's domain exceptions to status codes.

Every error body is JSON with `Content-Type: application/json` (azure-core raises `DecodeError` on anything
else labelled JSON). The envelope is the one azure-core's `ODataV4Format` parses and OpenAI clients read:
`{"error": {"code", "message", "param", "type": null, "status"}}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from llamafoundry.errors import (
    EngineError,
    EngineUnavailableError,
    GenerationError,
    InvalidSamplingParams,
    PromptTooLongError,
    QueueFullError,
    RequestTooLargeError,
)
from llamafoundry.protocol.errors import (
    RETRY_AFTER_BUSY_S,
    RETRY_AFTER_UNAVAILABLE_S,
    ApiError,
    invalid,
    not_supported,
)
from llamafoundry.safety.chat import ContentFilteredError
from llamafoundry.service.chat_format import ChatFormatError
from llamafoundry.service.structured import SchemaNotSupportedError

AUTH_FAILED_MESSAGE = "Auth token validation failed. Please provide a valid key or a valid AAD token"


class ContentFilterApiError(ApiError):
    """The 400 of a prompt blocked by the content filter: the Llama serverless body plus Azure OpenAI's
    `innererror` (`ContentFilteredError.body()`), with `x-ms-error-code: content_filter` (the meter reads it)."""

    def __init__(self, exc: ContentFilteredError) -> None:
        super().__init__(400, exc.code, exc.message, exc.param)
        self.filtered = exc

    def body(self) -> dict[str, Any]:
        return self.filtered.body()


def error_response(error: ApiError) -> Response:
    """The error as a JSON response with its headers (`x-ms-error-code`, `Retry-After`, ...)."""
    return json_response(error.body(), error.status, error.response_headers())


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status, headers=dict(headers or {}), media_type="application/json")


def unauthorized_response() -> Response:
    """The MaaS 401, byte for byte (its spacing included): azure-core reads the top-level `message`."""
    body = json.dumps({"statusCode": 401, "message": AUTH_FAILED_MESSAGE}).encode()
    return Response(body, 401, headers={"x-ms-error-reason": "Invalid JWT."}, media_type="application/json")


def from_service_exception(exc: Exception) -> ApiError | None:
    """The API error for an exception raised by ChatService, or None when it is a bug (answer 500)."""
    if isinstance(exc, ContentFilteredError):  # raised before any output, so a 400 for streams too
        return ContentFilterApiError(exc)
    if isinstance(exc, InvalidSamplingParams):
        return invalid(exc.param, exc.message)
    if isinstance(exc, SchemaNotSupportedError):  # 422: a keyword constrained decoding cannot enforce; 400: wrong
        if exc.is_unsupported:
            return not_supported(exc.param, exc.message, exc.keyword)
        return invalid(exc.param, exc.message)
    if isinstance(exc, ChatFormatError):
        return invalid(exc.param, exc.message, code="invalid_messages")
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, exc.code, exc.message, exc.param or "messages")
    if isinstance(exc, RequestTooLargeError):
        return ApiError(400, exc.code, exc.message, exc.param or "n")
    if isinstance(exc, QueueFullError):
        return ApiError(429, exc.code, exc.message, retry_after=RETRY_AFTER_BUSY_S)
    if isinstance(exc, EngineUnavailableError):
        return ApiError(503, exc.code, exc.message, retry_after=RETRY_AFTER_UNAVAILABLE_S)
    if isinstance(exc, GenerationError):  # this request failed while generating; the server serves the others
        return ApiError(500, exc.code, exc.message, exc.param)
    if isinstance(exc, EngineError):  # raised before any output: the request itself cannot be served
        return ApiError(400, exc.code, exc.message, exc.param)
    return None
