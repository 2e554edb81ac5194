"""One request's context, built as the request goes and read by whoever needs it, through one typed record
instead of loose `request.state` attributes.

- the request id middleware (`middleware.py`) creates it with the request id;
- the accounting middleware (`usage.py`) puts the usage record of a metered route in it;
- authorization (`routing.authorize_request`, `management_access`) sets the target, the caller and its key id;
- `body.read_body` keeps the body in it once read (authorization may read a body's `model` before the handler);
- the handler, accounting, the usage journal (`recording.py`) and the access log read it.

It lives in the ASGI scope's state, so the pure-ASGI middlewares and the route handlers see one object.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

if TYPE_CHECKING:
    from llamafoundry.api.limits import RequestUsage
    from llamafoundry.platform.access import Caller
    from llamafoundry.platform.gateway import Target

_KEY = "context"


@dataclass
class RequestContext:
    """What the API knows of one request.

    Attributes:
        request_id: the `x-request-id` of the request and of every log line it causes.
        usage: the usage record of a metered (generating) route; None elsewhere.
        target: the model or deployment the request goes to, once authorized.
        caller: who sent it (its key id or token subject, its project), once authorized.
        key_id: the id of the key (or `token:<subject>`, or a management actor) that opened it; never the key.
        body: the body, once read (it can be read only once from the client).
    """

    request_id: str = ""
    usage: RequestUsage | None = None
    target: Target | None = None
    caller: Caller | None = None
    key_id: str | None = None
    body: bytes | None = None


def context_of(request: Request) -> RequestContext:
    """The request's context (created on first use)."""
    return context_in(request.scope)


def context_in(scope: MutableMapping[str, Any]) -> RequestContext:
    """The context in an ASGI scope (created on first use): for the pure-ASGI middlewares."""
    state = scope.setdefault("state", {})
    found: RequestContext | None = state.get(_KEY)
    if found is None:
        found = state[_KEY] = RequestContext()
    return found
