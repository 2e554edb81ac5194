"""A model behind an OpenAI-compatible HTTP server (vLLM, llama.cpp's llama-server, another llamafoundry).

`RemoteChatClient` posts OpenAI chat-completions bodies to `<base>/chat/completions` and hands back the JSON
answer, or, when streaming, each `data:` chunk as a dict until `[DONE]`. It knows nothing of the service's
records: the platform's `UpstreamChatService` builds the bodies and reads the answers. Several base URLs
(replicas of one model, or an `--upstream` pool) are balanced by the fewest requests in flight, skipping a server
that is down (a failed connection, or a failed health check, `probe`); a request no server has accepted yet (no
connection, a connection closed before any byte of an answer, a 502 or 503) goes to the next one, and so does a
stream that breaks before it has said anything (text, a tool call, a finish). Nothing is retried after that: a
stream whose server breaks then ends with an error. Reading the answers is upstream_events.py's part.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from llamafoundry.model.prefix_routing import PrefixAffinity, conversation_keys
from llamafoundry.platform.upstream_events import UpstreamError, error_from, event_chunks, says_something

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0  # a long completion on CPU sends nothing until it is done
FAILED_BACKOFF_S = 2.0
PROBE_TIMEOUT_S = 3.0
RETRIED_STATUSES = (502, 503)  # a proxy with nothing behind it, a server loading or stopping: nothing was done
# Failures before any byte of the answer: the server took no request (connect) or died with it (closed, reset).
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)
UNANSWERED = (*UNSENT, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

CHAT = "chat/completions"
TEXT_COMPLETIONS = "completions"  # OpenAI's legacy text completions: vLLM, llama-server and llamafoundry serve it


def api_url(base_url: str, path: str = CHAT) -> str:
    """`<base>/<path>`, adding `/v1` unless the base already ends with it (OpenAI's convention)."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/{path}"


@dataclass(frozen=True)
class ServerLimits:
    """What upstream servers hold, where they say: tokens of one sequence, and sequences at once."""

    context: int | None = None
    slots: int | None = None


def _positive(value: Any) -> list[int]:
    return [value] if isinstance(value, int) and not isinstance(value, bool) and value > 0 else []


@dataclass
class Upstream:
    """One server, and what the balancer knows about it: a failed request keeps it aside for FAILED_BACKOFF_S;
    `is_up` is what the last health check said (`probe`; never checked: True); `num_retries` counts requests it
    did not accept that went on to another server."""

    base_url: str
    num_in_flight: int = 0
    num_requests: int = 0
    num_retries: int = 0
    failed_at: float | None = None
    is_up: bool = True
    last_error: str | None = None
    last_error_at: float | None = None

    def failed(self, error: str) -> None:
        self.last_error, self.last_error_at = error, time.time()
        self.failed_at = time.monotonic()

    def answered(self) -> None:
        self.failed_at = None

    def request_ended(self) -> None:
        """A request sent to it is over (answered, failed, or its stream closed)."""
        self.num_in_flight -= 1


class RemoteChatClient:
    """Forwards chat requests to one or more OpenAI-compatible servers of the same model.

    Args:
        base_urls: the servers; requests go to the one with the fewest in flight.
        api_key: sent as `Authorization: Bearer` (and `api-key`), when given.
        verify_tls: httpx's `verify` (False for self-signed test servers, or a CA bundle path).
    """

    def __init__(self, base_urls: Sequence[str], api_key: str | None = None, verify_tls: bool | str = True) -> None:
        if not base_urls:
            raise ValueError("RemoteChatClient needs at least one base URL")
        self.upstreams = [Upstream(url) for url in base_urls]
        self.affinity = PrefixAffinity()  # a conversation's next turn goes where its history is cached
        self.headers = {"Authorization": f"Bearer {api_key}", "api-key": api_key} if api_key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify_tls, limits=httpx.Limits(max_connections=256))

    async def aclose(self) -> None:
        await self._http.aclose()

    def pick(self, tried: Sequence[Upstream] = (), preferred: str | None = None) -> Upstream:
        """The server with the fewest requests in flight, not one of `tried`; one that is down (or failed in the
        last 2 s) only if all the others are. `preferred` (the base URL that holds the conversation's history)
        wins unless it is overloaded (prefix_routing.py)."""
        now = time.monotonic()
        untried = [u for u in self.upstreams if u not in tried] or self.upstreams
        healthy = [u for u in untried if u.is_up and (u.failed_at is None or now - u.failed_at > FAILED_BACKOFF_S)]
        candidates = healthy or untried
        least = min(candidates, key=lambda u: (u.num_in_flight, u.num_requests))
        return self.affinity.choose(candidates, least, preferred)

    async def server_limits(self, model: str) -> ServerLimits:
        """What the servers say they hold, the smallest over them: the context of one sequence of `model`
        (`max_model_len` in `GET /v1/models`, as vLLM and llamafoundry report it, else llama-server's context per
        slot, `default_generation_settings.n_ctx` in `GET /props`) and llama-server's slots (`total_slots`)."""
        contexts: list[int] = []
        slots: list[int] = []
        for upstream in self.upstreams:
            props = await self._props(upstream)
            n_ctx = props.get("default_generation_settings", {}).get("n_ctx")
            contexts += await self._models_max_len(upstream, model) or _positive(n_ctx)
            slots += _positive(props.get("total_slots"))
        return ServerLimits(min(contexts, default=None), min(slots, default=None))

    async def _models_max_len(self, upstream: Upstream, model: str) -> list[int]:
        with contextlib.suppress(httpx.HTTPError, ValueError, TypeError, AttributeError, KeyError):
            response = await self._http.get(api_url(upstream.base_url, "models"), headers=self.headers, timeout=5)
            entries = response.json()["data"] if response.status_code == 200 else []
            return [n for e in entries if e.get("id") == model or len(entries) == 1 for n in _positive(
                e.get("max_model_len"))]  # fmt: skip
        return []

    async def _props(self, upstream: Upstream) -> dict[str, Any]:
        """llama-server's `GET /props` at the server's root ({} from servers without it)."""
        root = upstream.base_url.rstrip("/").removesuffix("/v1")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await self._http.get(f"{root}/props", headers=self.headers, timeout=5)
            body = response.json() if response.status_code == 200 else {}
            return body if isinstance(body, dict) else {}
        return {}

    async def complete(
        self, body: dict[str, Any], headers: dict[str, str] | None = None, path: str = CHAT
    ) -> dict[str, Any]:
        """POST a non-streaming request to `path` (chat or text completions); the answer's JSON. Raises
        UpstreamError."""
        upstream, response = await self._open({**body, "stream": False}, headers, path)
        try:
            try:
                content = await response.aread()
            except httpx.TransportError as exc:  # the answer had begun: not retried
                raise UpstreamError(None, f"the upstream connection broke during the answer ({exc})") from None
            finally:
                await response.aclose()
            if response.status_code != 200:
                raise error_from(response.status_code, content)
            try:
                return dict(json.loads(content))
            except ValueError:
                raise UpstreamError(502, "The upstream server answered with a body that is not JSON.") from None
        finally:
            upstream.request_ended()

    async def stream(
        self, body: dict[str, Any], headers: dict[str, str] | None = None, path: str = CHAT
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Start a streaming request; errors before the first chunk are raised here. Returns the chunks.

        Close the returned generator (`aclose()`) to abandon the request: the connection is closed, which
        makes the upstream abort generation.
        """
        body = {**body, "stream": True}
        upstream, response = await self._open_stream(body, headers, path, [])
        return self._stream_chunks(body, headers, path, upstream, response)

    async def _open_stream(
        self, body: dict[str, Any], headers: dict[str, str] | None, path: str, tried: list[Upstream]
    ) -> tuple[Upstream, httpx.Response]:
        upstream, response = await self._open(body, headers, path, tried)
        if response.status_code != 200:
            try:
                content = await response.aread()
                await response.aclose()
            finally:
                upstream.request_ended()
            raise error_from(response.status_code, content)
        return upstream, response

    async def _stream_chunks(
        self,
        body: dict[str, Any],
        headers: dict[str, str] | None,
        path: str,
        upstream: Upstream,
        response: httpx.Response,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The chunks of a stream. Until a chunk says something (text, a tool call, a finish), the chunks are held
        and a connection that breaks sends the request to another server, as one the server never answered would:
        llama-server sends its headers (and vLLM its role chunk) before a queued request gets a slot, so a server
        killed with requests queued used to end them all as broken streams."""
        tried = [upstream]
        chunks = event_chunks(response, upstream.request_ended)
        held: list[dict[str, Any]] = []
        try:
            while True:
                try:
                    async for chunk in chunks:
                        held.append(chunk)
                        if says_something(chunk):
                            break
                    break  # something was said, or the stream ended
                except UpstreamError as exc:
                    if exc.status is not None or len(tried) >= len(self.upstreams):
                        raise
                    upstream.failed(exc.message)
                    upstream.num_retries += 1
                    held.clear()
                    upstream, response = await self._open_stream(body, headers, path, tried)
                    tried.append(upstream)
                    chunks = event_chunks(response, upstream.request_ended)
            for chunk in held:
                yield chunk
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    async def _open(
        self, body: dict[str, Any], headers: dict[str, str] | None, path: str, tried: list[Upstream] | None = None
    ) -> tuple[Upstream, httpx.Response]:
        """Send the request to a server, counted in flight there (the caller ends the count), and return once the
        answer's headers came (its body unread). A server that did not accept the request (`UNANSWERED`, or a
        502 or 503: loading, restarting, shutting down) is set aside, and the request goes to the next server,
        until each was tried once (`tried`: servers already tried for it); a server that answers 200 is up,
        whatever its last health check said."""
        tried = list(tried or [])
        keys = conversation_keys(body)
        preferred = self.affinity.preferred(keys)
        while True:
            upstream = self.pick(tried, preferred)
            tried.append(upstream)
            can_go_elsewhere = len(tried) < len(self.upstreams)
            upstream.num_in_flight += 1
            upstream.num_requests += 1
            request = self._http.build_request(
                "POST", api_url(upstream.base_url, path), json=body, headers={**self.headers, **(headers or {})}
            )
            try:
                response = await self._send(upstream, request)
            except UpstreamError as exc:
                upstream.request_ended()
                if exc.is_unanswered and can_go_elsewhere:
                    upstream.num_retries += 1
                    continue
                raise
            if response.status_code in RETRIED_STATUSES:
                upstream.failed(f"answered {response.status_code}")
            if response.status_code in RETRIED_STATUSES and can_go_elsewhere:
                upstream.request_ended()
                upstream.num_retries += 1
                await response.aclose()
                continue
            if response.status_code == 200:
                upstream.is_up = True
                self.affinity.record(keys, upstream.base_url)
            return upstream, response

    async def _send(self, upstream: Upstream, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            upstream.failed(error)
            unsent, unanswered = isinstance(exc, UNSENT), isinstance(exc, UNANSWERED)
            raise UpstreamError(None, error, is_unsent=unsent, is_unanswered=unanswered) from None
        if response.status_code not in RETRIED_STATUSES:
            upstream.answered()
        return response

    async def probe(self, upstream: Upstream) -> None:
        """A health check: GET `/health` at the server's root (llama-server, vLLM, llamafoundry), else
        `<base>/models` for a server without one; up on a 200, down otherwise (llama-server answers 503 while it
        loads: no second try then)."""
        root = upstream.base_url.rstrip("/").removesuffix("/v1")
        error = "no answer"
        for url in (f"{root}/health", api_url(upstream.base_url, "models")):
            try:
                response = await self._http.get(url, headers=self.headers, timeout=PROBE_TIMEOUT_S)
            except httpx.TransportError as exc:
                upstream.is_up = False
                upstream.failed(f"health check: {type(exc).__name__}: {exc}".rstrip(": "))
                return
            if response.status_code == 200:
                upstream.is_up, upstream.failed_at = True, None
                return
            error = f"health check: {url.rsplit('/', 1)[-1]} answered {response.status_code}"
            if response.status_code == 503:
                break
        upstream.is_up = False
        upstream.failed(error)
