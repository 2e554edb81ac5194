"""The API's errors as data: status, stable code, a sentence, the field at fault, and Azure's envelope (`body()`).

Parsing a request body (`protocol.chat`, `protocol.completions`) raises these; the HTTP layer turns them into
responses (`api.errors.error_response`), and a forwarding gateway reads an upstream's envelope back into them.
Every body is the envelope azure-core's `ODataV4Format` parses and OpenAI clients read:
`{"error": {"code", "message", "param", "type": null, "status"}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Seconds a client should wait before retrying. Only 429 and 503 carry Retry-After: azure-core retries
# any status that carries it, a 400 included.
RETRY_AFTER_BUSY_S = 1
RETRY_AFTER_UNAVAILABLE_S = 5


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

    def response_headers(self) -> dict[str, str]:
        """`x-ms-error-code`, `Retry-After` (429 and 503) and the error's own headers."""
        headers = {"x-ms-error-code": self.code, **self.headers}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


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
