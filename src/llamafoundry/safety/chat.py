"""Content filtering on the chat path: check the prompt before generation, and vet completions before release.

`ChatService` calls `ChatSafety` when a deployment's policy has the filter on:

- `check_prompt(messages)` before the engine sees the request: raises `ContentFilteredError` (the API answers
  400 `content_filter`, for streaming requests too, since nothing has been sent yet) or returns the
  `prompt_filter_results` annotation.
- `filter_result(result, ...)` on a finished result: each choice is checked; a blocked choice loses its text and
  ends with finish_reason "content_filter".
- `wrap_stream(stream, ...)`: text of each choice is held back and released only after the text so far has
  passed a check. The first window (16 characters, 3-4 tokens) is checked and released as soon as it is there;
  later ones, growing (32, 64, ... up to the classifier's `window_chars`), at a sentence end or word boundary,
  or once the oldest held token has waited `MAX_HOLD_S` (1 s).
  A blocked choice ends with an empty delta whose finish_reason is "content_filter"; its unchecked text is
  dropped. A policy in Azure's asynchronous mode streams text at once (`safety_async.AsyncFilteredChatStream`).

Besides the classifier, every check runs the deterministic layers: custom blocklists, the hard rules on sexual
content involving minors (for classifiers that do not apply them) and, on prompts, prompt shields.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamafoundry.safety.base import (
    ClassifierError,
    Role,
    SafetyClassifier,
    SafetyPolicy,
    Speaker,
    Turn,
    Verdict,
    unfiltered_annotations,
)
from llamafoundry.safety.deterministic import completion_block, rule_verdict
from llamafoundry.service.types import (
    CONTENT_FILTER,
    ChatChoice,
    ChatDelta,
    ChatMessage,
    ChatResult,
    ChatStream,
    ChatUpdate,
)

log = logging.getLogger(__name__)

PRODUCT_NAME = "llamafoundry"
PROMPT_FILTERED_MESSAGE = (
    f"The response was filtered due to the prompt triggering {PRODUCT_NAME}'s content management policy. "
    "Please modify your prompt and retry."
)
MAX_HOLD_S = 1.0  # held text is checked and released once its oldest token has waited this long
FIRST_WINDOW_CHARS = 16  # about 3-4 tokens: the first words of an answer are released (checked) almost at once
_BOUNDARY = re.compile(r"[.!?;:\n][\"')\]]*\s*$")


class ContentFilteredError(Exception):
    """The prompt was blocked by the deployment's content filter (the API answers 400 `content_filter`).

    Attributes:
        content_filter_result: Azure's per-category result (`{"hate": {"filtered", "severity"}, ...,
            "jailbreak": {"filtered", "detected"}}`), for the error's `innererror`.
        num_prompt_tokens: prompt tokens that were evaluated (a blocked prompt is still metered), if known.
    """

    code = CONTENT_FILTER
    param = "prompt"
    inner_code = "ResponsibleAIPolicyViolation"

    def __init__(self, content_filter_result: dict[str, Any], num_prompt_tokens: int | None = None) -> None:
        super().__init__(PROMPT_FILTERED_MESSAGE)
        self.message = PROMPT_FILTERED_MESSAGE
        self.content_filter_result = content_filter_result
        self.num_prompt_tokens = num_prompt_tokens

    def body(self) -> dict[str, Any]:
        """The 400 body: the Llama serverless error with the Azure OpenAI `innererror`."""
        return {
            "error": {
                "message": self.message,
                "type": None,
                "param": self.param,
                "code": self.code,
                "status": 400,
                "innererror": {"code": self.inner_code, "content_filter_result": self.content_filter_result},
            }
        }


def conversation_turns(messages: Sequence[ChatMessage]) -> list[Turn]:
    """Messages as classifier turns: assistant text is the agent's; system, user and tool text is the caller's."""
    turns = []
    for message in messages:
        if not message.content:
            continue
        speaker = Speaker.AGENT if message.role == "assistant" else Speaker.USER
        turns.append(Turn(speaker, message.content, message.role))
    return turns


class ChatSafety:
    """One deployment's content filter on the chat path.

    Args:
        classifier: what judges text (the built-in classifier, Llama Guard, ...).
        policy: what blocks; a disabled policy makes every method a no-op.
    """

    def __init__(self, classifier: SafetyClassifier, policy: SafetyPolicy) -> None:
        self.classifier = classifier
        self.policy = policy

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    async def check_prompt(
        self, messages: Sequence[ChatMessage], num_prompt_tokens: int | None = None
    ) -> list[dict[str, Any]] | None:
        """Judge the prompt. Returns `prompt_filter_results`, or None when the filter is off.

        Raises:
            ContentFilteredError: the prompt is blocked.
        """
        if not self.policy.enabled:
            return None
        turns = conversation_turns(messages)
        verdict, annotations = await self._judge(turns, Role.PROMPT)
        if verdict is None:
            if not self.policy.fail_open:
                raise ContentFilteredError(annotations, num_prompt_tokens)
        elif self.policy.is_blocked(verdict, Role.PROMPT):
            raise ContentFilteredError(annotations, num_prompt_tokens)
        return [{"prompt_index": 0, "content_filter_results": annotations}]

    async def judge_completion(self, messages: Sequence[ChatMessage], text: str) -> tuple[bool, dict[str, Any]]:
        """(blocked, content_filter_results) for one completion text in its conversation."""
        turns = [*conversation_turns(messages), Turn(Speaker.AGENT, text)]
        verdict, annotations = await self._judge(turns, Role.COMPLETION)
        if verdict is None:
            return not self.policy.fail_open, annotations
        return self.policy.is_blocked(verdict, Role.COMPLETION), annotations

    def deterministic_block(self, text: str) -> dict[str, Any] | None:
        """Annotations when the blocklists or hard rules block completion `text` (see `completion_block`)."""
        return completion_block(self.policy, text)

    async def _judge(self, turns: list[Turn], role: Role) -> tuple[Verdict | None, dict[str, Any]]:
        """The verdict and its annotations, or (None, error annotation) when the classifier cannot judge (unless
        the rules, blocklists or shields block on their own)."""
        if not any(t.speaker == (Speaker.USER if role == Role.PROMPT else Speaker.AGENT) for t in turns):
            verdict = Verdict.safe()
            return verdict, self.policy.annotations(verdict, role)
        extra, decoded = self._rule_verdict(turns, role)
        try:
            verdict = await self.classifier.classify([*turns, *decoded], role)
        except ClassifierError as exc:
            log.warning("content filter (%s) could not judge a %s: %s", self.classifier.name, role.value, exc)
            if self.policy.is_blocked(extra, role):
                return extra, self.policy.annotations(extra, role)
            return None, unfiltered_annotations(str(exc))
        verdict = verdict.merge(extra)
        return verdict, self.policy.annotations(verdict, role)

    def _rule_verdict(self, turns: list[Turn], role: Role) -> tuple[Verdict, list[Turn]]:
        with_rules = not getattr(self.classifier, "applies_rules", False)
        return rule_verdict(self.policy, turns, role, with_rules)

    async def filter_result(
        self, messages: Sequence[ChatMessage], result: ChatResult, prompt_filter_results: list[dict[str, Any]] | None
    ) -> ChatResult:
        """Check every choice of a finished result; blocked choices end with finish_reason "content_filter"."""
        if not self.policy.enabled:
            return result
        choices = []
        for choice in result.choices:
            blocked, annotations = await self.judge_completion(messages, choice_text(choice))
            if blocked:
                choice = ChatChoice(choice.index, "", CONTENT_FILTER, None)
            choices.append(dataclasses.replace(choice, content_filter_results=annotations))
        return ChatResult(choices=choices, usage=result.usage, prompt_filter_results=prompt_filter_results)

    def wrap_stream(
        self,
        stream: ChatStream,
        messages: Sequence[ChatMessage],
        num_choices: int,
        prompt_filter_results: list[dict[str, Any]] | None,
    ) -> ChatStream:
        """A stream that releases each choice's text only after it has been checked (the policy's default
        streaming mode), or at once with checks beside it (its asynchronous mode)."""
        if not self.policy.enabled:
            return stream
        if self.policy.streaming == "asynchronous":
            from llamafoundry.safety.async_stream import AsyncFilteredChatStream

            return AsyncFilteredChatStream(self, stream, messages, num_choices, prompt_filter_results)
        return FilteredChatStream(self, stream, messages, num_choices, prompt_filter_results)


@dataclass
class _ChoiceState:
    released: list[str] = field(default_factory=list)
    pending: list[ChatDelta] = field(default_factory=list)
    num_checks: int = 0
    blocked: bool = False
    done: bool = False
    held_since: float = 0.0  # when the oldest pending delta arrived

    @property
    def pending_text(self) -> str:
        return "".join(_delta_text(d) for d in self.pending)


class FilteredChatStream:
    """Satisfies `ChatStream`: the inner stream's updates, with each choice's text released in vetted windows.

    Held deltas are released unchanged (their logprobs and tool-call parts included) once the choice's text so
    far passes a check; the last released delta carries that check's `content_filter_results`.
    """

    def __init__(
        self,
        safety: ChatSafety,
        inner: ChatStream,
        messages: Sequence[ChatMessage],
        num_choices: int,
        prompt_filter_results: list[dict[str, Any]] | None,
    ) -> None:
        self._safety = safety
        self._inner = inner
        self._messages = list(messages)
        self._num_choices = num_choices
        self._prompt_filter_results = prompt_filter_results
        self.prompt_filter_results = prompt_filter_results  # known before the first update (the role chunk)
        self._window = max(FIRST_WINDOW_CHARS, safety.classifier.window_chars)
        self._choices: dict[int, _ChoiceState] = {}

    def __aiter__(self) -> AsyncIterator[ChatUpdate]:
        return self._updates()

    def abort(self) -> None:
        self._inner.abort()

    async def _updates(self) -> AsyncIterator[ChatUpdate]:
        try:
            async for update in self._inner:
                deltas = [out for delta in update.deltas for out in await self._advance(delta)]
                yield self._annotate_first(ChatUpdate(deltas=deltas, usage=update.usage, finished=update.finished))
                if update.finished:
                    return
                if self._all_stopped():  # every choice is blocked or done: stop generating (tokens so far count)
                    self._inner.abort()
                    yield ChatUpdate(deltas=[], usage=update.usage, finished=True)
                    return
        finally:
            self._inner.abort()

    def _annotate_first(self, update: ChatUpdate) -> ChatUpdate:
        if self._prompt_filter_results is not None:
            update.prompt_filter_results = self._prompt_filter_results
            self._prompt_filter_results = None
        return update

    def _all_stopped(self) -> bool:
        states = self._choices.values()
        return (
            len(self._choices) >= self._num_choices
            and any(s.blocked for s in states)
            and all(s.blocked or s.done for s in states)
        )

    async def _advance(self, delta: ChatDelta) -> list[ChatDelta]:
        """Hold `delta`; when a window is ready, check the choice's text so far and release or block it."""
        state = self._choices.setdefault(delta.index, _ChoiceState())
        if state.blocked or state.done:
            return []
        if not state.pending:
            state.held_since = _now()
        state.pending.append(delta)
        finished = delta.finish_reason is not None
        if not finished and not delta.tool_calls and not self._window_ready(state):
            return []
        text = state.pending_text
        state.num_checks += 1
        blocked, annotations = await self._safety.judge_completion(self._messages, "".join(state.released) + text)
        if blocked:
            state.blocked = True
            state.pending.clear()
            return [ChatDelta(delta.index, "", finish_reason=CONTENT_FILTER, content_filter_results=annotations)]
        released = state.pending
        state.released.append(text)
        state.pending = []
        state.done = finished
        released[-1] = dataclasses.replace(released[-1], content_filter_results=annotations)
        return released

    def _window_ready(self, state: _ChoiceState) -> bool:
        window = min(self._window, FIRST_WINDOW_CHARS << min(state.num_checks, 16))
        text = state.pending_text
        if _now() - state.held_since >= MAX_HOLD_S:  # a slow stream is not held for a whole window
            return True
        if len(text) < window:
            return False
        if state.num_checks == 0 or _BOUNDARY.search(text):  # the first window goes at once: the first words
            return True
        # A full window goes at a word boundary (tokens mostly start with a space), and never waits past two
        # windows: text without sentence ends (lists, code, token salad) came in bursts of four windows before.
        newest = state.pending[-1].text
        return newest[:1].isspace() or newest[-1:].isspace() or len(text) >= 2 * window


def _now() -> float:
    return time.monotonic()


def prompt_filter_results_of(stream: ChatStream) -> list[dict[str, Any]] | None:
    """The `prompt_filter_results` of a stream that a content filter wraps (None for an unfiltered stream), known
    as soon as the stream exists, so the API can send them on the stream's first chunk."""
    return getattr(stream, "prompt_filter_results", None) if _is_filtered(stream) else None


def _is_filtered(stream: ChatStream) -> bool:
    from llamafoundry.safety.async_stream import AsyncFilteredChatStream  # it imports this module

    return isinstance(stream, FilteredChatStream | AsyncFilteredChatStream)


def _delta_text(delta: ChatDelta) -> str:
    calls = "".join(c.arguments for c in delta.tool_calls or [])
    return delta.text + calls


def choice_text(choice: ChatChoice) -> str:
    """What a finished choice says: its text and its tool calls' arguments."""
    return choice.text + "".join(f" {c.arguments}" for c in choice.tool_calls or [])
