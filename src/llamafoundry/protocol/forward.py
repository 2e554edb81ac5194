"""The wire format in the other direction: a `ChatRequest` written back into the body an OpenAI-compatible server
takes (vLLM, llama.cpp's llama-server, another llamafoundry, a deployment's replica), and that server's answers and
stream chunks read back into the service's records.

With `protocol.chat` (body -> request) and `protocol.render` (result -> body) this makes one codec: what the API
defines survives a forwarding gateway, tools and tool calls, `response_format`, logprobs, `n`/`best_of`, seeds,
stop lists and the Llama extras included (tests/protocol/test_codec.py checks the round trips).
"""

from __future__ import annotations

import json
from typing import Any

from llamafoundry.service.prompt_pieces import break_control_text
from llamafoundry.service.types import (
    ChatChoice,
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatResult,
    GenerationOptions,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

PASS_THROUGH = {"extra-parameters": "pass-through"}  # llamafoundry and Azure upstreams read the extras only then
STANDARD_FIELDS = ("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop")
LLAMA_EXTRAS = ("n", "best_of", "ignore_eos", "use_beam_search", "stop_token_ids", "skip_special_tokens", "top_k",
                "min_p", "repetition_penalty")  # fmt: skip
MAX_INT64 = 2**63


def request_body(request: ChatRequest, model: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The body for `request` (a chat, or a text completion's `prompt`) and the headers it needs (`extra-parameters:
    pass-through` when it uses fields outside the Azure spec). Fields the client did not send are not sent."""
    if request.prompt is not None:
        return _text_completion_body(request, model)
    body: dict[str, Any] = {"model": model, "messages": [message_body(m) for m in request.messages]}
    body.update(_standard(request.options))
    extras = _extras(request.options)
    body.update(extras)
    if request.tools:
        body["tools"] = request.tools
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.stream:
        body["stream"] = True
    return body, (PASS_THROUGH if extras else {})


def _text_completion_body(request: ChatRequest, model: str) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's completions body: `n`, `best_of` and an integer `logprobs` are its own fields there."""
    assert request.prompt is not None
    body: dict[str, Any] = {"model": model, "prompt": request.prompt, **_standard(request.options)}
    extras = _extras(request.options)
    for name in ("n", "best_of"):
        if name in extras:
            body[name] = extras.pop(name)
    if extras.pop("logprobs", None):
        body["logprobs"] = extras.pop("top_logprobs", 0)
    body.update(extras)
    if request.stream:
        body["stream"] = True
    return body, (PASS_THROUGH if extras else {})


def message_body(message: ChatMessage) -> dict[str, Any]:
    """A message as sent on. Its text has control-token text broken: vLLM and llama-server parse `<|eot_id|>`
    written in a message as the real token (this server tokenizes message text as text)."""
    content = break_control_text(message.content) if isinstance(message.content, str) else message.content
    out: dict[str, Any] = {"role": message.role, "content": message.content_parts or content}
    for name in ("tool_calls", "tool_call_id", "name"):
        if getattr(message, name) is not None:
            out[name] = getattr(message, name)
    return out


def _standard(options: GenerationOptions) -> dict[str, Any]:
    body = {name: getattr(options, name) for name in STANDARD_FIELDS if getattr(options, name) is not None}
    if "seed" in body and body["seed"] >= MAX_INT64:
        body["seed"] -= 2**64  # the same seed as upstreams take it: int64
    return body


def _extras(options: GenerationOptions) -> dict[str, Any]:
    """The Llama extras that were sent, logprobs in OpenAI's form (`logprobs: true, top_logprobs: N`), which
    vLLM and llama-server read too."""
    extras = {name: getattr(options, name) for name in LLAMA_EXTRAS if getattr(options, name) is not None}
    logprobs, top = options.logprobs, options.top_logprobs
    if logprobs is not None and not isinstance(logprobs, bool):
        logprobs, top = True, logprobs  # the Llama integer form
    if logprobs is not None:
        extras["logprobs"] = logprobs
    if top is not None:
        extras["top_logprobs"] = top
    if options.logit_bias is not None:
        extras["logit_bias"] = {str(token): bias for token, bias in options.logit_bias.items()}  # JSON's keys
    return extras


# ---- answers -------------------------------------------------------------------------------------------------


def result_from_body(answer: dict[str, Any]) -> ChatResult:
    """A chat completion's or a text completion's answer (`choices[].message` or `choices[].text`)."""
    choices = []
    for choice in answer.get("choices") or []:
        message = choice.get("message") or {}
        calls = [_tool_call(c) for c in message.get("tool_calls") or []]
        choices.append(
            ChatChoice(
                index=int(choice.get("index", 0)),
                text=message.get("content") or choice.get("text") or "",
                finish_reason=choice.get("finish_reason") or "stop",
                logprobs=logprobs_from_body(choice.get("logprobs")),
                tool_calls=calls or None,
            )
        )
    return ChatResult(choices=sorted(choices, key=lambda c: c.index), usage=usage_from_body(answer.get("usage")))


def deltas_from_chunk(chunk: dict[str, Any]) -> list[ChatDelta]:
    """The deltas of one stream chunk (chat or text completion)."""
    deltas = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        calls = [_tool_call_delta(c, i) for i, c in enumerate(delta.get("tool_calls") or [])]
        deltas.append(
            ChatDelta(
                index=int(choice.get("index", 0)),
                text=delta.get("content") or choice.get("text") or "",
                finish_reason=choice.get("finish_reason"),
                logprobs=logprobs_from_body(choice.get("logprobs")),
                tool_calls=calls or None,
            )
        )
    return deltas


def usage_from_body(usage: dict[str, Any] | None) -> Usage:
    usage = usage or {}
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _tool_call(call: dict[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    return ToolCall(str(call.get("id") or ""), str(function.get("name") or ""), _arguments(function.get("arguments")))


def _tool_call_delta(call: dict[str, Any], position: int) -> ToolCallDelta:
    function = call.get("function") or {}
    return ToolCallDelta(
        index=int(call.get("index", position)),
        arguments=_arguments(function.get("arguments")) if function.get("arguments") is not None else "",
        id=call.get("id"),
        name=function.get("name"),
    )


def _arguments(value: Any) -> str:
    """A call's arguments as the JSON text the API carries (some servers send an object)."""
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


def logprobs_from_body(body: Any) -> list[TokenLogprob] | None:
    """Chat logprobs (`{"content": [...]}`) or OpenAI's completions form (parallel lists)."""
    if isinstance(body, dict) and body.get("tokens") is not None:
        return _text_logprobs(body)
    if not isinstance(body, dict) or body.get("content") is None:
        return None
    return [
        TokenLogprob(
            token=item["token"],
            logprob=float(item["logprob"]),
            bytes=list(item.get("bytes") or []),
            top_logprobs=[
                TopLogprob(t["token"], float(t["logprob"]), list(t.get("bytes") or []))
                for t in item.get("top_logprobs") or []
            ],
        )
        for item in body["content"]
    ]


def _text_logprobs(body: dict[str, Any]) -> list[TokenLogprob]:
    """OpenAI's completions form: parallel `tokens`, `token_logprobs`, `top_logprobs` ({token: logprob})."""
    tops = body.get("top_logprobs") or []
    out = []
    for i, (token, logprob) in enumerate(zip(body["tokens"], body.get("token_logprobs") or [], strict=False)):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append(
            TokenLogprob(
                token=token,
                logprob=float(logprob if logprob is not None else 0.0),
                bytes=list(token.encode("utf-8")),
                top_logprobs=[TopLogprob(t, float(lp), list(t.encode("utf-8"))) for t, lp in top.items()],
            )
        )
    return out
