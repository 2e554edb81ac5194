"""Per-deployment content safety: policies from a deployment's type and settings, the settings `deploy
create/update --content-safety*` store, and guard deployments resolved to their engine."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llamafoundry.cli import main
from llamafoundry.platform.content_safety import (
    DeploymentGuard,
    DeploymentSafety,
    content_safety_settings,
    deployment_policy,
    guard_variant,
    is_guard_model,
    with_content_safety,
)
from llamafoundry.platform.store import Deployment, Store
from llamafoundry.safety.backend import FilteredChatBackend
from llamafoundry.safety.base import ClassifierError, Role, Severity, Speaker, Turn
from llamafoundry.safety.builtin import BuiltinClassifier
from llamafoundry.safety.llama_guard import LlamaGuardClassifier
from llamafoundry.service.types import ChatMessage
from tests.api.fakes import FakeChatService


def deployment(name: str = "chat", type: str = "serverless", **settings: Any) -> Deployment:
    return Deployment(name=name, model="Meta-Llama-3.1-8B-Instruct", type=type, instances=1, created_at=0.0,
                      settings=settings)  # fmt: skip


@dataclass
class FakeTarget:
    deployment: Deployment | None
    service: Any = None


@dataclass
class Targets:
    found: dict[str, FakeTarget] = field(default_factory=dict)

    def __call__(self, name: str) -> FakeTarget | None:
        return self.found.get(name)


def test_serverless_is_on_and_managed_off_by_default() -> None:
    assert deployment_policy("serverless", {}).enabled
    assert not deployment_policy("managed", {}).enabled


def test_stored_overrides_apply_over_the_type_default() -> None:
    settings = {"content_safety": {"enabled": True, "threshold": "high", "guard": "guard"}}
    policy = deployment_policy("managed", settings)
    assert policy.enabled and policy.threshold == Severity.HIGH and policy.guard == "guard" and policy.jailbreak


def test_settings_merge_with_what_is_stored_and_are_validated() -> None:
    assert content_safety_settings(None) == {}
    first = content_safety_settings(None, enabled=False, categories=["violence", "hate"])
    assert first == {"content_safety": {"enabled": False, "categories": ["hate", "violence"]}}
    second = content_safety_settings(first["content_safety"], guard="guard", jailbreak=False)
    assert second["content_safety"] == {
        "enabled": False, "categories": ["hate", "violence"], "guard": "guard", "jailbreak": False,
    }  # fmt: skip
    assert content_safety_settings(second["content_safety"], guard="")["content_safety"]["guard"] is None
    with pytest.raises(ValueError, match="threshold"):
        content_safety_settings(None, threshold="safe")
    with pytest.raises(ValueError, match="unknown gore"):
        content_safety_settings(None, categories=["gore"])


def test_each_deployment_gets_the_filter_of_its_current_policy() -> None:
    targets = Targets({"chat": FakeTarget(deployment()), "fleet": FakeTarget(deployment("fleet", "managed"))})
    builtin = BuiltinClassifier()
    safety = DeploymentSafety(targets, builtin)
    chat = safety.for_deployment("chat")
    assert chat is not None and chat.classifier is builtin and safety.for_deployment("chat") is chat  # cached
    assert safety.for_deployment("fleet") is None and safety.for_deployment("gone") is None
    targets.found["fleet"].deployment = deployment("fleet", "managed", content_safety={"enabled": True})
    fleet = safety.for_deployment("fleet")
    assert fleet is not None and fleet.policy.enabled  # a settings change applies to the next request


def test_a_named_guard_classifies_through_the_guard_deployments_engine() -> None:
    class Engine:
        is_ready = True

    targets = Targets({"chat": FakeTarget(deployment(content_safety={"guard": "guard"}))})
    safety = DeploymentSafety(targets, BuiltinClassifier())
    chat = safety.for_deployment("chat")
    assert chat is not None and isinstance(chat.classifier, DeploymentGuard)
    guard = chat.classifier
    turns = [Turn(Speaker.USER, "hello")]
    with pytest.raises(ClassifierError, match="does not exist"):
        asyncio.run(guard.classify(turns, Role.PROMPT))
    guard_deployment = Deployment(name="guard", model="Llama-Guard-3-1B", type="managed", instances=1, created_at=0.0)
    targets.found["guard"] = FakeTarget(guard_deployment, service=object())
    with pytest.raises(ClassifierError, match="no engine in this process"):  # an upstream guard: nothing local
        asyncio.run(guard.classify(turns, Role.PROMPT))
    engine = Engine()
    safety.guard_engines["guard"] = engine  # what `with_content_safety` records as it builds a local guard
    found = guard._classifier()
    assert isinstance(found, LlamaGuardClassifier) and found.engine is engine and found.variant == "1B"
    # a fail-open policy answers with Azure's "not filtered" annotation when the guard cannot judge
    targets.found.pop("guard")
    results = asyncio.run(chat.check_prompt([]))  # nothing to judge: safe without asking
    assert results is not None
    results = asyncio.run(chat.check_prompt([ChatMessage("user", "hello")]))
    assert results is not None and results[0]["content_filter_results"]["error"]["code"] == "content_filter_error"


def test_guard_models() -> None:
    assert is_guard_model("Llama-Guard-3-1B") and not is_guard_model("Llama-Guard-3-11B-Vision")
    assert not is_guard_model("Meta-Llama-3.1-8B-Instruct")
    assert guard_variant("Llama-Guard-3-1B") == "1B" and guard_variant("Llama-Guard-3-8B") == "8B"


def test_the_factory_wraps_every_deployment() -> None:
    built: list[str] = []

    def factory(d: Deployment) -> FakeChatService:
        built.append(d.name)
        return FakeChatService()

    backend = with_content_safety(factory, Targets())(deployment())
    assert isinstance(backend, FilteredChatBackend) and built == ["chat"] and backend.safety_of() is None


def test_deploy_commands_store_the_policy(tmp_path: Path, tiny_model_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    model = ["--model", "Meta-Llama-3.1-8B-Instruct", "--weights", str(tiny_model_path)]
    assert main(["deploy", "create", "chat", *model, "--content-safety", "off", *data]) == 0
    assert main(["deploy", "update", "chat", "--content-safety-threshold", "high", *data]) == 0
    # a guard must be a Llama Guard 3 deployment: a misspelt one left the deployment unfiltered (fail-open)
    assert main(["deploy", "update", "chat", "--content-safety-guard", "guard", *data]) == 2
    assert main(["deploy", "update", "chat", "--content-safety-guard", "chat", *data]) == 2
    guard_model = ["--model", "Llama-Guard-3-1B", "--type", "managed", "--weights", str(tiny_model_path)]
    assert main(["deploy", "create", "guard", *guard_model, *data]) == 0
    assert main(["deploy", "update", "chat", "--content-safety-guard", "guard", "--tpm", "10", *data]) == 0
    assert main(["deploy", "update", "chat", "--content-safety-categories", "violence,gore", *data]) == 2
    store = Store.open(tmp_path)
    try:
        stored = store.get_deployment("chat")
    finally:
        store.close()
    assert stored is not None and stored.settings["tokens_per_minute"] == 10
    assert stored.settings["content_safety"] == {"enabled": False, "threshold": "high", "guard": "guard"}
    policy = deployment_policy(stored.type, stored.settings)
    assert not policy.enabled and policy.threshold == Severity.HIGH and policy.guard == "guard"
