"""The management API's side of the audit log (`platform.audit`): `AuditMiddleware` records every change made
through `/management` (any method but GET), refused ones included, before its answer's last byte goes out; and
`GET /management/audit` lists the log with filters.

The action is the route's name (`deployment.create`, `project.key.revoke`, ...), the target its path parameters
(or the body's `name` for a create), the result "ok" or the sentence the caller got. Only named request fields
are kept (`audit.safe_details`), and of the answer only a created thing's `id`, so no key is ever written.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamafoundry.api.errors import json_response
from llamafoundry.api.management_access import ADMIN, principal_of
from llamafoundry.platform import audit
from llamafoundry.platform.store import Store
from llamafoundry.platform.usage import parse_since
from llamafoundry.protocol.errors import invalid

logger = logging.getLogger(__name__)

MAX_CAPTURED = 64 * 1024  # management bodies are small; past this, details are left out
READ_METHODS = ("GET", "HEAD", "OPTIONS")


class AuditMiddleware:
    """ASGI middleware recording `/management` changes in the store the management dependency names."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS or not scope["path"].startswith("/management"):
            await self.app(scope, receive, send)
            return
        request_body, response_body, status = bytearray(), bytearray(), [500]

        async def receive_captured() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request_body) < MAX_CAPTURED:
                request_body.extend(message.get("body", b""))
            return message

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body":
                if len(response_body) < MAX_CAPTURED:
                    response_body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await _record(scope, status[0], bytes(request_body), bytes(response_body))
            await send(message)

        try:
            await self.app(scope, receive_captured, send_audited)
        except Exception:
            await _record(scope, 500, bytes(request_body), b"")
            raise


async def _record(scope: Scope, status: int, request_body: bytes, response_body: bytes) -> None:
    state = scope.get("state", {})
    store: Store | None = state.get("audit_store")
    if store is None or state.get("audited"):
        return  # not a management route (an unknown path), or recorded already
    state["audited"] = True
    try:
        await asyncio.to_thread(audit.record, store, _entry(scope, status, request_body, response_body))
    except Exception:  # the change is made; a log that cannot be written must not turn it into an error
        logger.exception("the audit log could not be written for %s %s", scope["method"], scope["path"])


def _entry(scope: Scope, status: int, request_body: bytes, response_body: bytes) -> audit.AuditEntry:
    state = scope["state"]
    principal = state.get("principal")
    route = scope.get("route")
    params: dict[str, str] = dict(scope.get("path_params") or {})
    body, answer = _json(request_body), _json(response_body)
    details = {**dict(_query(scope)), **body}
    if 200 <= status < 300 and isinstance(answer.get("id"), str):
        details["id"] = answer["id"]  # a created key's id (never the key: answers are not copied otherwise)
    target = "/".join(params.values()) or (str(body["name"]) if isinstance(body.get("name"), str) else None)
    project = params.get("project") or state.get("audit_project") or body.get("project")
    if project is None and getattr(route, "name", "").startswith("deployment.create"):
        project = "default"
    return audit.AuditEntry(
        actor=principal.actor if principal is not None else "anonymous",
        actor_type=principal.actor_type if principal is not None else "anonymous",
        action=getattr(route, "name", None) or f"{scope['method']} {scope['path']}",
        status=status,
        result="ok" if status < 400 else _message(answer, status),
        target=target,
        project=project.lower() if isinstance(project, str) else None,
        details=details,
    )


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _query(scope: Scope) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(scope.get("query_string", b"").decode("latin-1"))


def _message(answer: dict[str, Any], status: int) -> str:
    error = answer.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return str(answer.get("message") or f"refused with status {status}")


def audit_router(store: Store) -> APIRouter:
    """`GET /audit?since=&actor=&action=&project=&target=&limit=` (in the `/management` router). A project key
    sees its own project's entries only."""

    async def list_entries(request: Request) -> Response:
        query = request.query_params
        principal = principal_of(request)
        project = principal.scope(query.get("project") or None)
        try:
            since = parse_since(query["since"]) if query.get("since") else None
        except ValueError as exc:
            raise invalid("since", str(exc)) from None
        limit = query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= audit.MAX_ENTRIES:
            raise invalid("limit", f"limit must be a number from 1 to {audit.MAX_ENTRIES}.")
        entries = await asyncio.to_thread(
            audit.query, store, since=since, actor=query.get("actor") or None, action=query.get("action") or None,
            project=project, target=query.get("target") or None, limit=int(limit),
        )  # fmt: skip
        if principal.actor_type != ADMIN:
            entries = [e for e in entries if e.project == principal.project]
        return json_response({"data": [entry.describe() for entry in entries]})

    router = APIRouter()
    router.add_api_route("/audit", list_entries, methods=["GET"], name="audit.list")
    return router
