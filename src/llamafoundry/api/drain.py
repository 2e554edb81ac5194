"""Stopping with requests in flight (Ctrl-C, SIGTERM from a supervisor).

uvicorn stops accepting connections, waits up to its graceful-shutdown timeout for running requests, then cancels
them, which cuts a stream off mid-body and turns a waiting answer into a plain-text 500. Instead, running
requests get the grace period minus a margin to finish, and then end as the API says errors end: an answer not
sent yet is a 503 with Retry-After, a stream gets an error chunk. Requests arriving while the server drains (on
open keep-alive connections) get the same 503.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import uvicorn

from llamafoundry.protocol.errors import ApiError
from llamafoundry.service.types import ChatStream, ChatUpdate

MARGIN_S = 1.0  # before uvicorn's own deadline: time to write the errors
RETRY_AFTER_S = 5


class ServerStopping(Exception):
    """The drain deadline passed while a request was still running."""


def stopping_error() -> ApiError:
    return ApiError(503, "ServiceUnavailable", "The server is shutting down; retry shortly.", retry_after=RETRY_AFTER_S)


class Drain:
    """The app's shutdown state: `begin(grace_s)` when the server starts to stop; `deadline` is set when running
    requests must end."""

    def __init__(self) -> None:
        self.is_draining = False
        self.deadline = asyncio.Event()

    def begin(self, grace_s: float) -> None:
        self.is_draining = True
        asyncio.get_running_loop().call_later(max(0.0, grace_s - MARGIN_S), self.deadline.set)


async def until_deadline(
    stream: ChatStream, drain: Drain | None, idle_s: float | None = None
) -> AsyncIterator[ChatUpdate | None]:
    """`stream`'s updates until it ends, or ServerStopping once the `drain` deadline has passed (never without a
    drain). With `idle_s`, also None after every `idle_s` seconds without an update (the stream is still
    working: a long prompt being computed, or a wait for a free slot)."""
    updates = stream.__aiter__()
    deadline = asyncio.ensure_future(drain.deadline.wait()) if drain else asyncio.get_running_loop().create_future()
    following: asyncio.Future[ChatUpdate] | None = None
    try:
        while True:
            following = asyncio.ensure_future(updates.__anext__())
            while not following.done():
                await asyncio.wait({following, deadline}, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
                if deadline.done() and not following.done():
                    raise ServerStopping()
                if not following.done():
                    yield None
            try:
                update = following.result()
            except StopAsyncIteration:
                return
            yield update
    finally:  # the deadline passed, or the reader went away (a client disconnect cancels it while it waits)
        deadline.cancel()
        if following is not None and not following.done():
            following.cancel()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which first tells the app it is stopping: running requests then end with proper errors
    before uvicorn's graceful timeout cancels them."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.begin(self.config.timeout_graceful_shutdown or 0.0)
        await super().shutdown(sockets)
