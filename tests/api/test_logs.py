"""The server's log as an operator reads it: one access line per request (time, method, path, status, duration,
request id, deployment, key id; never a key or a prompt), JSON or text, the request id on every line of a request,
replicas in the same format, and a client that leaves logged once, at debug."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import API_KEY, Server, start_server, stop_server
from tests.api.deployment_fixtures import cli_json, start_gateway, wait_for, wait_ready

pytestmark = pytest.mark.slow
PROMPT = "my secret prompt about the quarterly numbers"


def json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


@pytest.fixture(scope="module")
def json_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tiny_model_path, tmp_path_factory.mktemp("json-logs"), "--log-format", "json",
                          "--log-level", "debug")  # fmt: skip
    yield server
    stop_server(server)


def access_lines(server: Server) -> list[dict[str, Any]]:
    return [line for line in json_lines(server.log()) if line["logger"] == "llamafoundry.access"]


def test_every_request_gets_one_json_access_line_with_its_request_id(json_server: Server) -> None:
    url, key = json_server.url, {"api-key": API_KEY}
    chat = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    answers = [
        httpx.post(f"{url}/chat/completions", headers=key, json=chat, timeout=60),  # 200
        httpx.post(f"{url}/chat/completions", headers=key, json={"messages": []}, timeout=60),  # 400
        httpx.post(f"{url}/chat/completions", headers={"api-key": "wrong-" + API_KEY}, json=chat, timeout=60),  # 401
        httpx.get(f"{url}/nowhere", headers=key, timeout=60),  # 404
        httpx.post(f"{url}/chat/completions", headers=key, json={**chat, "stream": True}, timeout=60),  # SSE
    ]
    ids = [a.headers["x-request-id"] for a in answers]
    wait_for(lambda: all(i in {line["request_id"] for line in access_lines(json_server)} for i in ids), 10,
             "the access lines")  # fmt: skip
    lines = {line["request_id"]: line for line in access_lines(json_server)}
    assert [lines[i]["status"] for i in ids] == [200, 400, 401, 404, 200]
    first = lines[ids[0]]
    assert first["method"] == "POST" and first["path"] == "/chat/completions" and first["duration_ms"] > 0
    assert first["key_id"] == "default" and first["deployment"] == json_server.name
    assert first["time"].endswith("Z") and first["level"] == "info"
    logged = json.dumps(json_lines(json_server.log()))  # the log lines (the start-up banner shows the key it chose)
    assert API_KEY not in logged and PROMPT not in logged  # never a key, never a prompt
    assert "socket.send() raised exception" not in json_server.log()


def test_a_client_that_leaves_is_logged_once_at_debug_with_its_request_id(json_server: Server) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me a long story"}], "max_tokens": 400, "stream": True,
            "ignore_eos": True}  # fmt: skip
    headers = {"api-key": API_KEY, "extra-parameters": "pass-through"}
    with httpx.stream("POST", f"{json_server.url}/chat/completions", headers=headers, json=body, timeout=60) as r:
        request_id = r.headers["x-request-id"]
        next(r.iter_lines())
    wait_for(lambda: any(line["request_id"] == request_id for line in access_lines(json_server)), 20, "its line")
    mine = [line for line in json_lines(json_server.log()) if line.get("request_id") == request_id]
    assert [line["status"] for line in mine if line["logger"] == "llamafoundry.access"] == [499]
    disconnects = [line for line in mine if "disconnected" in line["message"]]
    assert len(disconnects) == 1 and disconnects[0]["level"] == "debug"


def test_text_lines_have_a_timestamp_and_the_request_id(tiny_model_path: Path, tmp_path: Path) -> None:
    server = start_server(tiny_model_path, tmp_path)
    try:
        answer = httpx.post(f"{server.url}/chat/completions", headers={"api-key": API_KEY}, timeout=60,
                            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})  # fmt: skip
        request_id = answer.headers["x-request-id"]
        wait_for(lambda: request_id in server.log(), 10, "the access line")
        line = next(line for line in server.log().splitlines() if request_id in line)
        assert time.strftime("%Y-%m-%d") in line and f"[req {request_id}]" in line
        assert "llamafoundry.access" in line and "POST /chat/completions 200" in line and "key=default" in line
    finally:
        stop_server(server)


def test_replicas_log_in_the_gateways_format_and_access_lines_name_the_deployment(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    created = cli_json(home, "deploy", "create", "chat", "--model", "Meta-Llama-3.1-8B-Instruct", "--weights",
                       str(tiny_model_path))  # fmt: skip
    gateway = start_gateway(home, tiny_model_path, "--log-format", "json")
    try:
        url = f"{gateway.url}/deployments/chat/chat/completions"
        wait_ready(url, created["primary_key"])
        answer = httpx.post(url, headers={"api-key": created["primary_key"]}, timeout=60,
                            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})  # fmt: skip
        request_id = answer.headers["x-request-id"]
        wait_for(lambda: request_id in gateway.log(), 10, "the gateway's access line")
        line = next(x for x in json_lines(gateway.log()) if x.get("request_id") == request_id)
        assert line["deployment"] == "chat" and line["key_id"].startswith("key-")
        assert created["primary_key"] not in gateway.log()
        replica_log = (home / "logs" / "chat-0.log").read_text()
        replica_lines = json_lines(replica_log)
        assert replica_lines and all({"time", "level", "logger", "message"} <= set(x) for x in replica_lines)
        assert any(x["logger"] == "llamafoundry.access" and x["path"] == "/v1/chat/completions" for x in replica_lines)
    finally:
        gateway.stop()
