"""A chat service whose model runs behind OpenAI-compatible servers: an `--upstream` URL, or the replica
processes of a local deployment. It has the interface of `service.chat.ChatService`, so the API serves it the
same way; requests and answers are translated to and from OpenAI chat-completions bodies.

Image content parts are forwarded as the client sent them (the API keeps them in `ChatMessage.content_parts`
for deployments whose catalog model takes images).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from llamafoundry.engine.outputs import TokenLogprob, TopLogprob
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.errors import EngineError, EngineUnavailableError, QueueFullError
from llamafoundry.model.remote import CHAT, TEXT_COMPLETIONS, RemoteChatClient, UpstreamError
from llamafoundry.platform.prompt_tokens import llama_prompt_counter
from llamafoundry.service.prompt_pieces import break_control_text
from llamafoundry.service.types import ChatChoice, ChatDelta, ChatRequest, ChatResult, ChatUpdate, Usage

logger = logging.getLogger(__name__)

# A server that breaks a connection mid-answer has usually died: its provider learns it at once (a replica's exit
# wakes its watcher), so the error waits this long at most for the provider to say which replica and why.
CRASH_NOTE_WAIT_S = 0.5


class UpstreamProvider(Protocol):
    """Where the servers are: started with the service, stopped with it."""

    async def start(self) -> tuple[list[str], str | None]:
        """Start (if there is anything to start) and return the base URLs and the key they want."""
        ...

    async def stop(self) -> None: ...

    @property
    def is_ready(self) -> bool: ...

    def failure_note(self) -> str | None:
        """A sentence on why the servers may not be answering (a replica that crashed), or None."""
        ...


class FixedUpstream:
    """An existing server at `base_url` (a `deploy create --upstream` deployment)."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url
        self.api_key = api_key

    async def start(self) -> tuple[list[str], str | None]:
        return [self.base_url], self.api_key

    async def stop(self) -> None:
        return None

    @property
    def is_ready(self) -> bool:
        return True

    def failure_note(self) -> str | None:
        return None


class UpstreamChatService:
    """Forwards chat requests.

    Args:
        provider: the servers.
        model_name: reported by /info and in responses (the catalog model name).
        model_provider: reported by /info.
        max_context: the model's context, in tokens.
        upstream_model: the `model` sent upstream (vLLM wants its served model name); the model name if None.
        verify_tls: how to check the upstream's TLS certificate (httpx's `verify`).
    """

    def __init__(
        self,
        provider: UpstreamProvider,
        model_name: str,
        model_provider: str,
        max_context: int,
        upstream_model: str | None = None,
        verify_tls: bool | str = True,
    ) -> None:
        self.provider = provider
        self.model_name = model_name
        self.model_provider = model_provider
        self.max_context = max_context
        self.upstream_model = upstream_model or model_name
        self.verify_tls = verify_tls
        self.client: RemoteChatClient | None = None

    @property
    def is_ready(self) -> bool:
        return self.client is not None and self.provider.is_ready

    def failure_note(self) -> str | None:
        note = self.provider.failure_note()
        return None if note is None else f"{note} It is being restarted; retry in a few seconds."

    async def start(self) -> None:
        base_urls, api_key = await self.provider.start()
        self.client = RemoteChatClient(base_urls, api_key, self.verify_tls)
        # Load the tokenizer (~0.25 s) now rather than on a first request; the service is ready meanwhile.
        await asyncio.to_thread(llama_prompt_counter)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        await self.provider.stop()

    def count_tokens(self, request: ChatRequest) -> int:
        """The prompt's tokens with the Llama 3 tokenizer and Meta's template of the model (`prompt_tokens.py`);
        usage reported afterwards is the upstream's own count."""
        return llama_prompt_counter().count(request, self.model_name)

    def _client(self) -> RemoteChatClient:
        if self.client is None:
            raise EngineUnavailableError("The deployment is starting; retry in a few seconds.")
        return self.client

    async def complete(self, request: ChatRequest) -> ChatResult:
        body, headers = openai_body(request, self.upstream_model)
        try:
            answer = await self._client().complete(body, headers, _path(request))
        except UpstreamError as exc:
            raise engine_error(exc, await self._note_on(exc)) from None
        return chat_result(answer)

    async def stream(self, request: ChatRequest) -> UpstreamStream:
        body, headers = openai_body(request, self.upstream_model)
        body["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._client().stream(body, headers, _path(request))
        except UpstreamError as exc:
            raise engine_error(exc, await self._note_on(exc)) from None
        return UpstreamStream(chunks, self._note_on)

    async def _note_on(self, exc: UpstreamError) -> str | None:
        """The provider's word on why `exc` happened; for a connection that broke under a request, it is given a
        moment to notice a replica that died."""
        note = self.failure_note()
        if note is not None or exc.status is not None or exc.is_unsent:
            return note
        deadline = time.monotonic() + CRASH_NOTE_WAIT_S
        while note is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            note = self.failure_note()
        return note


def _path(request: ChatRequest) -> str:
    """A text completion (a raw prompt) goes to the upstream's /v1/completions, a chat to /v1/chat/completions."""
    return TEXT_COMPLETIONS if request.prompt is not None else CHAT


class UpstreamStream:
    """Satisfies `service.types.ChatStream` over the upstream's chunks.

    Args:
        chunks: the upstream's chunks (`RemoteChatClient.stream`).
        note_on: why an upstream error happened, in the provider's words (a replica that died), if it knows.
    """

    def __init__(
        self,
        chunks: AsyncGenerator[dict[str, Any], None],
        note_on: Callable[[UpstreamError], Awaitable[str | None]] | None = None,
    ) -> None:
        self._chunks = chunks
        self._note_on = note_on
        self._usage = Usage(0, 0)
        self._updates_gen: AsyncGenerator[ChatUpdate, None] | None = None
        self._closing: asyncio.Future[None] | None = None

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        self._updates_gen = self._updates()
        return self._updates_gen

    async def _updates(self) -> AsyncGenerator[ChatUpdate, None]:
        num_deltas = 0
        try:
            async for chunk in self._chunks:
                deltas = [_delta(choice) for choice in chunk.get("choices") or []]
                num_deltas += sum(1 for d in deltas if d.text)
                usage = chunk.get("usage")
                self._usage = _usage(usage) if usage else Usage(self._usage.prompt_tokens, num_deltas)
                yield ChatUpdate(deltas=deltas, usage=self._usage)
        except UpstreamError as exc:
            if exc.status in (None, 503):  # the server went away mid-answer (a replica died or stops): retry
                note = await self._note_on(exc) if self._note_on is not None else None
                raise EngineUnavailableError(note or broken_stream_message(exc)) from None
            raise RuntimeError(f"upstream stream failed: {exc.message}") from None
        finally:
            await self.aclose()
        yield ChatUpdate(deltas=[], usage=self._usage, finished=True)

    async def aclose(self) -> None:
        await self._chunks.aclose()

    def abort(self) -> None:
        """Close the HTTP stream (the upstream then aborts generation), unless iteration is closing it."""
        gen = self._updates_gen if self._updates_gen is not None else self._chunks
        if self._closing is None and not getattr(gen, "ag_running", False):
            self._closing = asyncio.ensure_future(gen.aclose())


def openai_body(request: ChatRequest, model: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The OpenAI body for `request` (a chat, or a text completion's `prompt`), and the headers it needs
    (`extra-parameters: pass-through` when it uses parameters outside the Azure spec, which llamafoundry upstreams
    honour only then)."""
    params = request.params
    if request.prompt is not None:
        return _text_completion_body(request.prompt, params, model)
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
    body.update(_standard(params))
    extras = _extras(params)
    body.update(extras)
    if request.tools:
        body["tools"] = request.tools
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    return body, ({"extra-parameters": "pass-through"} if extras else {})


def _text_completion_body(prompt: str, params: SamplingParams, model: str) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's completions body: `n`, `best_of` and an integer `logprobs` are its own fields there."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, **_standard(params)}
    extras = _extras(params)
    for name in ("n", "best_of"):
        if name in extras:
            body[name] = extras.pop(name)
    if extras.pop("logprobs", None):
        body["logprobs"] = extras.pop("top_logprobs")
    body.update(extras)
    return body, ({"extra-parameters": "pass-through"} if extras else {})


def _message(message: Any) -> dict[str, Any]:
    """A message as sent upstream. Its text has control-token text broken: vLLM and llama-server parse
    `<|eot_id|>` written in a message as the real token (this server tokenizes message text as text)."""
    parts = getattr(message, "content_parts", None)
    content = break_control_text(message.content) if isinstance(message.content, str) else message.content
    out: dict[str, Any] = {"role": message.role, "content": parts if parts is not None else content}
    for name in ("tool_calls", "tool_call_id", "name"):
        if getattr(message, name, None) is not None:
            out[name] = getattr(message, name)
    return out


def _standard(params: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {"temperature": params.temperature}
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.top_p != 1.0:
        body["top_p"] = params.top_p
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.seed is not None:
        body["seed"] = params.seed if params.seed < 2**63 else params.seed - 2**64  # upstreams take int64
    if params.stop:
        body["stop"] = list(params.stop)
    return body


def _extras(params: SamplingParams) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if params.n != 1:
        extras["n"] = params.n
    if params.logprobs:
        extras["logprobs"] = True
        extras["top_logprobs"] = params.top_logprobs
    if params.best_of is not None:
        extras["best_of"] = params.best_of
    if params.use_beam_search:
        extras["use_beam_search"] = True
    if params.ignore_eos:
        extras["ignore_eos"] = True
    if params.stop_token_ids:
        extras["stop_token_ids"] = list(params.stop_token_ids)
    if not params.skip_special_tokens:
        extras["skip_special_tokens"] = False
    return extras


def chat_result(answer: dict[str, Any]) -> ChatResult:
    """A chat completion's or a text completion's answer (`choices[].message.content` or `choices[].text`)."""
    choices = []
    for choice in answer.get("choices") or []:
        message = choice.get("message") or {}
        choices.append(
            ChatChoice(
                index=int(choice.get("index", 0)),
                text=message.get("content") or choice.get("text") or "",
                finish_reason=choice.get("finish_reason") or "stop",
                logprobs=_logprobs(choice.get("logprobs")),
            )
        )
    return ChatResult(choices=sorted(choices, key=lambda c: c.index), usage=_usage(answer.get("usage") or {}))


def _delta(choice: dict[str, Any]) -> ChatDelta:
    delta = choice.get("delta") or {}
    return ChatDelta(
        index=int(choice.get("index", 0)),
        text=delta.get("content") or choice.get("text") or "",
        finish_reason=choice.get("finish_reason"),
        logprobs=_logprobs(choice.get("logprobs")),
    )


def _usage(usage: dict[str, Any]) -> Usage:
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _logprobs(body: Any) -> list[TokenLogprob] | None:
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


def broken_stream_message(exc: UpstreamError) -> str:
    return (
        f"The model's server stopped answering during the stream ({exc.message}); the answer is incomplete. "
        "Retry in a few seconds."
    )


def engine_error(exc: UpstreamError, failure_note: str | None = None) -> EngineError:
    """The engine error the API already maps to a status: 400 for the request's faults, 429 when the upstream
    is busy, 503 when it cannot serve (with `failure_note`, the provider's word on why, when it has one)."""
    if failure_note is not None and (exc.status is None or exc.status == 503):
        return EngineUnavailableError(failure_note)
    if exc.status is None:
        return EngineUnavailableError(
            f"The model's server cannot be reached ({exc.message}); retry in a few seconds, and check that the "
            "upstream server is running if it keeps failing."
        )
    if exc.status == 429:
        return QueueFullError(f"The model's server is busy: {exc.message}")
    if exc.status in (401, 403):
        return EngineUnavailableError(
            "The model's server refused the gateway's credentials. The deployment's --upstream-key needs fixing."
        )
    if 400 <= exc.status < 500 and exc.status != 404:
        return EngineError(exc.message, exc.param)
    return EngineUnavailableError(f"The model's server failed ({exc.status}): {exc.message}")
