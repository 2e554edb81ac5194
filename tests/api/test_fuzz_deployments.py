"""Fuzzing a real server with several deployments: the server's own model, a local replica deployment and an
upstream deployment that forwards to the server's own `/v1`. Valid and invalid bodies (odd types, huge,
negative and NaN-ish numbers, unicode, nested junk, values past the limits) on every route: never a 5xx, never an
error event in a stream, every error in the Azure envelope, and the server and its replicas healthy afterwards.
Seeded and bounded (`bench/fuzz_requests.py` holds the strategies, shared with the memory soak)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from bench.fuzz_requests import FuzzRequest, FuzzTarget, fuzz_requests
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.api.conftest import API_KEY
from tests.api.deployment_fixtures import START_TIMEOUT_S, cli_json, wait_ready
from tests.serve_process import free_port, launch_serve, stop_process, wait_healthy

pytestmark = pytest.mark.slow

NUM_REQUESTS = 400


@dataclass
class Fleet:
    url: str
    home: Path
    targets: list[FuzzTarget]


def fleet_targets(keys: dict[str, str]) -> list[FuzzTarget]:
    own = FuzzTarget("own", API_KEY, ("/chat/completions", "/models/chat/completions", "/v1/chat/completions"),
                     ("/v1/completions",))  # fmt: skip
    deployments = [
        FuzzTarget(name, key, (f"/deployments/{name}/chat/completions", "/v1/chat/completions"), ("/v1/completions",),
                   {"azureml-model-deployment": name})  # fmt: skip
        for name, key in keys.items()
    ]
    return [own, *deployments]


@pytest.fixture(scope="module")
def fleet(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    home = tmp_path_factory.mktemp("fuzz-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    replica = cli_json(home, "deploy", "create", "replica", "--model", "Llama-3.2-1B-Instruct", "--type", "managed",
                       "--weights", str(tiny_model_path))  # fmt: skip
    upstream = cli_json(home, "deploy", "create", "upstream", "--model", "Meta-Llama-3.1-8B-Instruct", "--upstream",
                        f"{url}/v1", "--upstream-key", API_KEY, "--upstream-model", "tiny-llama")  # fmt: skip
    from llamafoundry.platform.store import Store

    store = Store.open(home)
    store.update_settings("replica", {"ctx_size": 1024, "parallel": 2, "threads": 1})
    store.close()
    log_path = home / "serve.log"
    args = ["--data-dir", str(home), "--model", str(tiny_model_path), "--name", "tiny-llama", "--api-key", API_KEY,
            "--port", str(port), "--threads", "1", "--ctx-size", "1024", "--parallel", "4"]  # fmt: skip
    process = launch_serve(args, log_path)
    try:
        wait_healthy(url, process, log_path, START_TIMEOUT_S)
        keys = {"replica": replica["primary_key"], "upstream": upstream["primary_key"]}
        for name, key in keys.items():
            wait_ready(f"{url}/deployments/{name}/chat/completions", key)
        yield Fleet(url, home, fleet_targets(keys))
    finally:
        stop_process(process)


def logs(home: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in sorted(home.rglob("*.log")))


def check_answer(request: FuzzRequest, response: httpx.Response) -> None:
    where = f"{request.kind} {request.method} {request.path} ({request.target}): {request.content[:300]!r}"
    assert response.status_code < 500, f"{response.status_code} {response.text[:500]} for {where}"
    if response.status_code == 401:  # the MaaS body
        assert response.json()["message"], where
        return
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json", where
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"], where
        assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"], where
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events and events[-1] == "[DONE]", f"stream ended with {events[-1:]} for {where}"
        assert not any('"error"' in e and "choices" in e and json.loads(e).get("error") for e in events[:-1]), where
    else:
        assert response.json()["choices"], where


def test_fuzzed_requests_never_get_a_5xx_on_any_deployment(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=120) as client:

        @seed(22)
        @settings(max_examples=NUM_REQUESTS, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(request=fuzz_requests(fleet.targets))
        def send(request: FuzzRequest) -> None:
            response = client.request(request.method, request.path, content=request.content, headers=request.headers)
            check_answer(request, response)

        send()


def test_every_deployment_still_serves_after_the_fuzzing(fleet: Fleet) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    assert httpx.get(f"{fleet.url}/health").status_code == 200
    for target in fleet.targets:
        response = httpx.post(fleet.url + target.chat_paths[0], json=body, headers={"api-key": target.key}, timeout=60)
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 3, target.name
    found = logs(fleet.home)
    assert "engine step failed" not in found and "failed; the engine goes on" not in found
