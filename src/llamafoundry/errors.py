"""The errors every layer shares: what the engine, the service and a forwarded model raise for a request they
cannot serve, each with a stable `code` (and the request field at fault, `param`). The API maps them to HTTP
statuses and Azure's error envelope (`api/errors.py`). A leaf module: imports nothing from the rest of the package.
"""

from __future__ import annotations


class EngineError(Exception):
    """A request the engine cannot serve. `code` is stable; the API maps it to a status and envelope."""

    code = "engine_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class GenerationError(EngineError):
    """A request that failed after it was admitted: its own sampling, detokenizing or constraining raised, or
    the model failed on its batch. Only that request ends (HTTP 500, or an error event once streaming)."""

    code = "generation_failed"

    @classmethod
    def caused_by(cls, exc: Exception) -> GenerationError:
        return cls(
            f"Generating this request's output failed ({type(exc).__name__}: {exc}). Other requests were not "
            "affected; retry, and report the x-request-id of this response if it keeps failing."
        )


class PromptTooLongError(EngineError):
    code = "context_length_exceeded"


class QueueFullError(EngineError):
    code = "queue_full"


class EngineUnavailableError(EngineError):
    code = "engine_unavailable"


class RequestTooLargeError(EngineError):
    """The request asks for more parallel sequences than the engine has slots."""

    code = "too_many_sequences"


class InvalidSamplingParams(ValueError):
    """A sampling setting is out of range or inconsistent with another one.

    Attributes:
        param: the request field at fault (the API reports it as `param`).
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
