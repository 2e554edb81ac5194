"""Content safety per deployment: the policy stored in a deployment's settings, the filter the gateway puts in
front of each deployment's service, and Llama Guard deployments named as another deployment's guard.

A deployment's policy is its type's default (`SafetyPolicy.for_deployment`: serverless on, managed compute off)
with the overrides stored under `settings["content_safety"]` (`deploy create/update --content-safety ...`). The
gateway reads it on every request, so `deploy update` applies within the gateway's poll. The filter runs in the
gateway, never in a deployment's replica processes, so forwarding to an `--upstream` server is filtered too.

A guard is a deployment of a Llama Guard 3 model. Its engine has to live in the gateway's process (the classifier
renders Meta's prompt and reads token log-probabilities), so `with_content_safety` serves Llama Guard deployments
of local weights in-process instead of in replica processes.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llamafoundry.engine.client import EngineClient
from llamafoundry.platform.catalog import find_instance_type
from llamafoundry.platform.store import Deployment
from llamafoundry.safety.backend import FilteredChatBackend
from llamafoundry.safety.base import (
    STREAMING_MODES,
    Category,
    ClassifierError,
    Role,
    SafetyClassifier,
    SafetyPolicy,
    Turn,
    Verdict,
)
from llamafoundry.safety.blocklists import Blocklist, BlocklistError, BlocklistItem, validated
from llamafoundry.safety.chat import ChatSafety
from llamafoundry.service.chat import ChatService

logger = logging.getLogger(__name__)

SETTING_CONTENT_SAFETY = "content_safety"  # key in a deployment's settings: a partial `SafetyPolicy.to_dict()`
GUARD_MODEL_PREFIX = "Llama-Guard-3-"


def deployment_policy(deployment_type: str, settings: Mapping[str, Any]) -> SafetyPolicy:
    """The policy of a deployment: its type's default, with its stored overrides."""
    overrides = json.dumps(settings.get(SETTING_CONTENT_SAFETY) or {}, sort_keys=True)
    return _policy(deployment_type, overrides)


@functools.lru_cache(maxsize=256)
def _policy(deployment_type: str, overrides: str) -> SafetyPolicy:
    """Parsed once per distinct stored form: the gateway asks on every request, and parsing compiles the
    blocklists' regular expressions."""
    policy = SafetyPolicy.for_deployment(deployment_type).to_dict()
    policy.update(json.loads(overrides))
    return SafetyPolicy.from_dict(policy)


def content_safety_settings(
    current: Mapping[str, Any] | None,
    *,
    enabled: bool | None = None,
    threshold: str | None = None,
    categories: Sequence[str] | None = None,
    jailbreak: bool | None = None,
    guard: str | None = None,
    indirect_attack: bool | None = None,
    streaming: str | None = None,
) -> dict[str, Any]:
    """The `settings` change that stores these overrides on top of `current` (the deployment's stored
    overrides); empty when nothing is given. `guard=""` removes the guard (the built-in classifier again).

    Raises:
        ValueError: a value that is not a valid policy setting (the message names the option).
    """
    changes: dict[str, Any] = {}
    if enabled is not None:
        changes["enabled"] = enabled
    if threshold is not None:
        if threshold not in ("low", "medium", "high"):
            raise ValueError(f"--content-safety-threshold {threshold}: use low, medium or high.")
        changes["threshold"] = threshold
    if categories is not None:
        known = [c.value for c in Category]
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise ValueError(f"--content-safety-categories: unknown {', '.join(unknown)}; use {', '.join(known)}.")
        changes["categories"] = sorted(set(categories))
    if jailbreak is not None:
        changes["jailbreak"] = jailbreak
    if guard is not None:
        changes["guard"] = guard or None
    if indirect_attack is not None:
        changes["indirect_attack"] = indirect_attack
    if streaming is not None:
        if streaming not in STREAMING_MODES:
            raise ValueError(f"--content-safety-streaming {streaming}: use {' or '.join(STREAMING_MODES)}.")
        changes["streaming"] = streaming
    if not changes:
        return {}
    merged = {**(current or {}), **changes}
    SafetyPolicy.from_dict({**SafetyPolicy().to_dict(), **merged})  # validate the whole policy
    return {SETTING_CONTENT_SAFETY: merged}


def stored_blocklists(settings: Mapping[str, Any]) -> list[Blocklist]:
    """The custom blocklists stored on a deployment (its `content_safety.blocklists`)."""
    stored = (settings.get(SETTING_CONTENT_SAFETY) or {}).get("blocklists") or []
    return [Blocklist.from_dict(b) for b in stored]


def blocklist_settings(settings: Mapping[str, Any], blocklists: Sequence[Blocklist]) -> dict[str, Any]:
    """The `settings` change that stores `blocklists` as the deployment's lists (other overrides kept)."""
    current = dict(settings.get(SETTING_CONTENT_SAFETY) or {})
    current["blocklists"] = [b.to_dict() for b in blocklists]
    if not current["blocklists"]:
        del current["blocklists"]
    return {SETTING_CONTENT_SAFETY: current or None}


def put_blocklist(settings: Mapping[str, Any], blocklist: Blocklist) -> dict[str, Any]:
    """Settings change: create `blocklist`, or replace the list of the same id."""
    lists = [b for b in stored_blocklists(settings) if b.id != blocklist.id]
    return blocklist_settings(settings, [*lists, validated(blocklist)])


def add_blocklist_items(
    settings: Mapping[str, Any], list_id: str, items: Sequence[BlocklistItem], description: str | None = None
) -> dict[str, Any]:
    """Settings change: add `items` to list `list_id` (created when missing; items already there are kept once)."""
    found = {b.id: b for b in stored_blocklists(settings)}.get(list_id) or Blocklist(list_id)
    merged = (*found.items, *(i for i in items if i not in found.items))
    text = found.description if description is None else description
    return put_blocklist(settings, Blocklist(list_id, tuple(dict.fromkeys(merged)), text))


def remove_blocklist_items(settings: Mapping[str, Any], list_id: str, patterns: Sequence[str]) -> dict[str, Any]:
    """Settings change: remove the items with these patterns from list `list_id`, or the whole list when none are
    named.

    Raises:
        BlocklistError: no such list, or a pattern that is not in it.
    """
    lists = stored_blocklists(settings)
    found = next((b for b in lists if b.id == list_id), None)
    if found is None:
        names = ", ".join(b.id for b in lists) or "none"
        raise BlocklistError(f"no blocklist named {list_id!r} on this deployment (its lists: {names}).")
    if not patterns:
        return blocklist_settings(settings, [b for b in lists if b.id != list_id])
    missing = [p for p in patterns if p not in {i.pattern for i in found.items}]
    if missing:
        raise BlocklistError(f"blocklist {list_id!r} has no item {missing[0]!r}.")
    kept = tuple(i for i in found.items if i.pattern not in patterns)
    return put_blocklist(settings, Blocklist(list_id, kept, found.description))


def guard_variant(model_name: str) -> str:
    """Llama Guard 3 8B lists S14; the 1B (and anything else) does not."""
    return "8B" if "-8B" in model_name else "1B"


def is_guard_model(model_name: str) -> bool:
    """A text Llama Guard 3 model (the 11B Vision guard judges images and is not a text classifier)."""
    return model_name.startswith(GUARD_MODEL_PREFIX) and "Vision" not in model_name


class DeploymentGuard:
    """`SafetyClassifier` that asks the Llama Guard deployment `name`, looked up at every check (so a guard that
    is re-created, or started after the deployments it guards, is found). A guard that does not exist, has no
    in-process engine or is still loading raises `ClassifierError`: the policy's `fail_open` decides.

    Args:
        name: the guard deployment.
        resolve: the gateway's `resolve` (a deployment name -> its target, or None).
        engines: the engines of the guard deployments this process runs, by deployment name.
    """

    name = "llama-guard-3"
    window_chars = 600

    def __init__(self, name: str, resolve: Callable[[str], Any], engines: Mapping[str, EngineClient]) -> None:
        self.deployment = name
        self.resolve = resolve
        self.engines = engines
        self._classifiers: dict[int, SafetyClassifier] = {}

    async def classify(self, turns: Sequence[Turn], role: Role) -> Verdict:
        return await self._classifier().classify(turns, role)

    def _classifier(self) -> SafetyClassifier:
        from llamafoundry.safety.llama_guard import LlamaGuardClassifier

        target = self.resolve(self.deployment)
        if target is None or target.deployment is None:
            raise ClassifierError(f"the guard deployment '{self.deployment}' does not exist")
        engine = self.engines.get(self.deployment)  # its engine, not its service: a guard's own filter never judges
        if engine is None:
            raise ClassifierError(
                f"the guard deployment '{self.deployment}' has no engine in this process: name a Llama Guard 3 "
                "deployment of local weights (`deploy create --model Llama-Guard-3-1B --type managed`)"
            )
        if not engine.is_ready:
            raise ClassifierError(f"the guard deployment '{self.deployment}' is still loading")
        classifier = self._classifiers.get(id(engine))
        if classifier is None:
            variant = guard_variant(target.deployment.model)
            self._classifiers = {id(engine): LlamaGuardClassifier(engine, variant)}
            classifier = self._classifiers[id(engine)]
        return classifier


class DeploymentSafety:
    """Builds and caches the `ChatSafety` of each deployment policy; one built-in classifier for all.

    Args:
        resolve: the gateway's `resolve`, to find guard deployments.
        builtin: the built-in classifier (default: the shipped model, loaded on first use).
    """

    def __init__(self, resolve: Callable[[str], Any], builtin: SafetyClassifier | None = None) -> None:
        self.resolve = resolve
        self.guard_engines: dict[str, EngineClient] = {}  # filled by `with_content_safety` as guards are built
        self._builtin = builtin
        self._cache: dict[SafetyPolicy, ChatSafety] = {}
        self._guards: dict[str, DeploymentGuard] = {}

    def builtin(self) -> SafetyClassifier:
        if self._builtin is None:
            from llamafoundry.safety.builtin import BuiltinClassifier

            self._builtin = BuiltinClassifier()
        return self._builtin

    def for_deployment(self, name: str) -> ChatSafety | None:
        """The filter of deployment `name` as it is configured now; None when its filter is off."""
        target = self.resolve(name)
        deployment = getattr(target, "deployment", None)
        if deployment is None:
            return None
        try:
            policy = deployment_policy(deployment.type, deployment.settings)
        except (ValueError, TypeError):
            logger.exception("deployment %s has invalid content safety settings; filtering with the defaults", name)
            policy = SafetyPolicy.for_deployment(deployment.type)
        if not policy.enabled:
            return None
        safety = self._cache.get(policy)
        if safety is None:
            safety = self._cache[policy] = ChatSafety(self._classifier(policy), policy)
        return safety

    def _classifier(self, policy: SafetyPolicy) -> SafetyClassifier:
        if policy.guard is None:
            return self.builtin()
        guard = self._guards.get(policy.guard)
        if guard is None:
            guard = self._guards[policy.guard] = DeploymentGuard(policy.guard, self.resolve, self.guard_engines)
        return guard


def with_content_safety(
    factory: Callable[[Deployment], Any], resolve: Callable[[str], Any], home: Path | None = None
) -> Callable[[Deployment], Any]:
    """A gateway backend factory whose services filter content by their deployment's policy (read per request).

    Llama Guard 3 deployments of local weights are served by an engine in this process (`home` given), so
    other deployments can name them as their guard.
    """
    safety = DeploymentSafety(resolve)

    def build(deployment: Deployment) -> Any:
        is_local = deployment.weights_path is not None and not deployment.upstream_url
        if home is not None and is_local and is_guard_model(deployment.model):
            service = local_guard_service(deployment)
            safety.guard_engines[deployment.name] = service.engine
        else:
            service = factory(deployment)
        return FilteredChatBackend(service, lambda: safety.for_deployment(deployment.name))

    return build


def local_guard_service(deployment: Deployment) -> ChatService:
    """A `ChatService` over an in-process engine of the deployment's weights (sized by its settings)."""
    from llamafoundry.config import EngineSettings
    from llamafoundry.engine.factory import build_local_engine
    from llamafoundry.platform.catalog import find_model

    assert deployment.weights_path is not None
    model = find_model(deployment.model)
    settings = deployment.settings
    cores = find_instance_type(deployment.instance_type).num_cores if deployment.instance_type else 2
    engine_settings = EngineSettings(
        model_path=Path(deployment.weights_path),
        ctx_size=int(settings.get("ctx_size", 4096)),
        parallel=int(settings.get("parallel", 4)),
        threads=int(settings.get("threads", cores)),
    )
    engine = build_local_engine(engine_settings, model.name, model.provider)
    return ChatService(engine, model.name, model.provider, engine_settings.ctx_size)
