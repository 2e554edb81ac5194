"""`--upstream` pools: the deployment rules and commands (on the store), and the pool's health checks and retries
against real HTTP servers on loopback (one that answers, one that closes connections unanswered, one that answers
502, and a port where nothing listens). llama-server as a pool: tests/api/test_llama_server_upstream.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llamafoundry.cli import main
from llamafoundry.commands.runtime_view import upstream_line
from llamafoundry.platform.deployments import DeploymentError, DeploymentSpec, create_deployment, describe, set_upstream
from llamafoundry.platform.store import Store
from llamafoundry.platform.upstream_client import RemoteChatClient, UpstreamError
from llamafoundry.platform.upstream_pool import UpstreamPool
from tests.gguf_files import metadata_only_gguf
from tests.serve_process import free_port

MODEL = "Llama-3.2-1B-Instruct"
ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1}}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "home")
    yield opened
    opened.close()


def create(store: Store, tmp_path: Path, upstream: Any, name: str = "pool") -> Any:
    spec = DeploymentSpec(name=name, model=MODEL, type="managed", upstream_url=upstream)
    return create_deployment(store, spec, tmp_path / "home")[0]


def test_a_pool_is_stored_and_shown_as_given(store: Store, tmp_path: Path) -> None:
    pool = create(store, tmp_path, ["http://a:8000/v1/", "http://b:8000/v1, http://a:8000/v1"])
    assert describe(pool)["upstream"] == ["http://a:8000/v1", "http://b:8000/v1"]  # checked, once each
    single = create(store, tmp_path, "http://c:8000/v1", name="single")
    assert single.upstream_url == "http://c:8000/v1" and describe(single)["upstream"] == "http://c:8000/v1"
    changed = set_upstream(store, "single", "http://c:8000/v1,http://d:8000/v1")
    assert describe(changed)["upstream"] == ["http://c:8000/v1", "http://d:8000/v1"]


def test_pool_rules(store: Store, tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="ftp://x is not an http"):
        create(store, tmp_path, ["http://a:8000/v1", "ftp://x"])
    with pytest.raises(DeploymentError, match="at most 16 servers"):
        create(store, tmp_path, [f"http://h{i}:1/v1" for i in range(17)])
    weights = metadata_only_gguf(tmp_path / "model.gguf")
    create_deployment(store, DeploymentSpec(name="local", model=MODEL, type="managed", weights=weights), tmp_path)
    with pytest.raises(DeploymentError, match="serves local weights"):
        set_upstream(store, "local", "http://a:8000/v1")


def cli(home: Path, *argv: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json", "--data-dir", str(home)]) == 0
    return json.loads(out.getvalue())


def test_deploy_create_and_update_take_repeated_or_comma_separated_upstreams(tmp_path: Path) -> None:
    created = cli(tmp_path, "deploy", "create", "pool", "--model", MODEL, "--type", "managed",
                  "--upstream", "http://a:1/v1", "--upstream", "http://b:1/v1,http://c:1/v1")  # fmt: skip
    assert created["upstream"] == ["http://a:1/v1", "http://b:1/v1", "http://c:1/v1"]
    updated = cli(tmp_path, "deploy", "update", "pool", "--upstream", "http://d:1/v1")
    assert updated["upstream"] == "http://d:1/v1"
    assert cli(tmp_path, "deploy", "show", "pool")["upstream"] == "http://d:1/v1"


class Answering(BaseHTTPRequestHandler):
    """200 to /health and to chat requests; counts the chat requests."""

    chats: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, {"status": "ok"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        type(self).chats.append(self.path)
        self._send(200, ANSWER)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class BadGateway(Answering):
    """A proxy with nothing behind it: 502 to everything."""

    def do_GET(self) -> None:  # noqa: N802
        self._send(502, {"error": {"message": "no backend"}})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        self._send(502, {"error": {"message": "no backend"}})


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def hanging_up() -> Iterator[str]:
    """Accepts each connection, reads the request, and closes it without a byte of answer (a server that died)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(0.5)  # a client that sends nothing must not hold the loop (nor stop's join)
                    conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


async def pool_over(urls: list[str], checking: bool = False) -> tuple[UpstreamPool, RemoteChatClient]:
    """A pool checked once; `checking`: and every 0.05 s after (else no check races the test's own steps)."""
    pool = UpstreamPool(urls, name="pool", interval_s=0.05)
    client = RemoteChatClient((await pool.start())[0])
    if checking:
        pool.attach(client)
    pool.client = client
    await pool.check()
    return pool, client


def test_requests_no_upstream_accepted_go_to_the_next_and_health_is_shown() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    Answering.chats = []

    async def run() -> None:
        with http_server(Answering) as good, http_server(BadGateway) as bad, hanging_up() as hangs:
            pool, client = await pool_over([dead, bad, hangs, good])
            try:
                health = {u["url"]: u for u in pool.status()["upstreams"]}
                assert [health[u]["up"] for u in (dead, bad, hangs, good)] == [False, False, False, True]
                assert "answered 502" in health[bad]["last_error"] and "ConnectError" in health[dead]["last_error"]
                for upstream in client.upstreams:  # as if every check had just passed: each gets tried
                    upstream.is_up, upstream.failed_at = True, None
                answer = await client.complete({"messages": []})
                assert answer["choices"][0]["message"]["content"] == "ok" and len(Answering.chats) == 1
                retried = {u["url"]: u["retries"] for u in pool.status()["upstreams"]}
                assert retried == {dead: 1, bad: 1, hangs: 1, good: 0}
                assert "passed on to another" in upstream_line(pool.status()["upstreams"][1])
                assert pool.failure_note() is None
            finally:
                await pool.stop()
                await client.aclose()

    asyncio.run(run())


def test_a_pool_that_is_all_down_says_so_for_each_server() -> None:
    async def run() -> None:
        with http_server(BadGateway) as bad, hanging_up() as hangs:
            pool, client = await pool_over([bad, hangs])
            try:
                with pytest.raises(UpstreamError):
                    await client.complete({"messages": []})
                note = pool.failure_note()
                assert note is not None and "None of the upstream servers of deployment 'pool'" in note
                assert f"{bad}: answered 502" in note and hangs in note
            finally:
                await pool.stop()
                await client.aclose()

    asyncio.run(run())


def test_a_server_that_comes_back_is_up_at_the_next_check() -> None:
    port = free_port()

    async def run() -> None:
        url = f"http://127.0.0.1:{port}/v1"
        pool, client = await pool_over([url], checking=True)
        try:
            assert not pool.status()["upstreams"][0]["up"]
            server = ThreadingHTTPServer(("127.0.0.1", port), Answering)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                for _ in range(100):
                    if pool.status()["upstreams"][0]["up"]:
                        break
                    await asyncio.sleep(0.05)
                assert pool.status()["upstreams"][0]["up"]  # the periodic check saw it
            finally:
                server.shutdown()
                server.server_close()
        finally:
            await pool.stop()
            await client.aclose()

    asyncio.run(run())


class Bare(Answering):
    """Answers chat requests but has neither /health nor /v1/models."""

    def do_GET(self) -> None:  # noqa: N802
        self._send(404, {"error": {"message": "not found"}})


def test_a_server_without_health_routes_is_up_once_it_answers_a_request() -> None:
    async def run() -> None:
        with http_server(Bare) as bare:
            pool, client = await pool_over([bare])
            try:
                assert pool.status()["upstreams"][0]["last_error"] == "health check: models answered 404"
                await client.complete({"messages": []})
                assert client.upstreams[0].is_up
            finally:
                await pool.stop()
                await client.aclose()

    asyncio.run(run())
