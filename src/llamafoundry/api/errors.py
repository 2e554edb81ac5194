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
from llamafoundry.service.chat_format import ChatFormatError
from llamafoundry.service.safety import ContentFilteredError

# Seconds a client should wait before retrying. Only 429 and 503 carry Retry-After: azure-core retries
# any status that carries it, a 400 included.
RETRY_AFTER_BUSY_S = 1
RETRY_AFTER_UNAVAILABLE_S = 5

AUTH_FAILED_MESSAGE = "Auth token validation failed. Please provide a valid key or a valid AAD token"


class ApiError(Exception):
    """An error answered with the Azure envelope.

    Args:
        status: HTTP status.
        code: stable machine-readable code (`error.code`).
        message: a sentence saying what was wrong and what to do.
        param: the request field at fault, if any.
        retry_after: seconds for `Retry-After` (429 and 503 only).
        extra: more top-level keys for the body (for example the MaaS `detail` string).
        headers: more response headers.
        details: more errors (`{"code", "message", "target"}`) when the request had several faults.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        *,
        retry_after: int | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        if retry_after is not None and status not in (429, 503):
            raise ValueError("Retry-After is only sent with 429 and 503")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "param": self.param, "type": None}
        error["status"] = self.status
        if self.details:
            error["details"] = self.details
        return {"error": error, **self.extra}

    def response(self) -> Response:
        headers = {"x-ms-error-code": self.code, **self.headers}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return json_response(self.body(), self.status, headers)


class ContentFilterApiError(ApiError):
    """The 400 of a prompt blocked by the content filter: the Llama serverless body plus Azure OpenAI's
    `innererror` (`ContentFilteredError.body()`), with `x-ms-error-code: content_filter` (the meter reads it)."""

    def __init__(self, exc: ContentFilteredError) -> None:
        super().__init__(400, exc.code, exc.message, exc.param)
        self.filtered = exc

    def body(self) -> dict[str, Any]:
        return self.filtered.body()


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status, headers=dict(headers or {}), media_type="application/json")


def unauthorized_response() -> Response:
    """The MaaS 401, byte for byte (its spacing included): azure-core reads the top-level `message`."""
    body = json.dumps({"statusCode": 401, "message": AUTH_FAILED_MESSAGE}).encode()
    return Response(body, 401, headers={"x-ms-error-reason": "Invalid JWT."}, media_type="application/json")


def invalid(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    """A 400 for a request field that is wrong."""
    return ApiError(400, code, message, param)


def not_supported(param: str, message: str, value: Any = None) -> ApiError:
    """A 422 for a well-formed request this model cannot honour, in the D-API `parameter_not_supported` shape."""
    detail = {"loc": ["body", param], "input": value}
    return ApiError(422, "parameter_not_supported", message, param, extra={"detail": detail})


def not_found(message: str) -> ApiError:
    """A 404 whose message says "not found" (what the PY SDK tests look for), with the MaaS model-error headers."""
    headers = {"ms-azureml-model-error-reason": "model_error", "ms-azureml-model-error-statuscode": "404"}
    return ApiError(404, "NotFound", message, headers=headers)


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message, retry_after=RETRY_AFTER_UNAVAILABLE_S)


def internal_error() -> ApiError:
    return ApiError(
        500,
        "InternalServerError",
        "The server failed to process the request. Retry, and report the "
        "x-request-id of this response if it keeps failing.",
    )


def from_service_exception(exc: Exception) -> ApiError | None:
    """The API error for an exception raised by ChatService, or None when it is a bug (answer 500)."""
    if isinstance(exc, ContentFilteredError):  # raised before any output, so a 400 for streams too
        return ContentFilterApiError(exc)
    if isinstance(exc, InvalidSamplingParams):
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
