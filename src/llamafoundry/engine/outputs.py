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


