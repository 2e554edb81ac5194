"""Chat updates -> the canonical SSE stream, and client-disconnect handling for both kinds of response.

The stream (contract §5.2): each choice's first chunk is `{"role": "assistant", "content": ""}`; then one chunk
per choice delta; the chunk that finishes a choice carries `finish_reason`; the last choice-bearing chunk also
carries `usage`; then `data: [DONE]`. To put usage on a chunk that already went out would be impossible, so a
chunk that finishes a choice is held back until the next delta or the end of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, Protocol, TypeVar

from starlette.types import Receive

from llamafoundry.api.drain import Drain, ServerStopping, stopping_error, until_deadline
from llamafoundry.api.errors import from_service_exception
from llamafoundry.api.sse import DONE, KEEPALIVE_COMMENT, encode_event, wait_for_disconnect
from llamafoundry.protocol.errors import ApiError, internal_error
from llamafoundry.protocol.render import usage_body
from llamafoundry.protocol.responses_render import Event, ResponseEvents
from llamafoundry.service.types import ChatDelta, ChatStream, Usage

logger = logging.getLogger(__name__)
T = TypeVar("T")


class StreamRenderer(Protocol):
    """The chunks of one stream: `render.ChunkRenderer` (chat) or `completions.TextChunkRenderer` (text)."""

    def role(self, index: int, prompt_filter_results: list[dict[str, Any]] | None = None) -> dict[str, Any] | None: ...

    def delta(self, delta: ChatDelta) -> dict[str, Any]: ...

    def usage_only(self, usage: Usage) -> dict[str, Any]: ...

    def error(self, body: dict[str, Any]) -> dict[str, Any]: ...


async def chat_events(
    stream: ChatStream,
    renderer: StreamRenderer,
    num_choices: int,
    prompt_filter_results: list[dict[str, Any]] | None = None,
    drain: Drain | None = None,
    keepalive_s: float | None = None,
) -> AsyncGenerator[bytes, None]:
    """The SSE bytes of one chat stream. Aborts generation when closed early (client gone) or on failure.

    `prompt_filter_results` (the content filter's prompt annotation) go on the first chunk; choices' chunks
    carry their `content_filter_results` as the filter releases or blocks their text. A stream still running
    at the `drain` deadline (the server is stopping) ends with an error chunk. After `keepalive_s` seconds
    without an update from the model the first choice gets an empty delta (`"content": ""`, a chunk every SDK
    parser takes), and again every `keepalive_s` seconds (`ServeSettings.stream_keepalive_s`); None: never.
    """
    finished = False
    try:
        for index in range(num_choices):
            first = renderer.role(index, prompt_filter_results if index == 0 else None)
            if first is not None:  # a chat choice's role chunk; a text completion has none
                yield encode_event(first)
        held: dict[str, Any] | None = None
        usage: Usage | None = None
        async for update in until_deadline(stream, drain, keepalive_s):
            if update is None:
                if held is None:  # a held finishing chunk goes out only with the usage or the next delta
                    yield encode_event(renderer.delta(ChatDelta(0, "")))
                continue
            usage = update.usage
            finished = finished or update.finished
            for delta in update.deltas:
                if not delta.text and delta.finish_reason is None and not delta.logprobs and not delta.tool_calls:
                    continue
                if held is not None:
                    yield encode_event(held)
                chunk = renderer.delta(delta)
                held = chunk if delta.finish_reason is not None else None
                if held is None:
                    yield encode_event(chunk)
        if held is None and usage is not None:
            held = renderer.usage_only(usage)
        if held is not None:
            if usage is not None:
                held["usage"] = usage_body(usage)
            yield encode_event(held)
        yield encode_event(DONE)
    except ServerStopping:
        yield encode_event(renderer.error(error_event_body(stopping_error())))
    except Exception as exc:
        # The status line went out long ago: say it in the stream (OpenAI clients raise on an `error` chunk;
        # Azure clients skip it) and end without [DONE].
        yield encode_event(renderer.error(error_event_body(_stream_failure(exc))))
    finally:
        if not finished:
            stream.abort()


async def response_events(
    stream: ChatStream, events: ResponseEvents, drain: Drain | None = None, keepalive_s: float | None = None
) -> AsyncGenerator[bytes, None]:
    """The SSE bytes of one streamed Responses API answer (`protocol.responses_render`): each event named by its
    type; keep-alives are SSE comments; a failure after the start is a `response.failed` event. Aborts generation
    when closed early (client gone) or on failure, as `chat_events` does."""
    finished = False
    try:
        for event in events.start():
            yield _named(event)
        usage: Usage | None = None
        async for update in until_deadline(stream, drain, keepalive_s):
            if update is None:
                yield KEEPALIVE_COMMENT
                continue
            usage, finished = update.usage, finished or update.finished
            for delta in update.deltas:
                for event in events.delta(delta):
                    yield _named(event)
        for event in events.finish(usage):
            yield _named(event)
    except ServerStopping:
        for event in events.failed(stopping_error().body()["error"]):
            yield _named(event)
    except Exception as exc:
        for event in events.failed(_stream_failure(exc).body()["error"]):
            yield _named(event)
    finally:
        if not finished:
            stream.abort()


def _named(event: Event) -> bytes:
    return encode_event(event, event=event["type"])


def _stream_failure(exc: Exception) -> ApiError:
    """A known failure says its cause (this request's generation failed, a replica that died: a 503 to retry, the
    engine stopping); anything else is a bug, logged with its traceback, and a 500."""
    error = from_service_exception(exc)
    if error is None:
        logger.exception("chat stream failed after the response started")
        return internal_error()
    logger.warning("chat stream ended by an error: %s", error.message)
    return error


def error_event_body(error: ApiError) -> dict[str, Any]:
    """The envelope of an error event. A stream cannot send `Retry-After` once its headers went out (and an SSE
    `retry:` line breaks the Azure SDK's parser), so a 503's wait rides in the error object: `retry_after`, in
    seconds, beside `status`."""
    body = error.body()
    if error.retry_after is not None:
        body["error"]["retry_after"] = error.retry_after
    return body


async def until_disconnect(receive: Receive, work: Awaitable[T], drain: Drain | None = None) -> T | None:
    """Await `work`; if the client disconnects first, cancel it (which aborts its generation) and return None.
    If the `drain` deadline passes first (the server is stopping), cancel it and raise the 503 that says so.

    Call only after the request body has been read: `receive` then yields nothing but `http.disconnect`.
    """
    task = asyncio.ensure_future(work)
    watchers: list[asyncio.Future[Any]] = [asyncio.ensure_future(wait_for_disconnect(receive))]
    if drain is not None:
        watchers.append(asyncio.ensure_future(drain.deadline.wait()))
    try:
        await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (*watchers, task) if not task.done() else watchers:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
    if task.cancelled():
        if drain is not None and drain.deadline.is_set():
            raise stopping_error()
        return None
    return task.result()
