"""Admission checks: what makes a request impossible on this engine, found before it queues (a clear 4xx, not a
failure after the first byte)."""

from __future__ import annotations

from llamafoundry.engine.constraint import grammar_error
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.errors import EngineError, InvalidSamplingParams, PromptTooLongError, RequestTooLargeError
from llamafoundry.model.base import ModelRunner


def check_request(prompt_ids: list[int], params: SamplingParams, ctx_size: int, runner: ModelRunner) -> int:
    """Raise if the request can never run on `runner` with `ctx_size` positions per sequence; return its
    completion budget in tokens (max_tokens, or all the room the prompt leaves)."""
    if not prompt_ids:
        raise EngineError("The prompt is empty.", param="messages")
    num_prompt = len(prompt_ids)
    if num_prompt >= ctx_size:
        raise PromptTooLongError(
            f"The prompt has {num_prompt} tokens, but this model's context holds {ctx_size} tokens per "
            "request (prompt plus completion). Shorten the messages or start the server with a larger --ctx-size.",
            param="messages",
        )
    room = ctx_size - num_prompt
    if params.max_tokens is not None and params.max_tokens > room:
        raise PromptTooLongError(
            f"This model's context holds {ctx_size} tokens per request, but {num_prompt + params.max_tokens} "
            f"were requested ({num_prompt} in the messages, {params.max_tokens} in the completion). "
            "Lower max_tokens or shorten the messages.",
            param="max_tokens",
        )
    if params.num_candidates > runner.max_seqs:
        param = "best_of" if params.best_of is not None else "n"
        raise RequestTooLargeError(
            f"{param}={params.num_candidates} needs {params.num_candidates} parallel sequences, but this server "
            f"runs {runner.max_seqs}. Lower {param} or start the server with --parallel "
            f"{params.num_candidates} or more.",
            param=param,
        )
    if any(t >= runner.vocab_size for t in params.stop_token_ids):
        raise InvalidSamplingParams(
            "stop_token_ids", f"stop_token_ids must be below the vocabulary size ({runner.vocab_size})."
        )
    if any(t >= runner.vocab_size for t in params.logit_bias):
        raise InvalidSamplingParams(
            "logit_bias", f"logit_bias names token ids that must be below the vocabulary size ({runner.vocab_size})."
        )
    error = grammar_error(params.grammar) if params.grammar is not None else ""
    if error:  # checked now, so a bad one fails before output (the engine thread compiles it for the vocabulary)
        raise EngineError(
            f"{params.grammar_param} could not be turned into a grammar ({error}).", param=params.grammar_param
        )
    return params.max_tokens if params.max_tokens is not None else room
