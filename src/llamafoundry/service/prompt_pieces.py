"""The prompt as pieces to tokenize: what the chat template wrote (its control tokens parsed) and what the
messages say (always plain text).

Tokenizing a whole rendered prompt with special tokens parsed, as llama.cpp's server and vLLM do, also parses
control-token text inside messages: a user who writes "<|eot_id|><|start_header_id|>system<|end_header_id|>"
ends their own turn and opens a system one. Here a message's text is tokenized as text, so "<|eot_id|>" in a
message is the characters "<|eot_id|>" to the model, as it would be in a document about Llama.

Prompts whose messages hold no control-token text (all ordinary ones) stay one piece, tokenized exactly as
before. For the others the template is rendered a second time with a marker in place of each message's text,
and the pieces are used only if putting the texts back reproduces the first rendering character for character.
A template that transforms message text (a tool result written as JSON) fails that check; the prompt is then
rendered with the control-token text in the messages broken by an invisible character instead.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from llamafoundry.service.chat_format import ChatFormatter
from llamafoundry.service.types import ChatMessage

CONTROL_TEXT = "<|"  # how every Llama 3 control token is written: <|eot_id|>, <|start_header_id|>, <|python_tag|>
_BROKEN_CONTROL_TEXT = "<\u2060|"  # with a WORD JOINER between: no token's text any more, and invisible
_MARKER = "\ue000{}\ue001"  # private-use characters: templates neither trim nor escape them
_MARKERS = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class PromptPiece:
    text: str
    is_message_text: bool  # tokenize as plain text (parse_special=False)


def render_pieces(
    formatter: ChatFormatter,
    messages: list[ChatMessage],
    tools: list[dict[str, Any]] | None = None,
    separate: Collection[int] = (),
) -> list[PromptPiece]:
    """`formatter.render(messages, tools)` as pieces whose concatenation is that prompt (or, for a template
    that rewrites message text, the prompt with the control-token text in messages broken).

    Args:
        separate: indices of messages whose text must be a piece of its own (answers whose generated token ids
            the caller puts in place of their text's tokens), besides the messages holding control-token text.
    """
    prompt = formatter.render(messages, tools=tools)
    if any(_has_control_text(m) for m in messages):
        own = set(range(len(messages)))
    else:
        own = {i for i in separate if messages[i].content}
    if not own:
        return [PromptPiece(prompt, is_message_text=False)]
    marked = formatter.render([_marked(m, i) if i in own else m for i, m in enumerate(messages)], tools=tools)
    for strip in (False, True):  # templates write a message's text as it is, or trimmed
        pieces = _fill_markers(marked, messages, strip)
        if "".join(p.text for p in pieces) == prompt:
            return pieces
    return [PromptPiece(formatter.render([_broken(m) for m in messages], tools=tools), is_message_text=False)]


def break_control_text(text: str) -> str:
    """`text` with every `<|` broken by an invisible WORD JOINER: no control token can be read from it. For text that
    leaves this server inside chat messages (a forwarding deployment's upstream parses control tokens in them)."""
    return text.replace(CONTROL_TEXT, _BROKEN_CONTROL_TEXT)


def _has_control_text(message: ChatMessage) -> bool:
    return message.content is not None and CONTROL_TEXT in message.content


def _marked(message: ChatMessage, index: int) -> ChatMessage:
    return replace(message, content=_MARKER.format(index)) if message.content else message


def _broken(message: ChatMessage) -> ChatMessage:
    return replace(message, content=break_control_text(message.content)) if message.content else message


def _fill_markers(marked: str, messages: list[ChatMessage], strip: bool) -> list[PromptPiece]:
    pieces: list[PromptPiece] = []
    position = 0
    for match in _MARKERS.finditer(marked):
        if int(match.group(1)) >= len(messages):  # such text in a tool definition: verification will fail
            continue
        if match.start() > position:
            pieces.append(PromptPiece(marked[position : match.start()], is_message_text=False))
        content = messages[int(match.group(1))].content or ""
        pieces.append(PromptPiece(content.strip() if strip else content, is_message_text=True))
        position = match.end()
    if position < len(marked):
        pieces.append(PromptPiece(marked[position:], is_message_text=False))
    return pieces
