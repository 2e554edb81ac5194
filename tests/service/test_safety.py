"""ChatSafety on the chat path: prompts blocked before generation, completions released only once checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from llamafoundry.safety.base import CATEGORIES, Category, Role, SafetyPolicy, Severity, Speaker, Turn, Verdict
from llamafoundry.safety.builtin import BuiltinClassifier
from llamafoundry.safety.chat import ChatSafety, ContentFilteredError
from llamafoundry.service.types import ChatChoice, ChatDelta, ChatMessage, ChatResult, ChatUpdate, Usage


class WordClassifier:
    """Flags violence high when the judged text contains BAD; records what it was asked to judge."""

    name = "words"
    window_chars = 40

    def __init__(self) -> None:
        self.seen: list[tuple[Role, str]] = []

    async def classify(self, turns: Sequence[Turn], role: Role) -> Verdict:
        texts = [t.text for t in turns if t.speaker == (Speaker.USER if role == Role.PROMPT else Speaker.AGENT)]
        text = texts[-1] if role == Role.COMPLETION else " ".join(texts)
        self.seen.append((role, text))
        severities = {c: Severity.SAFE for c in CATEGORIES}
        if "BAD" in text:
            severities[Category.VIOLENCE] = Severity.HIGH
        return Verdict(severities, "JAILBREAK" in text if role == Role.PROMPT else None)


class ListStream:
    def __init__(self, updates: list[ChatUpdate]) -> None:
        self.updates = updates
        self.aborted = False

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._run()

    async def _run(self) -> AsyncIterator[ChatUpdate]:
        for update in self.updates:
            if self.aborted:
                return
            yield update

    def abort(self) -> None:
        self.aborted = True


def tokens_stream(pieces: list[str], index: int = 0) -> list[ChatUpdate]:
    updates = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        delta = ChatDelta(index, piece, "stop" if last else None)
        updates.append(ChatUpdate([delta], Usage(5, i + 1), finished=last))
    return updates


async def collect(stream: object) -> list[ChatUpdate]:
    return [u async for u in stream]  # type: ignore[attr-defined]


MESSAGES = [ChatMessage("system", "Be nice."), ChatMessage("user", "Tell me a story.")]


def test_blocked_prompt_raises_with_the_azure_body() -> None:
    safety = ChatSafety(WordClassifier(), SafetyPolicy())
    with pytest.raises(ContentFilteredError) as info:
        asyncio.run(safety.check_prompt([ChatMessage("user", "something BAD")], num_prompt_tokens=7))
    error = info.value
    assert error.num_prompt_tokens == 7
    body = error.body()["error"]
    assert body["code"] == "content_filter" and body["status"] == 400 and body["param"] == "prompt"
    assert body["message"].startswith("The response was filtered due to the prompt triggering llamafoundry's")
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body["innererror"]["content_filter_result"]["violence"] == {"filtered": True, "severity": "high"}
    assert body["innererror"]["content_filter_result"]["jailbreak"] == {"filtered": False, "detected": False}


def test_jailbreak_blocks_and_safe_prompts_get_annotations() -> None:
    safety = ChatSafety(WordClassifier(), SafetyPolicy())
    with pytest.raises(ContentFilteredError) as info:
        asyncio.run(safety.check_prompt([ChatMessage("user", "JAILBREAK please")]))
    assert info.value.content_filter_result["jailbreak"] == {"filtered": True, "detected": True}
    results = asyncio.run(safety.check_prompt(MESSAGES))
    assert results is not None and results[0]["prompt_index"] == 0
    assert results[0]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}


def test_disabled_policy_is_a_no_op() -> None:
    safety = ChatSafety(WordClassifier(), SafetyPolicy(enabled=False))
    assert asyncio.run(safety.check_prompt([ChatMessage("user", "BAD")])) is None
    inner = ListStream(tokens_stream(["BAD"]))
    assert safety.wrap_stream(inner, MESSAGES, 1, None) is inner


def test_result_choices_are_checked_and_blocked_ones_emptied() -> None:
    safety = ChatSafety(WordClassifier(), SafetyPolicy())
    result = ChatResult([ChatChoice(0, "A calm story.", "stop"), ChatChoice(1, "A BAD story.", "stop")], Usage(5, 8))
    filtered = asyncio.run(safety.filter_result(MESSAGES, result, [{"prompt_index": 0}]))
    assert filtered.prompt_filter_results == [{"prompt_index": 0}]
    ok, blocked = filtered.choices
    assert ok.text == "A calm story." and ok.content_filter_results["violence"]["filtered"] is False  # type: ignore[index]
    assert blocked.text == "" and blocked.finish_reason == "content_filter"
    assert blocked.content_filter_results["violence"] == {"filtered": True, "severity": "high"}  # type: ignore[index]
    assert filtered.usage == Usage(5, 8)


def test_stream_releases_only_checked_text_in_growing_windows() -> None:
    classifier = WordClassifier()
    safety = ChatSafety(classifier, SafetyPolicy())
    words = [f"word{i} " for i in range(30)] + ["end."]
    updates = asyncio.run(collect(safety.wrap_stream(ListStream(tokens_stream(words)), MESSAGES, 1, [{"p": 1}])))
    assert updates[0].prompt_filter_results == [{"p": 1}]
    released = "".join(d.text for u in updates for d in u.deltas)
    assert released == "".join(words)
    # every released piece was part of a checked text before it went out
    checked = [text for role, text in classifier.seen if role == Role.COMPLETION]
    position = 0
    for update in updates:
        for delta in update.deltas:
            position += len(delta.text)
            if delta.text:
                assert any(len(t) >= position for t in checked)
    assert 2 < len(checked) < len(words)  # windows, not one check per token
    last = [d for u in updates for d in u.deltas][-1]
    assert last.finish_reason == "stop" and last.content_filter_results is not None


def test_stream_blocks_mid_way_without_releasing_the_unsafe_window() -> None:
    safety = ChatSafety(WordClassifier(), SafetyPolicy())
    pieces = ["Once upon a time ", "there was a calm village. ", "Then something ", "BAD ", "happened. ", "More. "]
    inner = ListStream(tokens_stream(pieces * 3))
    updates = asyncio.run(collect(safety.wrap_stream(inner, MESSAGES, 1, None)))
    deltas = [d for u in updates for d in u.deltas]
    released = "".join(d.text for d in deltas)
    assert "BAD" not in released
    assert deltas[-1].finish_reason == "content_filter" and deltas[-1].text == ""
    assert deltas[-1].content_filter_results["violence"]["filtered"] is True  # type: ignore[index]
    assert updates[-1].finished and inner.aborted  # generation stopped once nothing more could be released


def test_stream_blocks_one_choice_and_keeps_the_other() -> None:
    safety = ChatSafety(WordClassifier(), SafetyPolicy())
    a = tokens_stream(["A fine answer. ", "All good here."], index=0)
    b = tokens_stream(["BAD things. ", "Worse."], index=1)
    merged = [ChatUpdate(x.deltas + y.deltas, x.usage, x.finished and y.finished) for x, y in zip(a, b, strict=True)]
    updates = asyncio.run(collect(safety.wrap_stream(ListStream(merged), MESSAGES, 2, None)))
    by_choice: dict[int, list[ChatDelta]] = {0: [], 1: []}
    for u in updates:
        for d in u.deltas:
            by_choice[d.index].append(d)
    assert "".join(d.text for d in by_choice[0]) == "A fine answer. All good here."
    assert by_choice[0][-1].finish_reason == "stop"
    assert [d.finish_reason for d in by_choice[1]] == ["content_filter"]


def test_builtin_classifier_filters_a_harmful_completion() -> None:
    safety = ChatSafety(BuiltinClassifier(), SafetyPolicy())
    text = "Sure. To make a pipe bomb to kill people at a concert, pack the pipe with powder and add a fuse."
    blocked, annotations = asyncio.run(safety.judge_completion(MESSAGES, text))
    assert blocked and annotations["violence"]["filtered"] is True
    blocked, _ = asyncio.run(safety.judge_completion(MESSAGES, "Use kill -9 to kill the process."))
    assert not blocked
