"""Deployments end to end: `llamafoundry deploy` on a data directory, a real `llamafoundry serve` over it with
replica processes of the tiny GGUF, and the azure-ai-inference SDK against `/deployments/<name>` and `/models`."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from tests.api.conftest import API_KEY
from tests.api.deployment_fixtures import PICKUP_S, Gateway, chat, cli_json, start_gateway, wait_for, wait_ready
from tests.gguf_files import metadata_only_gguf

pytestmark = pytest.mark.slow

CHAT_MODEL = "Meta-Llama-3.1-8B-Instruct"
FLEET_MODEL = "Llama-3.2-1B-Instruct"


@dataclass
class Setup:
    home: Path
    gateway: Gateway
    chat_keys: dict[str, str]
    fleet_keys: dict[str, str]
    admin_key: str


@pytest.fixture(scope="module")
def setup(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("platform-home")
    weights = str(tiny_model_path)
    chat_dep = cli_json(home, "deploy", "create", "chat", "--model", CHAT_MODEL, "--weights", weights)
    fleet = cli_json(home, "deploy", "create", "fleet", "--model", FLEET_MODEL, "--type", "managed",
                     "--instances", "2", "--weights", weights)  # fmt: skip
    admin = cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]
    gateway = start_gateway(home, tiny_model_path)
    keys = {d["name"]: {"primary": d["primary_key"], "secondary": d["secondary_key"]} for d in (chat_dep, fleet)}
    wait_ready(f"{gateway.url}/deployments/chat/chat/completions", keys["chat"]["primary"])
    wait_ready(f"{gateway.url}/deployments/fleet/chat/completions", keys["fleet"]["primary"])
    state = Setup(home, gateway, keys["chat"], keys["fleet"], admin)
    yield state
    state.gateway.stop()  # a test restarts the server: stop whichever one runs now


def test_each_deployment_is_an_sdk_endpoint_reporting_its_catalog_model(setup: Setup) -> None:
    for name, keys, model in (("chat", setup.chat_keys, CHAT_MODEL), ("fleet", setup.fleet_keys, FLEET_MODEL)):
        client = ChatCompletionsClient(f"{setup.gateway.url}/deployments/{name}", AzureKeyCredential(keys["primary"]))
        assert client.get_model_info().model_name == model
        response = client.complete(messages=[UserMessage("Hi!")], max_tokens=4)
        assert response.model == model and response.usage.completion_tokens >= 1
        chunks = list(client.complete(messages=[UserMessage("Hi!")], max_tokens=4, stream=True))
        assert chunks and any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_models_endpoint_routes_by_header_or_body_model(setup: Setup) -> None:
    url = f"{setup.gateway.url}/models/chat/completions"
    by_header = chat(url, setup.fleet_keys["primary"], {"azureml-model-deployment": "fleet"})
    assert by_header.status_code == 200 and by_header.json()["model"] == FLEET_MODEL
    by_body = chat(url, setup.chat_keys["secondary"], model="CHAT")  # routing is case-insensitive
    assert by_body.status_code == 200 and by_body.json()["model"] == CHAT_MODEL
    client = ChatCompletionsClient(f"{setup.gateway.url}/models", AzureKeyCredential(setup.fleet_keys["secondary"]))
    info = client.get_model_info(headers={"azureml-model-deployment": "fleet"})
    assert info.model_name == FLEET_MODEL
    unknown = chat(url, setup.chat_keys["primary"], {"azureml-model-deployment": "nope"})
    assert unknown.status_code == 404 and "Deployment 'nope' not found" in unknown.json()["error"]["message"]


def test_bare_routes_still_serve_the_servers_own_model(setup: Setup) -> None:
    client = ChatCompletionsClient(setup.gateway.url, AzureKeyCredential(API_KEY))
    assert client.get_model_info().model_name == "tiny-llama"
    with pytest.raises(ClientAuthenticationError):  # a deployment's key is not the server's key
        ChatCompletionsClient(setup.gateway.url, AzureKeyCredential(setup.chat_keys["primary"])).get_model_info()
    models = httpx.get(f"{setup.gateway.url}/v1/models", headers={"api-key": API_KEY}).json()
    assert [m["id"] for m in models["data"]] == ["tiny-llama"]  # what the server's own key opens


def test_keys_belong_to_one_deployment(setup: Setup) -> None:
    client = ChatCompletionsClient(
        f"{setup.gateway.url}/deployments/fleet", AzureKeyCredential(setup.chat_keys["primary"])
    )
    with pytest.raises(ClientAuthenticationError, match="(?i)auth token validation failed"):
        client.complete(messages=[UserMessage("Hi!")])
    with pytest.raises(ResourceNotFoundError):
        ChatCompletionsClient(f"{setup.gateway.url}/deployments/nope", AzureKeyCredential(API_KEY)).get_model_info()


def test_requests_are_balanced_across_replicas(setup: Setup) -> None:
    url = f"{setup.gateway.url}/deployments/fleet/chat/completions"
    for _ in range(4):
        assert chat(url, setup.fleet_keys["primary"]).status_code == 200
    status = httpx.get(f"{setup.gateway.url}/management/deployments/fleet", headers={"api-key": setup.admin_key})
    body = status.json()["status"]
    assert body["state"] == "ready" and len(body["replicas"]) == 2
    assert all(n >= 2 for n in body["requests"]), body  # sequential requests alternate between the two
    assert len({r["url"] for r in body["replicas"]}) == 2
    assert all(isinstance(r["pid"], int) for r in body["replicas"])  # to find a replica's process


def test_a_running_server_picks_up_deploy_commands_within_two_seconds(setup: Setup) -> None:
    url = setup.gateway.url
    # An upstream deployment is ready at once (no model to load): it forwards to this server's own model.
    late = cli_json(setup.home, "deploy", "create", "late", "--model", "Meta-Llama-3.1-70B-Instruct",
                    "--upstream", f"{url}/v1", "--upstream-key", API_KEY)  # fmt: skip
    late_url = f"{url}/deployments/late/chat/completions"
    took = wait_for(lambda: chat(late_url, late["primary_key"]).status_code == 200, PICKUP_S, "the new deployment")
    assert took < PICKUP_S and chat(late_url, late["primary_key"]).json()["model"] == "Meta-Llama-3.1-70B-Instruct"

    new = cli_json(setup.home, "deploy", "keys", "late", "--regenerate", "primary")["primary_key"]
    wait_for(lambda: chat(late_url, late["primary_key"]).status_code == 401, PICKUP_S, "the old key stopping")
    assert chat(late_url, new).status_code == 200 and chat(late_url, late["secondary_key"]).status_code == 200

    cli_json(setup.home, "deploy", "list")  # any command; then delete
    from llamafoundry.cli import main

    assert main(["deploy", "delete", "late", "--data-dir", str(setup.home)]) == 0
    # its key opens nothing any more: a 401, as for any unknown name asked with no valid key (no probing)
    wait_for(lambda: chat(late_url, new).status_code == 401, PICKUP_S, "the deleted deployment disappearing")
    assert chat(late_url, API_KEY).status_code == 404  # with a key that opens something here: not found


def test_replica_logs_never_show_the_replica_key_and_only_the_server_user_reads_them(setup: Setup) -> None:
    """The key opens the replica's port directly, past the gateway's auth, limits and content safety: it was printed
    in the banner into a world-readable log."""
    logs = setup.home / "logs"
    log = logs / "chat-0.log"
    text = log.read_text()
    assert "API key: the value of $LLAMAFOUNDRY_API_KEY" in text and 'LLAMAFOUNDRY_API_KEY"]' in text
    assert not re.search(r'(API key[^\n]*|AzureKeyCredential\(")[0-9a-f]{32}', text), text
    assert logs.stat().st_mode & 0o777 == 0o700 and log.stat().st_mode & 0o777 == 0o600


def test_weights_that_do_not_load_fail_the_deployment_at_once(setup: Setup, tmp_path: Path) -> None:
    """The replica answers /health with model_load_failed: the deployment is failed (not starting for the 180 s
    start timeout), and its requests get a 503 that says so, with no Retry-After to wait for."""
    broken = tmp_path / "broken.gguf"
    metadata_only_gguf(broken)  # passes the create-time checks (metadata, memory), not llama.cpp's
    created = cli_json(setup.home, "deploy", "create", "broken", "--model", "Meta-Llama-3.1-70B-Instruct",
                       "--type", "managed", "--weights", str(broken))  # fmt: skip
    admin = {"api-key": setup.admin_key}

    def state() -> str:
        response = httpx.get(f"{setup.gateway.url}/management/deployments/broken", headers=admin, timeout=10)
        return str(response.json()["status"]["state"])

    wait_for(lambda: state() == "failed", 60, "the deployment failing")
    answer = chat(f"{setup.gateway.url}/deployments/broken/chat/completions", created["primary_key"])
    assert answer.status_code == 503 and "retry-after" not in answer.headers
    assert "failed to start" in answer.json()["error"]["message"]
    assert str(broken) not in answer.text  # the cause (paths of this machine) is for the admin
    status = httpx.get(f"{setup.gateway.url}/management/deployments/broken", headers=admin, timeout=10).json()
    assert "could not load" in status["status"]["error"] and str(broken) in status["status"]["error"]
    from llamafoundry.cli import main

    assert main(["deploy", "delete", "broken", "--data-dir", str(setup.home)]) == 0


def test_a_replica_that_dies_by_a_signal_is_reported_in_deploy_show_and_its_503_and_comes_back(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    """A llama.cpp build that executes an instruction the CPU lacks kills its replica with SIGILL: the crash is
    named with its cause (in `deploy show` and in the 503 of requests that find no replica), not a bare 503."""
    admin = {"api-key": setup.admin_key}
    url = f"{setup.gateway.url}/management/deployments/chat"

    def replica() -> dict[str, Any]:
        return dict(httpx.get(url, headers=admin, timeout=10).json()["status"]["replicas"][0])

    before = replica()
    os.kill(int(before["pid"]), signal.SIGILL)
    wait_for(lambda: replica()["last_exit"] is not None, 30, "the gateway noticing the crash")
    answer = chat(f"{setup.gateway.url}/deployments/chat/chat/completions", setup.chat_keys["primary"])
    if not replica()["healthy"]:  # answered before the restart finished (else the restart beat this request)
        assert answer.status_code == 503, answer.text
        message = answer.json()["error"]["message"]
        assert "Replica 0 of deployment 'chat' died with SIGILL (Illegal instruction)" in message, message
    wait_ready(f"{setup.gateway.url}/deployments/chat/chat/completions", setup.chat_keys["primary"])
    after = replica()
    assert after["restarts"] == before["restarts"] + 1 and after["pid"] != before["pid"]

    def reported() -> bool:
        runtime = cli_json(setup.home, "deploy", "show", "chat")["runtime"]
        first = runtime[0]["replicas"][0] if runtime else {}
        return first.get("restarts") == after["restarts"] and bool(first.get("healthy"))

    wait_for(reported, 20, "the gateway reporting the restart to the store")
    shown = cli_json(setup.home, "deploy", "show", "chat")["runtime"][0]
    assert shown["state"] == "ready" and not shown["stale"]
    last_exit = shown["replicas"][0]["last_exit"]
    assert "SIGILL (Illegal instruction) while serving" in last_exit and "cannot execute" in last_exit
    capsys.readouterr()
    from llamafoundry.cli import main

    assert main(["deploy", "show", "chat", "--data-dir", str(setup.home)]) == 0
    printed = capsys.readouterr()
    assert "died with SIGILL (Illegal instruction)" in printed.err and f"{after['restarts']} restart(s)" in printed.err


def test_deployments_survive_a_restart_and_no_default_leaves_bare_routes_to_them(
    setup: Setup, tiny_model_path: Path
) -> None:
    setup.gateway.stop()
    setup.gateway = start_gateway(setup.home, tiny_model_path, "--no-default")
    url = setup.gateway.url
    wait_ready(f"{url}/deployments/chat/chat/completions", setup.chat_keys["primary"])
    bare = chat(f"{url}/chat/completions", API_KEY)
    assert bare.status_code == 404 and "no default model" in bare.json()["error"]["message"]
    routed = chat(f"{url}/chat/completions", setup.chat_keys["primary"], {"azureml-model-deployment": "chat"})
    assert routed.status_code == 200 and routed.json()["model"] == CHAT_MODEL
    via_models = chat(f"{url}/models/chat/completions", setup.chat_keys["primary"], model="chat")
    assert via_models.status_code == 200
    # with no model of its own the server lists what the caller's key opens (the OpenAI SDK's models.list())
    listed = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {setup.chat_keys['primary']}"})
    assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == ["chat"]
    one = httpx.get(f"{url}/v1/models/fleet", headers={"api-key": setup.fleet_keys["secondary"]})
    assert one.status_code == 200 and one.json()["id"] == "fleet"
    hidden = httpx.get(f"{url}/v1/models/fleet", headers={"api-key": setup.chat_keys["primary"]})
    assert hidden.status_code == 404
    assert httpx.get(f"{url}/v1/models", headers={"api-key": "wrong"}).status_code == 401
