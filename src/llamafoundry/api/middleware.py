"""Request context: an `x-request-id` on every response, the caller's `x-ms-client-request-id` echoed back,
and a JSON 500 (never a stack trace, never text/plain) for anything that escaped the handlers; a route written
with a trailing slash is served as the route; one access-log line per request, and the request id on every log
line written while it is served (`logs.request_id_var`).
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamafoundry.api.context import context_in
from llamafoundry.api.errors import error_response
from llamafoundry.logs import request_id_var
from llamafoundry.protocol.errors import internal_error

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("llamafoundry.access")
STATUS_CLIENT_CLOSED = 499  # the access line's status of a response the client did not wait for (nginx's code)

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
        context_in(scope).request_id = request_id
        extra = [(b"x-request-id", request_id.encode())]
        client_id = _header(scope, b"x-ms-client-request-id")
        if client_id is not None and len(client_id) <= _MAX_ECHOED_ID:
            extra.append((b"x-ms-client-request-id", client_id))
        started, status, is_complete, began = False, 0, False, time.monotonic()
        context = request_id_var.set(request_id)

        async def send_with_ids(message: Message) -> None:
            nonlocal started, status, is_complete
            if message["type"] == "http.response.start":
                started, status = True, int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                is_complete = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except ClientDisconnect:
            pass
        except Exception:
            logger.exception("request %s %s failed (x-request-id %s)", scope["method"], scope["path"], request_id)
            if not started:
                await error_response(internal_error())(scope, receive, send_with_ids)
        finally:
            if not is_complete:
                logger.debug("the client disconnected before the response to %s %s ended", scope["method"], path)
            _access_line(scope, status if is_complete else STATUS_CLIENT_CLOSED, time.monotonic() - began)
            request_id_var.reset(context)


def _access_line(scope: Scope, status: int, seconds: float) -> None:
    """`POST /chat/completions 200 153 ms deployment=chat key=key-3f2a...`: never a key, a token or a prompt."""
    context = context_in(scope)
    deployment = context.target.name if context.target is not None else None
    key_id = context.key_id
    fields = {"method": scope["method"], "path": scope["path"], "status": status,
              "duration_ms": round(seconds * 1000, 1), "deployment": deployment, "key_id": key_id}  # fmt: skip
    who = "".join(f" {label}={value}" for label, value in (("deployment", deployment), ("key", key_id)) if value)
    access_logger.info("%s %s %d %.0f ms%s", scope["method"], scope["path"], status, seconds * 1000, who, extra=fields)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None
