"""Prompt formatting: Meta's own chat templates (golden strings from Meta's Llama 3.1/3.2 prompt format), the
built-in Llama 3 format, and the errors users see."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest

from llamafoundry.service import chat_format
from llamafoundry.service.chat_format import ChatFormatError, ChatFormatter
from llamafoundry.service.types import ChatMessage
from tests.shared_material import SHARED, require_shared

TEMPLATES = SHARED / "models" / "chat-templates"
TOKENIZER = SHARED / "models" / "llama3-tokenizer.gguf"
LLAMA_3_1 = "meta-llama-Llama-3.1-8B-Instruct.jinja"
LLAMA_3_2 = "meta-llama-Llama-3.2-3B-Instruct.jinja"
LLAMA_3_3 = "meta-llama-Llama-3.3-70B-Instruct.jinja"

BOT = "<|begin_of_text|>"
EOT = "<|eot_id|>"


def header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


# The system header Meta's 3.1/3.3 templates always write (their date is pinned to 26 Jul 2024).
DATED = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_TOOL_JSON = """{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string"
                }
            },
            "required": [
                "city"
            ]
        }
    }
}"""
TOOLS_INSTRUCTION = (
    "Given the following functions, please respond with a JSON for a function call with its proper arguments that "
    "best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


def template_text(name: str) -> str:
    path = TEMPLATES / name
    return require_shared(path, "Meta's chat template").read_text()


@pytest.fixture(params=[LLAMA_3_1, LLAMA_3_3])
def llama31(request: pytest.FixtureRequest) -> ChatFormatter:
    """Meta's Llama 3.1 and 3.3 templates: same prompt format, same output for custom tools."""
    return ChatFormatter(template_text(request.param))


@pytest.fixture
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_format, "_now", lambda: datetime(2024, 7, 26, 9, 30))


def weather_call(arguments: str = '{"city": "Paris"}') -> ChatMessage:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return ChatMessage(role="assistant", content=None, tool_calls=[call])


def tool_turn() -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="You are a weather bot."),
        ChatMessage(role="user", content="Weather in Paris?"),
        weather_call(),
        ChatMessage(role="tool", content='{"temp_c": 22, "sky": "clear"}', tool_call_id="call_1"),
    ]


TOOL_TURN_PROMPT = (
    BOT
    + header("system")
    + "Environment: ipython\n"
    + DATED
    + "You are a weather bot."
    + EOT
    + header("user")
    + TOOLS_INSTRUCTION
    + WEATHER_TOOL_JSON
    + "\n\n"
    + "Weather in Paris?"
    + EOT
    + header("assistant")
    + '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    + EOT
    + header("ipython")
    + '{"temp_c": 22, "sky": "clear"}'
    + EOT
    + header("assistant")
)


# --- Meta's Llama 3.1 / 3.3 templates ---------------------------------------------------------------------------


def test_llama31_system_and_user(llama31: ChatFormatter) -> None:
    messages = [
        ChatMessage(role="system", content="You are a helpful assistant."),
        ChatMessage(role="user", content="What is the capital of France?"),
    ]
    expected = (
        BOT
        + header("system")
        + DATED
        + "You are a helpful assistant."
        + EOT
        + header("user")
        + "What is the capital of France?"
        + EOT
        + header("assistant")
    )
    assert not llama31.uses_builtin_template
    assert llama31.render(messages) == expected


def test_llama31_multi_turn_trims_content(llama31: ChatFormatter) -> None:
    messages = [
        ChatMessage(role="system", content="  Be brief.\n"),
        ChatMessage(role="user", content="Hi!"),
        ChatMessage(role="assistant", content="Hello. "),
        ChatMessage(role="user", content="\nName a color."),
    ]
    expected = (
        BOT
        + header("system")
        + DATED
        + "Be brief."
        + EOT
        + header("user")
        + "Hi!"
        + EOT
        + header("assistant")
        + "Hello."
        + EOT
        + header("user")
        + "Name a color."
        + EOT
        + header("assistant")
    )
    assert llama31.render(messages) == expected


def test_llama31_without_system_message_still_writes_the_dated_system_turn(llama31: ChatFormatter) -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    expected = BOT + header("system") + DATED + EOT + header("user") + "Hi" + EOT + header("assistant")
    assert llama31.render(messages) == expected


def test_llama31_without_generation_prompt(llama31: ChatFormatter) -> None:
    messages = [ChatMessage(role="user", content="Hi"), ChatMessage(role="assistant", content="Hello")]
    expected = BOT + header("system") + DATED + EOT + header("user") + "Hi" + EOT + header("assistant") + "Hello" + EOT
    assert llama31.render(messages, add_generation_prompt=False) == expected


def test_llama31_tool_definitions_go_into_the_first_user_message(llama31: ChatFormatter) -> None:
    messages = [
        ChatMessage(role="system", content="You are a weather bot."),
        ChatMessage(role="user", content="Weather in Paris?"),
    ]
    expected = (
        BOT
        + header("system")
        + "Environment: ipython\n"
        + DATED
        + "You are a weather bot."
        + EOT
        + header("user")
        + TOOLS_INSTRUCTION
        + WEATHER_TOOL_JSON
        + "\n\n"
        + "Weather in Paris?"
        + EOT
        + header("assistant")
    )
    assert llama31.render(messages, tools=[WEATHER_TOOL]) == expected


def test_llama31_empty_tool_list_is_no_tools(llama31: ChatFormatter) -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    assert llama31.render(messages, tools=[]) == llama31.render(messages)


def test_llama31_tool_call_and_json_result(llama31: ChatFormatter) -> None:
    # Arguments arrive as a JSON string (OpenAI shape) and must not come out double-encoded.
    assert llama31.render(tool_turn(), tools=[WEATHER_TOOL]) == TOOL_TURN_PROMPT


def test_llama31_plain_text_tool_result_is_json_quoted(llama31: ChatFormatter) -> None:
    # Meta's template tojson's any tool result (to Jinja a string is iterable): plain text arrives quoted.
    messages = [
        ChatMessage(role="user", content="Weather in Paris?"),
        weather_call(),
        ChatMessage(role="tool", content='22 "C"', tool_call_id="call_1"),
    ]
    assert llama31.render(messages).endswith(header("ipython") + '"22 \\"C\\""' + EOT + header("assistant"))


def test_llama31_arguments_that_are_not_json_are_kept_as_a_string(llama31: ChatFormatter) -> None:
    messages = [ChatMessage(role="user", content="Weather?"), weather_call(arguments="Paris")]
    prompt = llama31.render(messages, add_generation_prompt=False)
    assert prompt.endswith(header("assistant") + '{"name": "get_weather", "parameters": "Paris"}' + EOT)


def two_calls_and_their_results() -> tuple[list[dict[str, Any]], list[ChatMessage]]:
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": f'{{"city": "{c}"}}'}}
        for i, c in enumerate(["Paris", "Oslo"])
    ]
    results = [
        ChatMessage("tool", '{"temp": 5}', tool_call_id="call_1"),
        ChatMessage("tool", "20 C", tool_call_id="call_0"),
    ]
    return calls, results


def test_parallel_tool_calls_echoed_back_are_written_one_per_turn(llama31: ChatFormatter) -> None:
    """OpenAI-style clients send parallel calls back as one assistant message and then the results; Meta's
    templates refused that ("This model only supports single tool-calls at once!"), so a default parallel
    tool-call loop broke. Each call now goes with its own result (matched by tool_call_id)."""
    calls, results = two_calls_and_their_results()
    user = ChatMessage("user", "Weather in Paris and Oslo?")
    for formatter in (llama31, ChatFormatter(None)):
        together = formatter.render([user, ChatMessage("assistant", None, tool_calls=calls), *results])
        one_by_one = formatter.render([
            user, ChatMessage("assistant", None, tool_calls=[calls[0]]), results[1],
            ChatMessage("assistant", None, tool_calls=[calls[1]]), results[0],
        ])  # fmt: skip
        assert together == one_by_one


def test_llama31_tools_without_a_user_message(llama31: ChatFormatter) -> None:
    with pytest.raises(ChatFormatError, match="no first user message"):
        llama31.render([ChatMessage(role="system", content="Sys")], tools=[WEATHER_TOOL])


# --- Meta's Llama 3.2 template (dates itself with strftime_now) --------------------------------------------------


def test_llama32_dates_the_prompt_with_today(pinned_clock: None) -> None:
    formatter = ChatFormatter(template_text(LLAMA_3_2))
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")]
    expected = (
        BOT
        + header("system")
        + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        + "Be brief."
        + EOT
        + header("user")
        + "Hi"
        + EOT
        + header("assistant")
    )
    assert formatter.render(messages) == expected


def test_llama32_date_format_with_the_real_clock() -> None:
    formatter = ChatFormatter(template_text(LLAMA_3_2))
    prompt = formatter.render([ChatMessage(role="user", content="Hi")])
    assert re.search(r"\nToday Date: \d{2} [A-Z][a-z]{2} \d{4}\n\n<\|eot_id\|>", prompt)


def test_llama32_tool_call_and_result(pinned_clock: None) -> None:
    formatter = ChatFormatter(template_text(LLAMA_3_2))
    assert formatter.render(tool_turn(), tools=[WEATHER_TOOL]) == TOOL_TURN_PROMPT


# --- built-in Llama 3 format ---------------------------------------------------------------------------------------


def test_builtin_system_and_user() -> None:
    formatter = ChatFormatter(None)
    messages = [
        ChatMessage(role="system", content=" You are a helpful assistant. "),
        ChatMessage(role="user", content="What is the capital of France?\n"),
    ]
    expected = (
        BOT
        + header("system")
        + "You are a helpful assistant."
        + EOT
        + header("user")
        + "What is the capital of France?"
        + EOT
        + header("assistant")
    )
    assert formatter.uses_builtin_template
    assert formatter.render(messages) == expected


def test_builtin_multi_turn_without_system() -> None:
    messages = [
        ChatMessage(role="user", content="Hi!"),
        ChatMessage(role="assistant", content="Hello."),
        ChatMessage(role="user", content="Name a color."),
    ]
    expected = (
        BOT
        + header("user")
        + "Hi!"
        + EOT
        + header("assistant")
        + "Hello."
        + EOT
        + header("user")
        + "Name a color."
        + EOT
        + header("assistant")
    )
    assert ChatFormatter(None).render(messages) == expected


def test_builtin_without_generation_prompt() -> None:
    messages = [ChatMessage(role="user", content="Hi"), ChatMessage(role="assistant", content="Hello")]
    expected = BOT + header("user") + "Hi" + EOT + header("assistant") + "Hello" + EOT
    assert ChatFormatter(None).render(messages, add_generation_prompt=False) == expected


def test_builtin_empty_template_means_builtin() -> None:
    assert ChatFormatter("  \n").uses_builtin_template


def test_builtin_tool_call_and_result_without_tools() -> None:
    messages = [
        ChatMessage(role="user", content="Weather in Paris?"),
        weather_call(),
        ChatMessage(role="tool", content=" sunny, 22 C\n", tool_call_id="call_1"),
    ]
    expected = (
        BOT
        + header("user")
        + "Weather in Paris?"
        + EOT
        + header("assistant")
        + '{"name": "get_weather", "parameters": {"city": "Paris"}}'
        + EOT
        + header("ipython")
        + "sunny, 22 C"
        + EOT
        + header("assistant")
    )
    assert ChatFormatter(None).render(messages) == expected


def test_builtin_with_tools_matches_meta_llama31_template(pinned_clock: None) -> None:
    assert ChatFormatter(None).render(tool_turn(), tools=[WEATHER_TOOL]) == TOOL_TURN_PROMPT


def test_builtin_with_tools_uses_todays_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_format, "_now", lambda: datetime(2025, 3, 4))
    prompt = ChatFormatter(None).render([ChatMessage(role="user", content="Hi")], tools=[WEATHER_TOOL])
    assert prompt.startswith(
        BOT + header("system") + "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 04 Mar 2025"
    )


def test_builtin_with_tools_needs_a_user_message_first() -> None:
    messages = [ChatMessage(role="system", content="Sys"), ChatMessage(role="assistant", content="Hi")]
    with pytest.raises(ChatFormatError, match="must be a user message") as info:
        ChatFormatter(None).render(messages, tools=[WEATHER_TOOL])
    assert info.value.param == "messages"


def test_parallel_calls_without_ids_take_their_results_in_order() -> None:
    calls, results = two_calls_and_their_results()
    anonymous = [ChatMessage("tool", r.content) for r in results]
    user = ChatMessage("user", "Weather?")
    together = ChatFormatter(None).render([user, ChatMessage("assistant", None, tool_calls=calls), *anonymous])
    in_order = ChatFormatter(None).render([
        user, ChatMessage("assistant", None, tool_calls=[calls[0]]), anonymous[0],
        ChatMessage("assistant", None, tool_calls=[calls[1]]), anonymous[1],
    ])  # fmt: skip
    assert together == in_order


def test_builtin_tokenizes_to_llama3_ids() -> None:
    from llamafoundry.model.llamacpp import LlamaCppVocab

    vocab = LlamaCppVocab(require_shared(TOKENIZER, "the Llama 3 tokenizer"))
    messages = [
        ChatMessage(role="system", content="You are a helpful assistant."),
        ChatMessage(role="user", content="This is a test sentence."),
        ChatMessage(role="assistant", content="Hello!"),
    ]
    prompt = ChatFormatter(None).render(messages, add_generation_prompt=True)
    # fmt: off
    expected = [
        128000,                                         # <|begin_of_text|>
        128006, 9125, 128007, 271,                      # <|start_header_id|> system <|end_header_id|> \n\n
        2675, 527, 264, 11190, 18328, 13,               # You are a helpful assistant.
        128009,                                         # <|eot_id|>
        128006, 882, 128007, 271,                       # <|start_header_id|> user <|end_header_id|> \n\n
        2028, 374, 264, 1296, 11914, 13,                # This is a test sentence.
        128009,                                         # <|eot_id|>
        128006, 78191, 128007, 271,                     # <|start_header_id|> assistant <|end_header_id|> \n\n
        9906, 0,                                        # Hello!
        128009,                                         # <|eot_id|>
        128006, 78191, 128007, 271,                     # <|start_header_id|> assistant <|end_header_id|> \n\n
    ]
    # fmt: on
    try:
        assert vocab.tokenize(prompt, add_bos=False, parse_special=True) == expected
    finally:
        vocab.close()


# --- errors and transformers compatibility ------------------------------------------------------------------------


def test_empty_messages() -> None:
    for formatter in (ChatFormatter(None), ChatFormatter("{{ messages[0].content }}")):
        with pytest.raises(ChatFormatError, match="at least one message") as info:
            formatter.render([])
        assert info.value.param == "messages"


@pytest.mark.parametrize("role", ["user", "system", "tool"])
def test_message_without_content(role: str) -> None:
    with pytest.raises(ChatFormatError, match=r"messages\[0\] \(\w+\) has no content"):
        ChatFormatter(None).render([ChatMessage(role=role, content=None)])


def test_an_assistant_turn_without_content_is_an_empty_turn(llama31: ChatFormatter) -> None:
    """The API contract lists it among what clients send: it was a 400. Built-in and Meta's templates alike."""
    empty = [ChatMessage("user", "a"), ChatMessage("assistant", None), ChatMessage("user", "b")]
    blank = [ChatMessage("user", "a"), ChatMessage("assistant", ""), ChatMessage("user", "b")]
    for formatter in (ChatFormatter(None), llama31):
        rendered = formatter.render(empty)
        assert rendered == formatter.render(blank) and header("assistant") + EOT in rendered


def test_unknown_role() -> None:
    with pytest.raises(ChatFormatError, match="use one of system, user, assistant, tool"):
        ChatFormatter(None).render([ChatMessage(role="narrator", content="Once upon a time")])


def test_template_raise_exception_becomes_chat_format_error() -> None:
    formatter = ChatFormatter("{{ raise_exception('Conversation roles must alternate user/assistant.') }}")
    with pytest.raises(ChatFormatError) as info:
        formatter.render([ChatMessage(role="user", content="Hi")])
    assert info.value.param == "messages"
    assert info.value.message == (
        "The model's chat template rejected these messages: Conversation roles must alternate user/assistant."
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ 1 / 0 }}",  # ZeroDivisionError
        "{{ messages[5].content | trim }}",  # jinja UndefinedError
        "{{ ''.__class__.__mro__ }}",  # sandbox SecurityError
        "{% set x = messages.append(1) %}",  # immutable sandbox
    ],
)
def test_template_failure_becomes_a_sentence(template: str) -> None:
    with pytest.raises(ChatFormatError, match="^The model's chat template failed on these messages") as info:
        ChatFormatter(template).render([ChatMessage(role="user", content="Hi")])
    assert "Traceback" not in info.value.message


def test_template_that_does_not_compile() -> None:
    with pytest.raises(ChatFormatError, match="does not compile") as info:
        ChatFormatter("{% for message in messages %}{{ message.content }}")
    assert info.value.param is None


def test_tojson_as_transformers_defines_it() -> None:
    formatter = ChatFormatter("{{ messages[0].content | tojson }}|{{ tools[0] | tojson(indent=2) }}")
    tools = [{"name": "<é>"}]
    prompt = formatter.render([ChatMessage(role="user", content="<Grüße & 'ciao'>")], tools=tools)
    assert prompt == json.dumps("<Grüße & 'ciao'>", ensure_ascii=False) + "|" + '{\n  "name": "<é>"\n}'


def test_variables_loopcontrols_and_generation_tag() -> None:
    template = (
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools is defined }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    )
    formatter = ChatFormatter(template, bos_token="<s>", eos_token="</s>")
    messages = [ChatMessage(role="user", content="a"), ChatMessage(role="assistant", content="b")]
    assert formatter.render(messages, add_generation_prompt=False) == "<s>|</s>|False|False|a"


def test_template_sees_optional_fields_only_when_set() -> None:
    template = (
        "{% for m in messages %}{{ m.role }}:{{ 'tool_calls' in m }}:{{ m.tool_call_id is defined }}"
        ":{{ m.name is defined }};{% endfor %}"
    )
    messages = [
        ChatMessage(role="user", content="Weather?", name="ann"),
        weather_call(),
        ChatMessage(role="tool", content="22", tool_call_id="call_1"),
    ]
    assert (
        ChatFormatter(template).render(messages)
        == "user:False:False:True;assistant:True:False:False;tool:False:True:False;"
    )
