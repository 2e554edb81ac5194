"""Content filtering over HTTP, in-process: a scripted classifier in front of the fake service. Blocked prompts
answer Azure's 400 (streaming too) and are metered as filtered; successful answers carry Azure's annotations;
blocked completions end with finish_reason content_filter and never send the unsafe text."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from llamafoundry.platform.metering import query_usage
from llamafoundry.safety.backend import FilteredChatBackend
from llamafoundry.safety.base import CATEGORIES, Category, Role, SafetyPolicy, Severity, Speaker, Turn, Verdict
from llamafoundry.safety.chat import PROMPT_FILTERED_MESSAGE, ChatSafety
from tests.api.accounting_fixtures import LimitedApp, limited_app
from tests.api.conftest import MODEL_NAME
from tests.api.fakes import FakeChatService


class ScriptedClassifier:
    """Violence high for prompts containing BAD, and for completions containing `unsafe_word`."""

    name = "scripted"
    window_chars = 8

    def __init__(self, unsafe_word: str | None = None) -> None:
        self.unsafe_word = unsafe_word

    async def classify(self, turns: Sequence[Turn], role: Role) -> Verdict:
        severities = {c: Severity.SAFE for c in CATEGORIES}
        if role == Role.PROMPT:
            flagged = any("BAD" in t.text for t in turns if t.speaker == Speaker.USER)
        else:
            flagged = self.unsafe_word is not None and self.unsafe_word in turns[-1].text
        if flagged:
            severities[Category.VIOLENCE] = Severity.HIGH
        return Verdict(severities, False if role == Role.PROMPT else None)


def filtered_app(tmp_path: Path, unsafe_word: str | None = None) -> Iterator[LimitedApp]:
    service = FakeChatService(model_name=MODEL_NAME)
    safety = ChatSafety(ScriptedClassifier(unsafe_word), SafetyPolicy())
    backend = FilteredChatBackend(service, lambda: safety)
    for running in limited_app(tmp_path, None, backend):  # type: ignore[arg-type]
        running.service = service
        yield running


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LimitedApp]:
    yield from filtered_app(tmp_path)


@pytest.fixture
def blocking_app(tmp_path: Path) -> Iterator[LimitedApp]:
    yield from filtered_app(tmp_path, unsafe_word="friend")  # the fake service says "Hello there, friend."


def events(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"data: [DONE]\n\n")
    return [json.loads(block[len(b"data: ") :]) for block in raw[:-2].split(b"\n\n")[:-1]]


@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_prompt_is_azures_400(app: LimitedApp, stream: bool) -> None:
    response = app.chat(messages=[{"role": "user", "content": "something BAD"}], stream=stream)
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response.headers["x-ms-error-code"] == "content_filter"  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/json"  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert list(error) == ["message", "type", "param", "code", "status", "innererror"]
    assert error["message"] == PROMPT_FILTERED_MESSAGE
    assert (error["type"], error["param"], error["code"], error["status"]) == (None, "prompt", "content_filter", 400)
    inner = error["innererror"]
    assert inner["code"] == "ResponsibleAIPolicyViolation"
    assert inner["content_filter_result"]["violence"] == {"filtered": True, "severity": "high"}
    assert inner["content_filter_result"]["jailbreak"] == {"filtered": False, "detected": False}
    assert app.service.requests == []  # nothing was generated


def test_a_blocked_prompt_is_metered_as_filtered_with_its_prompt_tokens(app: LimitedApp) -> None:
    app.chat(messages=[{"role": "user", "content": "BAD"}])
    app.chat()
    app.client.portal.call(app.accounting.meter.flush)  # type: ignore[union-attr]
    blocked, ok = query_usage(app.store.engine)
    assert (blocked.status, blocked.is_filtered, blocked.prompt_tokens, blocked.completion_tokens) == (400, True, 7, 0)
    assert (ok.status, ok.is_filtered) == (200, False)


def test_annotations_on_a_successful_answer(app: LimitedApp) -> None:
    payload = {"messages": [{"role": "user", "content": "Hi"}], "n": 2}
    body = app.client.post("/chat/completions", json=payload, headers={"extra-parameters": "pass-through"}).json()
    (prompt,) = body["prompt_filter_results"]
    assert prompt["prompt_index"] == 0
    assert prompt["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert prompt["content_filter_results"]["jailbreak"] == {"filtered": False, "detected": False}
    for choice in body["choices"]:
        assert choice["finish_reason"] == "stop" and choice["message"]["content"] == "Hello there, friend."
        assert choice["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}
        assert "jailbreak" not in choice["content_filter_results"]  # prompts only, as on Azure


def test_stream_annotations_ride_on_the_role_chunk_and_released_text(app: LimitedApp) -> None:
    chunks = events(app.chat(stream=True).content)  # type: ignore[attr-defined]
    assert all(len(c["choices"]) == 1 for c in chunks)  # never an empty-choices chunk
    first = chunks[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["prompt_filter_results"][0]["content_filter_results"]["sexual"]["filtered"] is False
    assert all("prompt_filter_results" not in c for c in chunks[1:])
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Hello there, friend."
    annotated = [c for c in chunks if "content_filter_results" in c["choices"][0]]
    assert annotated and annotated[-1]["choices"][0]["content_filter_results"]["violence"]["filtered"] is False
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]


def test_a_blocked_completion_ends_with_content_filter(blocking_app: LimitedApp) -> None:
    body = blocking_app.chat().json()  # type: ignore[attr-defined]
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] == ""
    assert choice["content_filter_results"]["violence"] == {"filtered": True, "severity": "high"}
    assert body["usage"]["completion_tokens"] == 5  # the tokens generated are still counted


def test_a_blocked_stream_never_sends_the_unsafe_text(blocking_app: LimitedApp) -> None:
    response = blocking_app.chat(stream=True)
    chunks = events(response.content)  # type: ignore[attr-defined]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert text == ""  # 20 characters: shorter than the first window, so all of it was held, checked and blocked
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "content_filter" and last["delta"] == {"content": ""}
    assert last["content_filter_results"]["violence"] == {"filtered": True, "severity": "high"}
    assert "usage" in chunks[-1]
    blocking_app.client.portal.call(blocking_app.accounting.meter.flush)  # type: ignore[union-attr]
    (record,) = query_usage(blocking_app.store.engine)
    assert record.status == 200 and record.is_filtered


def test_a_disabled_filter_adds_nothing(tmp_path: Path) -> None:
    service = FakeChatService(model_name=MODEL_NAME)
    backend = FilteredChatBackend(service, lambda: None)
    for running in limited_app(tmp_path, None, backend):  # type: ignore[arg-type]
        body = running.chat(messages=[{"role": "user", "content": "BAD"}]).json()  # type: ignore[attr-defined]
        assert "prompt_filter_results" not in body and "content_filter_results" not in body["choices"][0]
        chunks = events(running.chat(stream=True).content)  # type: ignore[attr-defined]
        assert not any("prompt_filter_results" in c or "content_filter_results" in c["choices"][0] for c in chunks)
