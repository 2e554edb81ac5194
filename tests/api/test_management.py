"""The /management API (in-process, over a real SQLite store and fake chat services): admin-key auth, the same
deployment rules and sentences as the CLI, and the running gateway picking up what it changes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.api.management import management_router
from llamafoundry.cli import main
from llamafoundry.config import EngineSettings, ServeSettings
from llamafoundry.platform.deployments import DeploymentSpec, create_deployment, regenerate_admin_key
from llamafoundry.platform.gateway import Gateway, Target, single_key_policy
from llamafoundry.platform.keys import hash_key
from llamafoundry.platform.store import Deployment, Store
from tests.api.conftest import API_KEY, MODEL_NAME
from tests.api.fakes import FakeChatService
from tests.gguf_files import metadata_only_gguf

MODEL = "Meta-Llama-3.1-8B-Instruct"
PICKUP_S = 10.0  # 50 polls: generous, so a busy CI machine does not fail it


@pytest.fixture
def home(tmp_path: Path) -> Path:
    metadata_only_gguf(tmp_path / "model.gguf")
    return tmp_path


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    opened = Store.open(home)
    yield opened
    opened.close()


@pytest.fixture
def admin_key(store: Store) -> str:
    return regenerate_admin_key(store)


def fake_backend(deployment: Deployment) -> FakeChatService:
    return FakeChatService(model_name=deployment.model)


@pytest.fixture
def client(store: Store, home: Path) -> Iterator[TestClient]:
    settings = ServeSettings(engine=EngineSettings(model_path=Path("unused.gguf")), model_name=MODEL_NAME,
                             api_key=API_KEY)  # fmt: skip
    default = Target(FakeChatService(model_name=MODEL_NAME), single_key_policy(API_KEY), default_name=MODEL_NAME)
    gateway = Gateway(default, store, fake_backend, poll_interval_s=0.2)
    app = create_app(default.service, settings, gateway=gateway, management=management_router(store, home, gateway))  # type: ignore[arg-type]
    with TestClient(app) as test_client:
        yield test_client


def create_body(home: Path, **fields: object) -> dict[str, object]:
    return {"name": "chat", "model": MODEL, "weights": str(home / "model.gguf"), **fields}


def test_management_needs_the_admin_key(client: TestClient, admin_key: str, home: Path) -> None:
    assert client.get("/management/deployments").status_code == 401
    assert client.get("/management/deployments", headers={"api-key": API_KEY}).status_code == 401  # a model key
    created = client.post("/management/deployments", json=create_body(home), headers={"api-key": admin_key}).json()
    for key in (created["primary_key"], created["secondary_key"]):  # deployment keys are not admin keys
        assert client.get("/management/deployments", headers={"api-key": key}).status_code == 401
    ok = client.get("/management/deployments", headers={"Authorization": f"Bearer {admin_key}"})
    assert ok.status_code == 200 and [d["name"] for d in ok.json()["data"]] == ["chat"]
    whoami = client.get("/management/whoami", headers={"api-key": admin_key}).json()
    assert whoami["actor_type"] == "admin" and whoami["project"] is None and whoami["actor"].startswith("key-")
    assert client.get("/management/whoami", headers={"api-key": created["primary_key"]}).status_code == 401


def test_a_regenerated_admin_key_replaces_the_old_one(client: TestClient, admin_key: str, store: Store) -> None:
    new_key = regenerate_admin_key(store)
    assert client.get("/management/models", headers={"api-key": admin_key}).status_code == 401
    assert client.get("/management/models", headers={"api-key": new_key}).status_code == 200


def test_catalog_routes(client: TestClient, admin_key: str) -> None:
    headers = {"api-key": admin_key}
    models = client.get("/management/models", headers=headers).json()["data"]
    assert len(models) == 17 and all(m["provider"] == "Meta" for m in models)
    one = client.get("/management/models/llama-3.2-11b-vision-instruct", headers=headers).json()
    assert one["name"] == "Llama-3.2-11B-Vision-Instruct" and one["input_modalities"] == ["text", "image"]
    missing = client.get("/management/models/gpt-4", headers=headers)
    assert missing.status_code == 404 and "not in the catalog" in missing.json()["error"]["message"]


def test_deployment_lifecycle_and_the_gateway_follows(client: TestClient, admin_key: str, home: Path) -> None:
    admin = {"api-key": admin_key}
    created = client.post("/management/deployments", json=create_body(home), headers=admin)
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "chat" and body["type"] == "serverless" and len(body["primary_key"]) == 32
    assert body["status"] == {"state": "pending"}  # stored; the server picks it up at its next poll

    def chat(key: str) -> int:
        payload = {"messages": [{"role": "user", "content": "Hi"}]}
        return client.post("/deployments/chat/chat/completions", json=payload, headers={"api-key": key}).status_code

    started = time.monotonic()
    while chat(body["primary_key"]) != 200:
        assert time.monotonic() - started < PICKUP_S, f"the new deployment was not served within {PICKUP_S} s"
        time.sleep(0.05)
    info = client.get("/deployments/chat/info", headers={"api-key": body["secondary_key"]}).json()
    assert info["model_name"] == MODEL

    shown = client.get("/management/deployments/chat", headers=admin).json()
    assert shown["status"]["state"] == "ready" and set(shown["keys"]) == {"primary", "secondary"}
    assert "primary_key" not in shown

    rotated = client.post("/management/deployments/chat/keys/regenerate", json={"keyType": "Primary"}, headers=admin)
    assert rotated.status_code == 200 and rotated.json()["keyType"] == "primary"
    started = time.monotonic()
    while chat(body["primary_key"]) != 401:
        assert time.monotonic() - started < PICKUP_S, "the old key kept working"
        time.sleep(0.05)
    assert chat(rotated.json()["key"]) == 200 and chat(body["secondary_key"]) == 200

    assert client.delete("/management/deployments/chat", headers=admin).json() == {"name": "chat", "deleted": True}
    started = time.monotonic()
    while chat(body["secondary_key"]) != 401:  # its key opens nothing now (unknown names are a 404 for valid keys)
        assert time.monotonic() - started < PICKUP_S, "the deleted deployment kept answering"
        time.sleep(0.05)
    assert client.delete("/management/deployments/chat", headers=admin).status_code == 404


def test_rules_answer_with_the_cli_sentences(client: TestClient, admin_key: str, home: Path) -> None:
    admin = {"api-key": admin_key}
    assert client.post("/management/deployments", json=create_body(home), headers=admin).status_code == 201
    conflict = client.post("/management/deployments", json=create_body(home, name="other"), headers=admin)
    assert conflict.status_code == 409
    assert "Deployment 'chat' already holds the serverless deployment" in conflict.json()["error"]["message"]
    for fields, status, text in [
        ({"model": "Llama-Guard-3-1B", "name": "guard"}, 400, "cannot be deployed as serverless"),
        ({"name": "x"}, 400, "not a valid deployment name"),
        ({"name": "m", "instances": "two"}, 400, "'instances' must be a int"),
        ({"name": "m", "colour": "red"}, 400, "Unknown field 'colour'"),
    ]:
        answer = client.post("/management/deployments", json=create_body(home, **fields), headers=admin)
        assert answer.status_code == status and text in answer.json()["error"]["message"], answer.text
    bad_key = client.post("/management/deployments/chat/keys/regenerate", json={"keyType": "tertiary"}, headers=admin)
    assert bad_key.status_code == 400 and "primary or secondary" in bad_key.json()["error"]["message"]
    assert client.get("/management/deployments/nope", headers=admin).status_code == 404


def test_managed_deployment_options(client: TestClient, admin_key: str, home: Path) -> None:
    body = create_body(home, name="fleet", type="managed", instances=3, shared_quota=True,
                       instance_type="Standard_D4as_v4")  # fmt: skip
    created = client.post("/management/deployments", json=body, headers={"api-key": admin_key}).json()
    assert created["instances"] == 3 and created["instance_type"] == "Standard_D4as_v4"
    assert created["shared_quota"] is True and 167.9 <= created["expires_in_hours"] <= 168
    assert created["auth"] == "key, token" and created["billing"] == "core-hours"


def test_a_deployment_cannot_take_the_name_of_the_servers_own_model(
    client: TestClient, admin_key: str, home: Path, store: Store
) -> None:
    """It would share the model's routes, rate limits and usage records (the limits and usage of both were
    one counter): the API refuses the name, and one written by the CLI is not served and says why."""
    admin = {"api-key": admin_key}
    refused = client.post("/management/deployments", json=create_body(home, name=MODEL_NAME.upper()), headers=admin)
    assert refused.status_code == 409 and "name of this server's own model" in refused.json()["error"]["message"]

    _, keys = create_deployment(store, DeploymentSpec(MODEL_NAME, MODEL, weights=home / "model.gguf"), home)
    time.sleep(PICKUP_S)
    status = client.get(f"/management/deployments/{MODEL_NAME}", headers=admin).json()["status"]
    assert status["state"] == "not served" and "--name OTHER" in status["error"]
    payload = {"messages": [{"role": "user", "content": "Hi"}]}
    url = f"/deployments/{MODEL_NAME}/chat/completions"
    assert client.post(url, json=payload, headers={"api-key": keys.primary}).status_code == 401
    answered = client.post(url, json=payload, headers={"api-key": API_KEY})
    assert answered.status_code == 200 and answered.json()["model"] == MODEL_NAME


def test_limits_and_content_safety_are_set_at_create_and_changed_with_patch(
    client: TestClient, admin_key: str, home: Path, store: Store
) -> None:
    """What `deploy create/update --tpm --rpm --content-safety` do, for platform teams that script the API (it
    answered "Unknown field 'tpm'" and had no update route)."""
    admin = {"api-key": admin_key}
    body = create_body(home, tpm=5000, rpm=30, content_safety=False)
    created = client.post("/management/deployments", json=body, headers=admin).json()
    assert created["settings"]["tokens_per_minute"] == 5000 and created["settings"]["requests_per_minute"] == 30
    assert created["settings"]["content_safety"]["enabled"] is False

    changed = client.patch("/management/deployments/chat", json={"rpm": 0, "content_safety": True}, headers=admin)
    assert changed.status_code == 200, changed.text
    settings = changed.json()["settings"]
    assert settings["requests_per_minute"] == 0 and settings["tokens_per_minute"] == 5000  # 0: no limit
    assert settings["content_safety"]["enabled"] is True
    assert store.get_deployment("chat").settings == settings  # type: ignore[union-attr]
    for payload, status, text in [
        ({}, 400, "Nothing to change"),
        ({"tpm": -1}, 400, "tpm -1"),
        ({"tpm": "many"}, 400, "'tpm' must be a int"),
        ({"model": "other"}, 400, "Unknown field 'model'"),
    ]:
        answer = client.patch("/management/deployments/chat", json=payload, headers=admin)
        assert answer.status_code == status and text in answer.json()["error"]["message"], answer.text
    assert client.patch("/management/deployments/nope", json={"rpm": 1}, headers=admin).status_code == 404
    assert client.patch("/management/deployments/chat", json={"rpm": 1}).status_code == 401


def test_a_store_that_cannot_be_reached_is_a_503_to_retry(client: TestClient, admin_key: str, store: Store) -> None:
    """A database that is down was a generic 500 on every management call."""
    import sqlalchemy as sa

    working = store.engine
    store.engine = sa.create_engine("sqlite:////nonexistent-directory/store.db")  # cannot be opened
    try:
        answer = client.get("/management/deployments", headers={"api-key": admin_key})
    finally:
        store.engine = working
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
    assert "store (its database) cannot be reached" in answer.json()["error"]["message"]
    assert client.get("/management/deployments", headers={"api-key": admin_key}).status_code == 200


def test_a_deployment_key_cannot_be_set_to_the_servers_own_key(
    client: TestClient, admin_key: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Then one key would open both the server's own model and the deployment: the API and the CLI (which works
    on the store, without the server) both refuse it with a 409 sentence."""
    admin = {"api-key": admin_key}
    created = client.post("/management/deployments", json=create_body(home), headers=admin)
    assert created.status_code == 201
    refused = client.post(
        "/management/deployments/chat/keys/regenerate", json={"keyType": "primary", "keyValue": API_KEY}, headers=admin
    )
    assert refused.status_code == 409, refused.text
    assert "--api-key of the server" in refused.json()["error"]["message"]
    code = main(["deploy", "keys", "chat", "--regenerate", "secondary", "--value", API_KEY, "--data-dir", str(home)])
    assert code != 0 and "--api-key of the server" in capsys.readouterr().err.replace("\n", " ")
    payload = {"messages": [{"role": "user", "content": "Hi"}]}

    def chat(key: str) -> int:
        return client.post("/deployments/chat/chat/completions", json=payload, headers={"api-key": key}).status_code

    started = time.monotonic()
    while chat(created.json()["primary_key"]) != 200:  # served (before that, its name is unknown: 404)
        assert time.monotonic() - started < PICKUP_S, "the deployment was not served"
        time.sleep(0.05)
    assert chat(API_KEY) == 401


def test_a_deployment_key_equal_to_the_servers_own_is_not_accepted_for_the_deployment(
    client: TestClient, admin_key: str, home: Path, store: Store
) -> None:
    """Set while the server was down (or in a race with the check): the running server does not accept it for the
    deployment, says so in the status, and keeps serving the deployment's other key."""
    admin = {"api-key": admin_key}
    _, keys = create_deployment(store, DeploymentSpec("chat", MODEL, weights=home / "model.gguf"), home)
    store.set_key("chat", "primary", hash_key(API_KEY))  # what no command lets through any more

    def chat(key: str) -> int:
        payload = {"messages": [{"role": "user", "content": "Hi"}]}
        return client.post("/deployments/chat/chat/completions", json=payload, headers={"api-key": key}).status_code

    started = time.monotonic()
    while chat(keys.secondary) != 200:
        assert time.monotonic() - started < PICKUP_S, "the deployment was not served"
        time.sleep(0.05)
    assert chat(API_KEY) == 401
    status = client.get("/management/deployments/chat", headers=admin).json()["status"]
    assert "primary key is this server's own --api-key" in status["key_refused"]
