"""The seam between the API and whatever answers a chat request: the server's own model (`service.chat.ChatService`),
a deployment forwarded to other servers (`platform.upstream.UpstreamChatService`), and the content filter over
either (`safety.backend.FilteredChatBackend`).

How the API calls it, once per request: `prepare(request)` (the prompt rendered and counted, the engine's settings
checked; errors here are the request's own and nothing has been generated), then admission (rate limits, which
read `prepared.num_prompt_tokens`), then `complete(prepared)` or `stream(prepared)`.
"""

from __future__ import annotations

from typing import Any, Protocol

from llamafoundry.service.types import ChatRequest, ChatResult, ChatStream, PreparedRequest


class ChatBackend(Protocol):
    """What the API needs of a served model.

    Attributes:
        model_name: reported by /info and in every answer's `model`.
        model_provider: `model_provider_name` in /info.
        max_context: tokens one request may use (prompt + completion).
    """

    model_name: str
    model_provider: str
    max_context: int

    @property
    def is_ready(self) -> bool: ...

    def status(self) -> dict[str, Any]:
        """Runtime state for the management API, `deploy show` and `ps`: at least `state`; replicas, upstreams and
        requests in flight where the backend has them."""
        ...

    def failure_note(self) -> str | None:
        """Why the backend is not answering when it is not (a replica that crashed and is restarting), as a
        sentence for the 503; None when there is nothing to say beyond "loading"."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def prepare(self, request: ChatRequest) -> PreparedRequest:
        """Check the request and turn it into what generation needs, once (off the event loop where it tokenizes).

        Raises:
            InvalidSamplingParams, SchemaNotSupportedError, ChatFormatError, EngineError: the request's own faults.
        """
        ...

    async def complete(self, prepared: PreparedRequest) -> ChatResult: ...

    async def stream(self, prepared: PreparedRequest) -> ChatStream:
        """Submit the request now (errors are raised here, before any output) and return its updates."""
        ...
