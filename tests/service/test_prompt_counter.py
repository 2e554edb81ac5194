"""Prompt tokens of requests forwarded to an upstream: the Llama 3 tokenizer over the Llama 3 chat format, not a
characters-per-token guess (which the rate limiter used to reserve, 9x short for emoji)."""

from __future__ import annotations

from llamafoundry.service.prompt_counter import estimate_tokens, llama_prompt_counter
from llamafoundry.service.types import ChatMessage, ChatRequest, GenerationOptions
from tests.service.test_chat_format import WEATHER_TOOL


def request(*messages: ChatMessage, tools: list | None = None, tool_choice: str | None = None) -> ChatRequest:
    return ChatRequest(list(messages), GenerationOptions(), tools=tools, tool_choice=tool_choice)


def test_special_tokens_count_once_each_after_the_dated_system_turn() -> None:
    # <|begin_of_text|>, the system turn Meta's templates always write (Cutting Knowledge Date ..., Today Date ...:
    # 25 tokens), <|start_header_id|> user <|end_header_id|> \n\n Hi ! <|eot_id|>, <|start_header_id|> assistant
    # <|end_header_id|> \n\n
    counter = llama_prompt_counter()
    for model in ("Meta-Llama-3.1-8B-Instruct", "Llama-3.2-1B-Instruct", "Llama-3.2-11B-Vision-Instruct"):
        assert counter.count(request(ChatMessage("user", "Hi!")), model) == 1 + 25 + 7 + 4


def test_text_the_character_guess_gets_wrong_is_counted_as_the_tokenizer_does() -> None:
    counter = llama_prompt_counter()
    emoji = request(ChatMessage("user", "🙂🎉" * 50))
    japanese = request(ChatMessage("user", "東京都の天気はどうですか？" * 20))
    english = request(ChatMessage("user", "The quick brown fox jumps over the lazy dog. " * 20))
    assert counter.count(emoji) > 4 * estimate_tokens(emoji)
    assert counter.count(japanese) > 2 * estimate_tokens(japanese)
    assert 0.8 * estimate_tokens(english) < counter.count(english) < 1.2 * estimate_tokens(english)


def test_tool_definitions_count_unless_tool_choice_is_none() -> None:
    counter = llama_prompt_counter()
    question = ChatMessage("user", "Weather in Oslo?")
    plain = counter.count(request(question))
    assert counter.count(request(question, tools=[WEATHER_TOOL])) > plain + 30
    assert counter.count(request(question, tools=[WEATHER_TOOL], tool_choice="none")) == plain


def test_messages_the_llama_format_refuses_are_estimated_for_the_upstream_to_judge() -> None:
    # tools, but no user message to carry them: Meta's template raises (parallel calls, the old example, are now
    # written one per turn)
    orphan_tools = request(ChatMessage("system", "You check the weather."), tools=[WEATHER_TOOL])
    assert llama_prompt_counter().count(orphan_tools) == estimate_tokens(orphan_tools)
