"""The engine's settings for a request (`SamplingParams`), from what the client asked (`GenerationOptions`).

The one place where the API's defaults and cross-field rules become engine parameters, for every backend: a
request forwarded to another server is checked here too, so it is refused for the same reasons as a local one.
"""

from __future__ import annotations

from llamafoundry.engine.sampling_params import MAX_TOP_LOGPROBS, SamplingParams
from llamafoundry.errors import InvalidSamplingParams
from llamafoundry.service.types import ChatRequest, GenerationOptions

# The Azure spec's default (TSP/OAS25 ChatCompletionsOptions.temperature); OpenAI's is 1.
DEFAULT_TEMPERATURE = 0.7
# top_p 0 is in the spec's range but means "no token"; the limit is "only the most likely token".
TOP_P_FLOOR = 1e-9


def sampling_params(request: ChatRequest) -> SamplingParams:
    """The engine's settings for `request` (without its grammar: `structured.with_grammar` adds that).

    Raises:
        InvalidSamplingParams: a field out of range, or fields that contradict each other (named in `param`).
    """
    options = request.options
    logprobs, top_logprobs = _logprobs(options)
    use_beam_search = bool(options.use_beam_search)
    temperature = options.temperature
    if temperature is None:  # beam search is greedy by definition: do not make users spell it out
        temperature = 0.0 if use_beam_search else DEFAULT_TEMPERATURE
    params = SamplingParams(
        max_tokens=options.max_tokens,
        temperature=temperature,
        top_p=max(options.top_p if options.top_p is not None else 1.0, TOP_P_FLOOR),
        presence_penalty=options.presence_penalty or 0.0,
        frequency_penalty=options.frequency_penalty or 0.0,
        # The sampler seeds numpy, which takes non-negative integers; any int64 (or uint64) maps onto one.
        seed=options.seed % 2**64 if options.seed is not None else None,
        stop=list(options.stop or []),
        stop_token_ids=list(options.stop_token_ids or []),
        ignore_eos=bool(options.ignore_eos),
        skip_special_tokens=options.skip_special_tokens if options.skip_special_tokens is not None else True,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        n=options.n or 1,
        best_of=options.best_of,
        use_beam_search=use_beam_search,
        top_k=max(options.top_k or 0, 0),  # vLLM's -1 is "off", as 0
        min_p=options.min_p or 0.0,
        repetition_penalty=options.repetition_penalty if options.repetition_penalty is not None else 1.0,
        logit_bias=dict(options.logit_bias or {}),
    )
    if request.stream and params.needs_all_before_output:
        param = "use_beam_search" if params.use_beam_search else "best_of"
        raise InvalidSamplingParams(
            param,
            f"{param} cannot be used with stream: true, because the returned choices are only known when every "
            "candidate has finished. Send stream: false, or leave best_of equal to n.",
        )
    return params


def _logprobs(options: GenerationOptions) -> tuple[bool, int]:
    """(logprobs, top_logprobs) from OpenAI's `logprobs: true, top_logprobs: N` or the Llama `logprobs: N`."""
    value, top = options.logprobs, options.top_logprobs
    if isinstance(value, bool) or value is None:
        if top and not value:
            raise InvalidSamplingParams("top_logprobs", "top_logprobs needs logprobs: true.")
        return bool(value), top or 0
    if top is not None and top != value:
        raise InvalidSamplingParams(
            "top_logprobs",
            f"logprobs: {value} already asks for the {value} most likely tokens; send either an integer logprobs, "
            "or logprobs: true with top_logprobs.",
        )
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidSamplingParams("logprobs", f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {value}.")
    return True, value
