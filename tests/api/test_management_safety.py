"""`GET/PATCH /management/deployments/{name}/content-safety` (in-process, real SQLite store, fake chat services):
the effective policy, the CLI's rules and sentences, the guard check, the admin key, and the gateway applying it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.api.management import management_router
from llamafoundry.config import EngineSettings, ServeSettings
from llamafoundry.platform.content_safety import deployment_policy
from llamafoundry.platform.deployments import regenerate_admin_key
from llamafoundry.platform.gateway import Gateway, Target, single_key_policy
from llamafoundry.platform.store import Deployment, Store
from tests.api.conftest import API_KEY, MODEL_NAME
from tests.api.fakes import FakeChatService
from tests.gguf_files import metadata_only_gguf

MODEL = "Meta-Llama-3.1-8B-Instruct"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    metadata_only_gguf(tmp_path / "model.gguf")
    opened = Store.open(tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def admin(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    settings = ServeSettings(engine=EngineSettings(model_path=Path("unused.gguf")), model_name=MODEL_NAME,
                             api_key=API_KEY)  # fmt: skip
    default = Target(FakeChatService(model_name=MODEL_NAME), single_key_policy(API_KEY), default_name=MODEL_NAME)
    gateway = Gateway(default, store, lambda d: FakeChatService(model_name=d.model), poll_interval_s=0.2)
    app = create_app(default.service, settings, gateway=gateway,  # type: ignore[arg-type]
                     management=management_router(store, tmp_path, gateway))  # fmt: skip
    with TestClient(app, headers={"api-key": regenerate_admin_key(store)}) as client:
        for name, model, kind in (("chat", MODEL, "serverless"), ("guard", "Llama-Guard-3-1B", "managed")):
            body = {"name": name, "model": model, "type": kind, "weights": str(tmp_path / "model.gguf")}
            assert client.post("/management/deployments", json=body).status_code == 201
        yield client


def test_get_answers_the_effective_policy(admin: TestClient) -> None:
    body = admin.get("/management/deployments/chat/content-safety").json()
    assert body["policy"]["enabled"] is True and body["policy"]["threshold"] == "medium"  # serverless default
    assert body["policy"]["streaming"] == "default" and body["overrides"] == {}
    assert admin.get("/management/deployments/guard/content-safety").json()["policy"]["enabled"] is False  # managed


def test_patch_stores_every_setting_and_the_gateway_applies_it(admin: TestClient, store: Store) -> None:
    change = {"threshold": "high", "categories": ["hate", "violence"], "jailbreak": False, "streaming": "asynchronous",
              "indirect_attack": False, "guard": "guard"}  # fmt: skip
    answer = admin.patch("/management/deployments/chat/content-safety", json=change)
    assert answer.status_code == 200, answer.text
    assert answer.json()["overrides"] == {**change, "categories": ["hate", "violence"]}
    stored = store.get_deployment("chat")
    assert isinstance(stored, Deployment)
    policy = deployment_policy(stored.type, stored.settings)
    assert (policy.threshold.value, policy.streaming, policy.guard, policy.jailbreak) == ("high", "asynchronous",
                                                                                         "guard", False)  # fmt: skip
    cleared = admin.patch("/management/deployments/chat/content-safety", json={"guard": None, "enabled": False})
    assert cleared.json()["policy"]["guard"] is None and cleared.json()["policy"]["enabled"] is False
    assert cleared.json()["policy"]["threshold"] == "high"  # the other overrides stay


@pytest.mark.parametrize(
    ("body", "param", "sentence"),
    [
        ({"threshold": "severe"}, "threshold", "--content-safety-threshold severe: use low, medium or high."),
        ({"streaming": "later"}, "streaming", "--content-safety-streaming later: use default or asynchronous."),
        ({"categories": ["hate", "spam"]}, "categories", "--content-safety-categories: unknown spam"),
        ({"guard": "nobody"}, "guard", "--content-safety-guard nobody: no deployment has that name."),
        ({"guard": "chat"}, "guard", "that deployment serves Meta-Llama-3.1-8B-Instruct, not Llama Guard 3."),
        ({"enabled": "yes"}, "enabled", "'enabled' must be a boolean."),
        ({"blocklists": []}, "blocklists", "Unknown field 'blocklists'."),
        ({}, None, "Nothing to change"),
    ],
)
def test_patch_refuses_with_the_clis_sentences(admin: TestClient, body: dict, param: str | None, sentence: str) -> None:
    answer = admin.patch("/management/deployments/guard/content-safety", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert sentence in error["message"] and error.get("param") == param


def test_needs_the_admin_key_and_a_deployment(admin: TestClient) -> None:
    assert admin.get("/management/deployments/nope/content-safety").status_code == 404
    for key in (API_KEY, "wrong"):
        answer = admin.get("/management/deployments/chat/content-safety", headers={"api-key": key})
        assert answer.status_code == 401
