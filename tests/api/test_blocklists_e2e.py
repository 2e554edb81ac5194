"""Custom blocklists and the streaming modes end to end: real `serve` processes, the azure-ai-inference SDK, the
`blocklist` CLI and the management API; on the bare route (`serve --content-safety-blocklist`) and through a
serverless deployment.

A blocklisted term in a prompt is Azure's 400 `content_filter` whose innererror lists the matched list under
`custom_blocklists`. Completions are cut by a list whose regex matches any 30 characters (the random-weight model
writes token salad, so no fixed word is sure to appear): in both streaming modes the stream ends with
`finish_reason: content_filter` and the blocklist annotation, and no 30 characters of the answer ever reach the
client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError

from tests.api.conftest import Server, start_server, stop_server
from tests.api.deployment_fixtures import PICKUP_S, cli_json, wait_for, wait_ready

pytestmark = pytest.mark.slow

TERM = "Contoso"
ANY_30 = r"[\s\S]{30}"
LIST = [{"filtered": True, "id": "banned"}]


@pytest.fixture(scope="module")
def servers(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A platform server (bare route: default mode; deployment `chat`) and a bare server in asynchronous mode, both
    with the list `banned`."""
    home = tmp_path_factory.mktemp("blocklists")
    listed = home / "banned.txt"
    listed.write_text(f"# test list\n{TERM}\nre: {ANY_30}\n", encoding="utf-8")
    model = ["--model", "Meta-Llama-3.1-8B-Instruct", "--weights", str(tiny_model_path)]
    chat = cli_json(home, "deploy", "create", "chat", *model)
    admin = cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]
    shown = cli_json(home, "blocklist", "add", "chat", "banned", TERM, "--description", "test list")
    assert shown["data"][0]["items"] == [{"pattern": TERM, "is_regex": False}]
    cli_json(home, "blocklist", "add", "chat", "banned", ANY_30, "--regex")
    base = ("--ctx-size", "512", "--content-safety-blocklist", str(listed))
    platform = start_server(tiny_model_path, home, *base, "--data-dir", str(home))
    asynchronous = start_server(
        tiny_model_path, tmp_path_factory.mktemp("async"), *base, "--content-safety-streaming", "asynchronous"
    )
    try:
        chat_url = f"{platform.url}/deployments/chat"
        wait_ready(chat_url + "/chat/completions", chat["primary_key"])
        yield {"platform": platform, "async": asynchronous, "home": home, "admin": admin,
               "chat": (chat_url, chat["primary_key"])}  # fmt: skip
    finally:
        stop_server(platform)
        stop_server(asynchronous)


def endpoint(servers: dict[str, Any], route: str) -> tuple[str, str]:
    if route == "deployment":
        return servers["chat"]
    server: Server = servers["platform" if route == "bare" else "async"]
    return server.url, server.key


def sdk(url: str, key: str) -> ChatCompletionsClient:
    return ChatCompletionsClient(url, AzureKeyCredential(key), retry_total=0)


@pytest.mark.parametrize("route", ["bare", "deployment"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_blocklisted_term_in_the_prompt_is_the_azure_400_with_the_list(
    servers: dict[str, Any], route: str, stream: bool
) -> None:
    with sdk(*endpoint(servers, route)) as client, pytest.raises(HttpResponseError) as caught:
        client.complete(messages=[UserMessage(f"hi {TERM}")], max_tokens=5, stream=stream)
    error = caught.value
    assert error.status_code == 400 and error.error is not None and error.error.code == "content_filter"
    assert error.response.headers["x-ms-error-code"] == "content_filter"
    inner = error.response.json()["error"]["innererror"]
    assert inner["code"] == "ResponsibleAIPolicyViolation"
    assert inner["content_filter_result"]["custom_blocklists"] == LIST


def streamed(url: str, key: str) -> dict[str, Any]:
    """What a streamed answer to "hi" brought: its text, last finish reason, and that chunk's choice."""
    out: dict[str, Any] = {"text": "", "finish": None, "choice": {}}
    with sdk(url, key) as client:
        for update in client.complete(messages=[UserMessage("hi")], max_tokens=48, temperature=0, stream=True):
            for choice in update.choices:
                out["text"] += choice.delta.content or "" if choice.delta else ""
                if choice.finish_reason is not None:
                    out["finish"], out["choice"] = choice.finish_reason, choice
    return out


@pytest.mark.parametrize(("route", "mode"), [("bare", "default"), ("async", "asynchronous"),
                                             ("deployment", "default"), ("deployment", "asynchronous")])  # fmt: skip
def test_a_blocked_completion_never_streams_the_blocked_text(servers: dict[str, Any], route: str, mode: str) -> None:
    if route == "deployment":
        shown = cli_json(servers["home"], "deploy", "update", "chat", "--content-safety-streaming", mode)
        assert shown["settings"]["content_safety"]["streaming"] == mode
    found: dict[str, Any] = {}

    def in_mode() -> bool:  # only the asynchronous mode reports offsets; a deployment changes mode at its poll
        found.update(streamed(*endpoint(servers, route)))
        return ("content_filter_offsets" in found["choice"]) == (mode == "asynchronous")

    wait_for(in_mode, PICKUP_S + 5, f"{route} streaming in the {mode} mode")
    text = found["text"]
    assert found["finish"] == "content_filter", f"{route}/{mode}: finished {found['finish']!r} after {text!r}"
    assert len(text) < 30, f"{route}/{mode}: {len(text)} characters reached the client: {text!r}"
    assert found["choice"]["content_filter_results"]["custom_blocklists"] == LIST


def test_the_management_api_manages_a_deployments_lists(servers: dict[str, Any]) -> None:
    base = f"{servers['platform'].url}/management/deployments/chat/blocklists"
    headers = {"api-key": servers["admin"]}
    put = httpx.put(f"{base}/api-list", json={"items": ["Fabrikam"], "description": "from the API"}, headers=headers)
    assert put.status_code == 200 and put.json()["items"] == [{"pattern": "Fabrikam", "is_regex": False}]
    bad = httpx.put(f"{base}/x", json={"items": [{"pattern": "(a)\\1", "is_regex": True}]}, headers=headers)
    assert bad.status_code == 400 and "RE2" in bad.json()["error"]["message"]
    listed = httpx.get(base, headers=headers).json()["data"]
    assert [b["id"] for b in listed] == ["banned", "api-list"]
    url, key = servers["chat"]

    def blocked_by_api_list() -> bool:
        with sdk(url, key) as client:
            try:
                client.complete(messages=[UserMessage("hi fabrikam")], max_tokens=2)
            except HttpResponseError as error:
                return error.response.json()["error"]["innererror"]["content_filter_result"]["custom_blocklists"] == [
                    {"filtered": True, "id": "api-list"}
                ]
        return False

    wait_for(blocked_by_api_list, PICKUP_S + 5, "the new list blocking")
    assert httpx.delete(f"{base}/api-list", headers=headers).json() == {"id": "api-list", "deleted": True}
    assert httpx.delete(f"{base}/api-list", headers=headers).status_code == 404
