"""The servers of an `--upstream` deployment: one base URL or a pool of several, health-checked.

`UpstreamPool` is the `UpstreamProvider` of such a deployment. Every HEALTH_INTERVAL_S it checks each server
(`RemoteChatClient.probe`: GET /health, else /v1/models); the client sends each request to the least loaded
server that is up and passes a request no server accepted on to the next one. Its status shows each server's
health for `deploy show` and `/metrics`; when none is up, its failure note names each one's state, which the API
answers in its 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from llamafoundry.platform.store import iso_time
from llamafoundry.platform.upstream_client import RemoteChatClient, Upstream

logger = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 2.0


class UpstreamPool:
    """Existing servers of one model at `base_urls` (`deploy create --upstream URL [--upstream URL ...]`).

    Args:
        base_urls: the servers' base URLs.
        api_key: the key they want (`--upstream-key`), or None.
        name: the deployment's name, for log lines and messages.
        interval_s: seconds between health checks.
    """

    sizes_itself = True  # started elsewhere: their context is read from them

    def __init__(
        self,
        base_urls: Sequence[str],
        api_key: str | None = None,
        name: str = "",
        interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        self.base_urls = list(base_urls)
        self.api_key = api_key
        self.name = name
        self.interval_s = interval_s
        self.client: RemoteChatClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[list[str], str | None]:
        return self.base_urls, self.api_key

    def attach(self, client: RemoteChatClient) -> None:
        """Start checking the servers of `client` (the service's, built from `start`'s URLs)."""
        self.client = client
        self._task = asyncio.create_task(self._check_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def is_ready(self) -> bool:
        return True  # a pool that is down answers each request with the 503 of `failure_note`

    async def check(self) -> None:
        """Check every server once, together; log each change of health."""
        assert self.client is not None
        before = [u.is_up for u in self.client.upstreams]
        await asyncio.gather(*(self.client.probe(u) for u in self.client.upstreams))
        for was_up, upstream in zip(before, self.client.upstreams, strict=True):
            if was_up and not upstream.is_up:
                logger.warning("deployment %s: upstream %s is down (%s)", self.name, upstream.base_url,
                               upstream.last_error)  # fmt: skip
            elif upstream.is_up and not was_up:
                logger.info("deployment %s: upstream %s is up again", self.name, upstream.base_url)

    async def _check_forever(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a check must never end the loop
                logger.exception("deployment %s: checking the upstream servers failed", self.name)
            await asyncio.sleep(self.interval_s)

    def status(self) -> dict[str, Any]:
        """Each server's health, for the deployment's runtime status (`deploy show`, `/metrics`)."""
        if self.client is None:
            return {}
        return {"upstreams": [_upstream_status(u) for u in self.client.upstreams]}

    def failure_note(self) -> str | None:
        """When no server is up: a sentence naming each one's state; else None."""
        if self.client is None or any(_is_up(u) for u in self.client.upstreams):
            return None
        states = "; ".join(f"{u.base_url}: {u.last_error or 'down'}" for u in self.client.upstreams)
        if len(self.client.upstreams) == 1:  # the sentence of an unreachable server (upstream.engine_error)
            return (
                f"The model's server cannot be reached ({states}); retry in a few seconds, and check that the "
                "upstream server is running if it keeps failing."
            )
        return (
            f"None of the upstream servers of deployment '{self.name}' is answering ({states}). Retry in a few "
            "seconds; if it keeps failing, check that the upstream servers are running."
        )


def _is_up(upstream: Upstream) -> bool:
    """Up by its last health check, and not failed by a request since."""
    return upstream.is_up and upstream.failed_at is None


def _upstream_status(upstream: Upstream) -> dict[str, Any]:
    at = None if upstream.last_error_at is None else iso_time(upstream.last_error_at)
    return {"url": upstream.base_url, "up": _is_up(upstream), "in_flight": upstream.num_in_flight,
            "requests": upstream.num_requests, "retries": upstream.num_retries, "last_error": upstream.last_error,
            "last_error_at": at}  # fmt: skip
