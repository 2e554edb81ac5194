"""A returning history is prompted with the ids the model generated for its answers, not a re-tokenization of
their text (prefix caching matches on tokens): the memory itself, the prompt pieces with the real Llama 3
tokenizer and template, and a conversation through ChatService on a real tiny model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamafoundry.config import EngineSettings
from llamafoundry.engine.factory import build_local_engine
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.model.gguf_builder import default_tokenizer_path
from llamafoundry.model.llamacpp import LlamaCppVocab
from llamafoundry.service.answer_ids import AnswerIds
from llamafoundry.service.chat import ChatService
from llamafoundry.service.chat_format import ChatFormatter
from llamafoundry.service.prompt_pieces import render_pieces
from llamafoundry.service.types import ChatMessage, ChatRequest, GenerationOptions
from tests.service.test_chat_format import LLAMA_3_1, template_text

PIECES = {1: "hel", 2: "lo", 3: " wor", 4: "ld", 5: " ", 6: "\n", 7: "", 8: "!"}  # 7: an end-of-turn token


def toy_detokenize(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def test_answers_are_kept_only_when_their_ids_make_their_text() -> None:
    answers = AnswerIds(toy_detokenize, max_answers=2)
    answers.record("hello world", [1, 2, 3, 4, 7])  # the end-of-turn token is the template's to write
    assert answers.get("hello world") == [1, 2, 3, 4]
    answers.record("hello", [1, 2, 8])  # a stop string "!" cut the text: the ids hold more than it
    assert answers.get("hello") is None
    answers.record(" hello\n", [5, 1, 2, 6])  # whole whitespace tokens around: kept under the trimmed text too
    assert answers.get(" hello\n") == [5, 1, 2, 6] and answers.get("hello") == [1, 2]
    answers.record(" world", [3, 4])  # the space is inside " wor": "world" has no ids of its own here
    assert answers.get(" world") == [3, 4] and answers.get("world") is None
    assert answers.get("hello world") is None and len(answers) == 2  # the oldest went


@pytest.fixture(scope="module")
def vocab() -> Iterator[LlamaCppVocab]:
    opened = LlamaCppVocab(default_tokenizer_path(), vocab_only=True)
    yield opened
    opened.close()


def test_a_known_answer_is_its_own_piece_and_only_its_tokens_change(vocab: LlamaCppVocab) -> None:
    formatter = ChatFormatter(template_text(LLAMA_3_1))
    answer = "Sailing is learned on the water."
    # the model wrote "Sailing" in two pieces, which the tokenizer merges
    generated = [vocab.tokenize(text, parse_special=False) for text in ("Sail", "ing", " is learned on the water.")]
    generated_ids = [t for part in generated for t in part]
    assert b"".join(vocab.token_bytes(t, False) for t in generated_ids).decode() == answer
    messages = [
        ChatMessage("user", "How do I learn to sail?"),
        ChatMessage("assistant", answer),
        ChatMessage("user", "And then?"),
    ]
    whole = vocab.tokenize(formatter.render(messages), parse_special=True)
    pieces = render_pieces(formatter, messages, separate=[1])
    assert [p.text for p in pieces if p.is_message_text] == [answer]
    ids = [t for p in pieces for t in (generated_ids if p.is_message_text else vocab.tokenize(p.text))]
    canonical = vocab.tokenize(answer, parse_special=False)
    start = next(i for i in range(len(whole)) if whole[i : i + len(canonical)] == canonical)
    assert ids[:start] == whole[:start]  # the template's pieces tokenize as the whole prompt did
    assert ids[start : start + len(generated_ids)] == generated_ids
    assert ids[start + len(generated_ids) :] == whole[start + len(canonical) :]
    assert len(generated_ids) == len(canonical) + 1


def test_a_conversation_coming_back_is_prompted_with_its_generated_ids(tiny_model_path: Path) -> None:
    async def run() -> list[tuple[list[int], list[int], list[int], list[int], str]]:
        settings = EngineSettings(model_path=tiny_model_path, ctx_size=1024, parallel=2, threads=1)
        engine = build_local_engine(settings, "tiny", "Meta")
        service = ChatService(engine, "tiny", "Meta", 1024)
        await service.start()
        found = []
        try:
            for seed in range(8):
                messages = [ChatMessage("user", f"Tell me story number {seed}.")]
                options = GenerationOptions(temperature=0.9, seed=seed, max_tokens=16)
                params = SamplingParams(temperature=0.9, seed=seed, max_tokens=16)
                first_prompt = service.prompt_ids(ChatRequest(messages, options))
                text = ""
                async for update in await service.stream(await service.prepare(ChatRequest(messages, options))):
                    text += "".join(delta.text for delta in update.deltas)
                generated = []  # the same request again (seeded): the ids the model generated
                async for output in await engine.add_request(first_prompt, params):
                    generated += [t for delta in output.deltas for t in delta.token_ids]
                back = messages + [ChatMessage("assistant", text), ChatMessage("user", "More.")]
                second_prompt = service.prompt_ids(ChatRequest(back, options))
                found.append((first_prompt, second_prompt, generated, engine.tokenize(text, False), text))
        finally:
            await service.stop()
        return found

    differs = 0
    for first_prompt, second_prompt, generated, retokenized, text in asyncio.run(run()):
        if text != text.strip():
            continue  # the template trims the answer: the generated ids hold whitespace the prompt no longer has
        answer = [t for t in generated if t < 128000]  # without the end-of-turn token
        assert second_prompt[: len(first_prompt) + len(answer)] == first_prompt + answer
        differs += answer != retokenized
    assert differs >= 1  # the random model writes words in pieces a tokenizer would merge
