"""The portal's server side is a client of the management API: it calls `/management/...` in-process (through
the whole ASGI app, its middleware and its admin-key check) with the key the user signed in with.

So the portal applies the same rules, sentences and permissions as the API and the CLI (both call
`platform.deployments`), needs no access to the store of its own, and a key the API stops accepting ends the
session (`SignedOut`).
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.types import ASGIApp

INTERNAL_BASE_URL = "http://portal.internal"
TIMEOUT_S = 600.0  # a deployment created without --weights downloads its GGUF inside the request


class SignedOut(Exception):
    """The API refused the session's key (401): the key was regenerated, or never opened the management API."""


class PortalApiError(Exception):
    """An error answer of the API: `message` is its sentence, `param` the field at fault when it names one."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


class ApiClient:
    """Calls the app's own API with `api_key`; use as `async with ApiClient(app, key) as api: ...`."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=INTERNAL_BASE_URL,
            headers={"api-key": api_key},
            timeout=TIMEOUT_S,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self.call("POST", path, json=body)

    async def patch(self, path: str, body: dict[str, Any]) -> Any:
        return await self.call("PATCH", path, json=body)

    async def put(self, path: str, body: dict[str, Any]) -> Any:
        return await self.call("PUT", path, json=body)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)

    async def text(self, path: str, **params: Any) -> str:
        """A text answer (the usage CSV, `/metrics`)."""
        response = await self._client.get(path, params={k: v for k, v in params.items() if v not in (None, "")})
        _raise_for(response)
        return response.text

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._client.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()


def _raise_for(response: httpx.Response) -> None:
    if response.status_code == 401:
        raise SignedOut()
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        raise PortalApiError(response.status_code, response.text or f"HTTP {response.status_code}") from None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        raise PortalApiError(response.status_code, str(error.get("message")), error.get("param"), error.get("code"))
    message = body.get("message") if isinstance(body, dict) else None
    raise PortalApiError(response.status_code, str(message or body))
