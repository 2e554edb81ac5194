"""Typed records the engine hands back to its callers (the service layer)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FinishReason(enum.StrEnum):
    """Why a choice stopped. Values are the API's `finish_reason` strings."""

    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one generated token (log-softmax of the raw logits), OpenAI shape."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass
class ChoiceDelta:
    """New output of one choice since the previous RequestOutput.

    `text` never contains a partial stop string nor a split UTF-8 character. `finish_reason` is set on the
    last delta of the choice.
    """

    index: int
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None


@dataclass
class RequestOutput:
    """One update for one request: the deltas of any choices that advanced, and token counts so far."""

    request_id: str
    deltas: list[ChoiceDelta]
    num_prompt_tokens: int
    num_completion_tokens: int
    finished: bool = False


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
