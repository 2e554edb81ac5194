"""The safety policy: which verdicts block, and Azure's annotation shapes."""

from __future__ import annotations

import pytest

from llamafoundry.safety.base import Category, Role, SafetyPolicy, Severity, Verdict


def verdict(jailbreak: bool | None = None, **severities: str) -> Verdict:
    return Verdict.safe().merge(Verdict({Category(k): Severity(v) for k, v in severities.items()}, jailbreak))


def test_default_blocks_medium_and_high_not_low() -> None:
    policy = SafetyPolicy()
    assert not policy.is_blocked(verdict(violence="low"), Role.PROMPT)
    assert policy.is_blocked(verdict(violence="medium"), Role.PROMPT)
    assert policy.is_blocked(verdict(hate="high"), Role.COMPLETION)


def test_prompt_annotations_have_azure_shape() -> None:
    results = SafetyPolicy().annotations(verdict(violence="medium", sexual="low"), Role.PROMPT)
    assert results == {
        "hate": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "low"},
        "violence": {"filtered": True, "severity": "medium"},
        "self_harm": {"filtered": False, "severity": "safe"},
        "jailbreak": {"filtered": False, "detected": False},
    }


def test_completion_annotations_carry_no_jailbreak() -> None:
    assert "jailbreak" not in SafetyPolicy().annotations(verdict(), Role.COMPLETION)


def test_jailbreak_blocks_prompts_only_and_can_be_switched_off() -> None:
    attack = verdict(jailbreak=True)
    assert SafetyPolicy().is_blocked(attack, Role.PROMPT)
    assert not SafetyPolicy().is_blocked(attack, Role.COMPLETION)
    off = SafetyPolicy(jailbreak=False)
    assert not off.is_blocked(attack, Role.PROMPT)
    assert off.annotations(attack, Role.PROMPT)["jailbreak"] == {"filtered": False, "detected": True}


def test_threshold_and_categories_are_configurable() -> None:
    strict = SafetyPolicy(threshold=Severity.LOW)
    assert strict.is_blocked(verdict(self_harm="low"), Role.PROMPT)
    lenient = SafetyPolicy(threshold=Severity.HIGH, categories=frozenset({Category.HATE}))
    assert not lenient.is_blocked(verdict(violence="high"), Role.PROMPT)
    assert lenient.annotations(verdict(violence="high"), Role.PROMPT)["violence"] == {
        "filtered": False,
        "severity": "high",
    }
    assert lenient.is_blocked(verdict(hate="high"), Role.PROMPT)
    with pytest.raises(ValueError, match="never filtered"):
        SafetyPolicy(threshold=Severity.SAFE)


def test_deployment_kind_defaults() -> None:
    assert SafetyPolicy.for_deployment("serverless").enabled
    assert not SafetyPolicy.for_deployment("managed").enabled
    assert SafetyPolicy.for_deployment("managed", enabled=True).enabled
    with pytest.raises(ValueError):
        SafetyPolicy.for_deployment("edge")


def test_stored_form_round_trips_and_rejects_typos() -> None:
    policy = SafetyPolicy(threshold=Severity.HIGH, categories=frozenset({Category.SEXUAL}), guard="guard-1b")
    assert SafetyPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError, match="treshold"):
        SafetyPolicy.from_dict({"treshold": "high"})


def test_verdict_merge_takes_the_worse_of_each() -> None:
    merged = verdict(hate="low", violence="high").merge(verdict(jailbreak=False, hate="medium"))
    assert merged.severity(Category.HATE) == Severity.MEDIUM
    assert merged.severity(Category.VIOLENCE) == Severity.HIGH
    assert merged.jailbreak is False
    assert Severity.LOW < Severity.MEDIUM <= Severity.HIGH
