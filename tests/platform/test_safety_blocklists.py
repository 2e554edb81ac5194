"""Custom blocklists: matching (terms, RE2 regexes, normalised text), validation, stored settings, annotations."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llamafoundry.platform.content_safety import (
    add_blocklist_items,
    deployment_policy,
    remove_blocklist_items,
    stored_blocklists,
)
from llamafoundry.safety.base import Role, SafetyPolicy, Verdict
from llamafoundry.safety.blocklists import (
    Blocklist,
    BlocklistError,
    BlocklistItem,
    load_blocklist_file,
    matched_lists,
)

BRANDS = Blocklist("brands", (BlocklistItem("Acme Corp"), BlocklistItem(r"sku-\d{4}", is_regex=True)))


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("We buy from Acme Corp.", True),
        ("we buy from ACME CORP", True),
        ("Ac.me C0rp", False),  # a dot inside a word is not spelling out letters
        ("A c m e  C o r p", True),  # letters spelt out one by one
        ("4cm3 c0rp", True),  # leetspeak
        ("Аcme Corp with a Cyrillic A", True),  # homoglyph
        ("acmecorp.com", False),  # whole words only
        ("order SKU-1234 today", True),  # regex, any case
        ("order SKU-12 today", False),
    ],
)
def test_terms_match_whole_words_in_the_normalised_text_and_regexes_match_too(text: str, hit: bool) -> None:
    assert BRANDS.matches(text) is hit


def test_regexes_run_in_linear_time() -> None:
    catastrophic = Blocklist("x", (BlocklistItem(r"(a+)+$", is_regex=True),))
    start = time.perf_counter()
    assert catastrophic.matches("a" * 5000 + "b") is False  # Python's re would backtrack for ages here
    assert time.perf_counter() - start < 5  # generous: the point is that it returns at all


@pytest.mark.parametrize("pattern", [r"(a)\1", r"foo(?=bar)", r"(?<!x)y"])
def test_patterns_re2_cannot_run_in_linear_time_are_refused_with_the_reason(pattern: str) -> None:
    with pytest.raises(BlocklistError, match="RE2"):
        Blocklist.from_dict({"id": "x", "items": [{"pattern": pattern, "is_regex": True}]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "has space", "items": ["a"]}, "blocklist name"),
        ({"id": "ok", "items": ["   "]}, "must not be empty"),
        ({"id": "ok", "items": ["x" * 200]}, "at most 128"),
        ({"id": "ok", "items": [{"pattern": "a", "regex": True}]}, "unknown blocklist item field"),
    ],
)
def test_invalid_lists_are_refused_with_a_sentence(data: dict[str, object], message: str) -> None:
    with pytest.raises(BlocklistError, match=message):
        Blocklist.from_dict(data)


def test_matched_lists_names_each_list_that_matched() -> None:
    other = Blocklist("rivals", (BlocklistItem("Globex"),))
    assert matched_lists([BRANDS, other], ["globex and acme corp"]) == ("brands", "rivals")
    assert matched_lists([BRANDS, other], ["nothing here"]) == ()


def test_a_match_blocks_and_is_annotated_as_azure_reports_it() -> None:
    policy = SafetyPolicy(blocklists=(BRANDS,))
    verdict = Verdict(Verdict.safe().severities, jailbreak=False, blocklists=("brands",))
    assert policy.is_blocked(verdict, Role.PROMPT) and policy.is_blocked(verdict, Role.COMPLETION)
    assert policy.annotations(verdict, Role.PROMPT)["custom_blocklists"] == [{"filtered": True, "id": "brands"}]
    clean = policy.annotations(Verdict.safe(), Role.COMPLETION)
    assert clean["custom_blocklists"] == []
    assert "custom_blocklists" not in SafetyPolicy().annotations(Verdict.safe(), Role.PROMPT)


def test_lists_are_stored_in_the_deployments_settings_and_read_into_its_policy() -> None:
    settings: dict[str, object] = {"content_safety": {"threshold": "high"}}
    settings.update(add_blocklist_items(settings, "brands", [BlocklistItem("Acme Corp")], "competitors"))
    settings.update(add_blocklist_items(settings, "brands", [BlocklistItem(r"sku-\d{4}", True)]))
    assert [b.to_dict() for b in stored_blocklists(settings)] == [BRANDS.to_dict() | {"description": "competitors"}]
    policy = deployment_policy("serverless", settings)
    assert policy.threshold.value == "high" and policy.blocklists[0].id == "brands"
    settings.update(remove_blocklist_items(settings, "brands", ["Acme Corp"]))
    assert [i.pattern for i in stored_blocklists(settings)[0].items] == [r"sku-\d{4}"]
    settings.update(remove_blocklist_items(settings, "brands", []))
    assert stored_blocklists(settings) == [] and settings["content_safety"] == {"threshold": "high"}
    with pytest.raises(BlocklistError, match="no blocklist named 'gone'"):
        remove_blocklist_items(settings, "gone", [])


def test_a_blocklist_file_has_terms_regexes_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# banned\nAcme Corp\nre: sku-\\d{4}\n\n", encoding="utf-8")
    loaded = load_blocklist_file(path)
    assert loaded == Blocklist("words", BRANDS.items)
    path.write_text("re: (a)\\1\n", encoding="utf-8")
    with pytest.raises(BlocklistError, match=r"words.txt:1"):
        load_blocklist_file(path)
