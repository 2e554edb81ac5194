"""A replica killed under load: a real `serve` with two local deployments of the tiny GGUF (one of two replicas,
one of one), concurrent streams, and SIGKILL on one replica mid-stream. Its streams end with a 503 error event
(never a 500, never a hang), the other replica's streams finish, a non-streamed request in flight gets a 503 with
Retry-After, and the replica comes back and serves. Seconds are measured in docs/platform.md, not asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.deployment_fixtures import Gateway, chat, cli_json, start_gateway, wait_for, wait_ready

pytestmark = pytest.mark.slow

NUM_STREAMS = 6
LONG = {"max_tokens": 300, "ignore_eos": True}  # long enough to be running when the replica dies
RESTART_TIMEOUT_S = 60  # generous for a loaded CI machine: the bound itself is measured, in docs/platform.md


@dataclass
class Setup:
    gateway: Gateway
    admin: dict[str, str]
    keys: dict[str, str]


@pytest.fixture(scope="module")
def setup(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("replica-death")
    weights = str(tiny_model_path)
    keys = {}
    for name, instances in (("fleet", "2"), ("solo", "1")):
        created = cli_json(home, "deploy", "create", name, "--model", "Llama-3.2-1B-Instruct", "--type", "managed",
                           "--instances", instances, "--weights", weights)  # fmt: skip
        keys[name] = created["primary_key"]
    admin = {"api-key": cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]}
    gateway = start_gateway(home, tiny_model_path)
    for name, key in keys.items():
        wait_ready(url(gateway, name), key)
    yield Setup(gateway, admin, keys)
    gateway.stop()


def url(gateway: Gateway, deployment: str) -> str:
    return f"{gateway.url}/deployments/{deployment}/chat/completions"


def status(setup: Setup, deployment: str) -> dict[str, Any]:
    answer = httpx.get(f"{setup.gateway.url}/management/deployments/{deployment}", headers=setup.admin, timeout=10)
    return dict(answer.json()["status"])


@dataclass
class Stream:
    """One streamed request as its client saw it."""

    has_output: threading.Event = field(default_factory=threading.Event)
    is_done: bool = False
    error: dict[str, Any] | None = None

    def run(self, target: str, key: str) -> None:
        body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "stream": True, **LONG}
        headers = {"api-key": key, "extra-parameters": "pass-through"}
        with httpx.stream("POST", target, json=body, headers=headers, timeout=httpx.Timeout(30.0)) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():  # a hang raises ReadTimeout after 30 s
                if line == "data: [DONE]":
                    self.is_done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    self.error = chunk.get("error") or self.error
                    if any(c["delta"].get("content") for c in chunk.get("choices") or []):
                        self.has_output.set()


def test_a_replica_killed_mid_stream_gives_its_requests_503s_and_comes_back(setup: Setup) -> None:
    fleet, key = url(setup.gateway, "fleet"), setup.keys["fleet"]
    streams = [Stream() for _ in range(NUM_STREAMS)]
    with ThreadPoolExecutor(NUM_STREAMS) as pool:
        running = [pool.submit(s.run, fleet, key) for s in streams]
        wait_for(lambda: all(s.has_output.is_set() for s in streams), 60, "every stream's first tokens")
        before = status(setup, "fleet")
        os.kill(int(before["replicas"][0]["pid"]), signal.SIGKILL)
        meanwhile = chat(fleet, key)  # the deployment keeps answering: the other replica takes it
        for result in running:
            result.result(timeout=120)
    assert meanwhile.status_code == 200, meanwhile.text
    cut = [s for s in streams if s.error is not None]
    finished = [s for s in streams if s.is_done]
    assert (len(cut), len(finished)) == (before["in_flight"][0], before["in_flight"][1]), before
    assert cut and finished, "both replicas had streams when one was killed"
    for stream in cut:
        error = stream.error
        assert error is not None and not stream.is_done
        assert (error["status"], error["retry_after"]) == (503, 5), error
        assert "Replica 0 of deployment 'fleet' was killed (SIGKILL" in error["message"], error
        assert "retry" in error["message"]
    wait_for(lambda: status(setup, "fleet")["replicas"][0]["healthy"], RESTART_TIMEOUT_S, "replica 0 back")
    served, other = status(setup, "fleet")["requests"]
    # balanced by requests in flight, ties by requests served: sequential requests go to replica 1 until it has
    # served as many as replica 0 (which of them took more streams before the kill depends on timing), then alternate
    for _ in range(max(0, served - other) + 4):
        assert chat(fleet, key).status_code == 200
    after = status(setup, "fleet")
    assert after["requests"][0] > served and after["replicas"][0]["restarts"] == 1


def test_a_non_streamed_request_on_a_killed_replica_gets_a_503_with_retry_after(setup: Setup) -> None:
    """The replica's answer never comes: the gateway says why, in a 503 the SDKs retry by themselves."""
    solo, key = url(setup.gateway, "solo"), setup.keys["solo"]
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(chat, solo, key, {"extra-parameters": "pass-through"}, **LONG)
        wait_for(lambda: status(setup, "solo")["in_flight"] == [1], 30, "the request reaching the replica")
        os.kill(int(status(setup, "solo")["replicas"][0]["pid"]), signal.SIGKILL)
        response = answer.result(timeout=60)
    assert response.status_code == 503 and response.headers["retry-after"] == "5", response.text
    assert "Replica 0 of deployment 'solo' was killed (SIGKILL" in response.json()["error"]["message"]
    wait_ready(solo, key, RESTART_TIMEOUT_S)
    assert status(setup, "solo")["replicas"][0]["restarts"] == 1


def test_replicas_end_with_their_gateway(setup: Setup) -> None:
    """Replicas come from a fork server, not from the gateway: a gateway killed with SIGKILL still takes them
    along (the fork server sees the gateway gone and exits; its children get SIGTERM)."""
    pids = [int(r["pid"]) for name in ("fleet", "solo") for r in status(setup, name)["replicas"]]
    setup.gateway.process.kill()
    setup.gateway.process.wait()
    wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "every replica exiting")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waits for its parent to read its status: it is gone
        return stat.read().split(")")[-1].split()[0] != "Z"
