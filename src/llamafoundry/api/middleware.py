"""Request context: an `x-request-id` on every response, the caller's `x-ms-client-request-id` echoed back,
and a JSON 500 (never a stack trace, never text/plain) for anything that escaped the handlers; a route written
with a trailing slash is served as the route.
"""

from __future__ import annotations

import logging
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamafoundry.api.errors import internal_error

logger = logging.getLogger(__name__)

_MAX_ECHOED_ID = 256


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            # `POST /chat/completions/` is that route: Starlette would answer 307 with an empty body, which curl
            # prints as nothing and httpx does not follow
            scope = {**scope, "path": path.rstrip("/") or "/"}
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [(b"x-request-id", request_id.encode())]
        client_id = _header(scope, b"x-ms-client-request-id")
        if client_id is not None and len(client_id) <= _MAX_ECHOED_ID:
            extra.append((b"x-ms-client-request-id", client_id))
        started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except ClientDisconnect:
            logger.debug("client disconnected during request %s", request_id)
        except Exception:
            logger.exception("request %s %s failed (x-request-id %s)", scope["method"], scope["path"], request_id)
            if not started:
                await internal_error().response()(scope, receive, send_with_ids)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None
