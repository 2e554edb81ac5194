"""Chat messages -> prompt text.

Two paths: the GGUF's own Jinja chat template (`tokenizer.chat_template`), rendered the way Hugging Face
transformers' `apply_chat_template` renders it, or, when the model has none, a built-in Llama 3 format written in
Python. Both start with the BOS text: tokenize the result with `add_bos=False, parse_special=True`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llamafoundry.service.types import ChatMessage

BEGIN_OF_TEXT = "<|begin_of_text|>"
START_HEADER_ID = "<|start_header_id|>"
END_HEADER_ID = "<|end_header_id|>"
EOT_ID = "<|eot_id|>"

ROLES = ("system", "user", "assistant", "tool")

# The Llama 3.1 tool-calling instruction (JSON calls), as Meta's prompt format words it.
_TOOLS_INSTRUCTION = (
    "Given the following functions, please respond with a JSON for a function call "
    "with its proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


class ChatFormatError(ValueError):
    """Messages (or a chat template) that cannot become a prompt.

    Attributes:
        message: a sentence a user can act on.
        param: the request field at fault ("messages"), or None when the fault is the model's template.
    """

    def __init__(self, message: str, param: str | None = "messages") -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _now() -> datetime:
    """The clock behind `strftime_now` and the built-in format's date (tests replace it)."""
    return datetime.now()


def _strftime_now(fmt: str) -> str:
    return _now().strftime(fmt)


def _raise_exception(message: str) -> None:
    raise ChatFormatError(f"The model's chat template rejected these messages: {message}")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' tojson: unlike Jinja's own filter it does not HTML-escape and it takes json.dumps options.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask marker): renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatFormatError(
            f"The model's chat template does not compile (line {exc.lineno}: {exc.message}). "
            "Fix tokenizer.chat_template in the GGUF, or serve the model without it to use the built-in Llama 3 "
            "format.",
            param=None,
        ) from exc


def _parse_json(text: Any) -> Any:
    """A JSON object or array given as a string, parsed; anything else unchanged."""
    if not isinstance(text, str):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict | list) else text


def _template_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    # Meta's templates do `tool_call.arguments | tojson`: a JSON string would come out double-encoded.
    function = dict(call.get("function") or {})
    if "arguments" in function:
        function["arguments"] = _parse_json(function["arguments"])
    return {**call, "function": function}


def _template_message(message: ChatMessage) -> dict[str, Any]:
    """The dict a transformers-style template reads; optional keys only when set (templates test `'k' in message`)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.content is None and not message.tool_calls:
        out["content"] = ""  # an assistant turn sent without content: templates trim it, and None cannot be
    if message.role == "tool":
        # Meta's templates tojson a tool result (a string is "iterable" to Jinja): parse JSON so it stays JSON.
        out["content"] = _parse_json(message.content)
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [_template_tool_call(call) for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def one_call_per_turn(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Parallel tool calls as Llama writes them: an assistant message with several `tool_calls` (OpenAI's parallel
    calls, as clients echo them back) becomes one assistant message per call, each followed by its result (the
    `tool` message with its `tool_call_id`, else the next one in order). Meta's templates take one call per
    assistant message and refuse more; this server's own parser can return several from one answer."""
    out: list[ChatMessage] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        i += 1
        if message.role != "assistant" or not message.tool_calls or len(message.tool_calls) < 2:
            out.append(message)
            continue
        results = []
        while i < len(messages) and messages[i].role == "tool":
            results.append(messages[i])
            i += 1
        ids = {call.get("id") for call in message.tool_calls}
        by_id = any(r.tool_call_id in ids for r in results)  # else no ids to go by: results in the calls' order
        for n, call in enumerate(message.tool_calls):
            out.append(ChatMessage("assistant", message.content if n == 0 else None, tool_calls=[call]))
            if by_id:
                found = next((r for r in results if r.tool_call_id == call.get("id")), None)
            else:
                found = results[0] if results else None
            if found is not None:
                results.remove(found)
                out.append(found)
        out.extend(results)  # results that matched no call stay, after the calls
    return out


def _validate(messages: list[ChatMessage]) -> None:
    if not messages:
        raise ChatFormatError("messages is empty: send at least one message, for example a user message.")
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise ChatFormatError(f"messages[{i}].role is {message.role!r}; use one of {', '.join(ROLES)}.")
        if message.content is None and message.role != "assistant":  # an assistant turn may be empty (Azure's too)
            raise ChatFormatError(
                f"messages[{i}] ({message.role}) has no content; only an assistant message may omit it."
            )


def _header(role: str) -> str:
    return f"{START_HEADER_ID}{role}{END_HEADER_ID}\n\n"


def _tool_call_text(index: int, tool_calls: list[dict[str, Any]]) -> str:
    """One call as Meta's Llama 3.1 JSON format: {"name": ..., "parameters": ...}."""
    if len(tool_calls) != 1:
        raise ChatFormatError(
            f"messages[{index}] has {len(tool_calls)} tool_calls; Llama 3 takes one tool call per assistant message, "
            "so send each call (and its result) as its own assistant/tool pair."
        )
    function = tool_calls[0].get("function") or {}
    if not isinstance(function.get("name"), str):
        raise ChatFormatError(f"messages[{index}].tool_calls[0].function.name is missing; give the function's name.")
    parameters = _parse_json(function.get("arguments", {}))
    return json.dumps({"name": function["name"], "parameters": parameters}, ensure_ascii=False)


def _builtin_message(index: int, message: ChatMessage) -> str:
    if message.role == "assistant" and message.tool_calls:
        return _header("assistant") + _tool_call_text(index, message.tool_calls) + EOT_ID
    role = "ipython" if message.role == "tool" else message.role
    return _header(role) + (message.content or "").strip() + EOT_ID


class ChatFormatter:
    """Turns chat messages into the prompt text of one model.

    Args:
        template: the GGUF's `tokenizer.chat_template`, or None for the built-in Llama 3 format.
        bos_token: text the prompt starts with (both paths); pass "" if the tokenizer adds BOS itself.
        eos_token: the `eos_token` variable templates see.

    Raises:
        ChatFormatError: the template does not compile (param None).
    """

    def __init__(self, template: str | None, bos_token: str = BEGIN_OF_TEXT, eos_token: str = EOT_ID) -> None:
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(template) if template and template.strip() else None

    @property
    def uses_builtin_template(self) -> bool:
        """True when the model has no chat template and the built-in Llama 3 format is used."""
        return self._template is None

    def render(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool = True
    ) -> str:
        """Format a conversation as prompt text.

        Args:
            messages: the conversation; a tool result is a `tool` message after the assistant message that called.
            tools: OpenAI-shape tool definitions ({"type": "function", "function": {...}}); None or [] for none.
            add_generation_prompt: end with the assistant header so the model writes the next assistant turn.

        Returns:
            The prompt, BOS text included.

        Raises:
            ChatFormatError: the messages are invalid or the template rejects them (param "messages").
        """
        messages = one_call_per_turn(messages)
        _validate(messages)
        if self._template is None:
            return self._render_builtin(messages, tools or None, add_generation_prompt)
        return self._render_template(messages, tools or None, add_generation_prompt)

    def _render_template(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None, add_generation_prompt: bool
    ) -> str:
        assert self._template is not None
        variables: dict[str, Any] = {
            "messages": [_template_message(m) for m in messages],
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": add_generation_prompt,
        }
        if tools:
            variables["tools"] = tools
        try:
            return self._template.render(**variables)
        except ChatFormatError:
            raise
        except Exception as exc:  # a template is third-party code: whatever it raises, the user gets a sentence
            raise ChatFormatError(
                f"The model's chat template failed on these messages ({type(exc).__name__}: {exc}); "
                "check the roles, content and tool calls of the messages."
            ) from exc

    def _render_builtin(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None, add_generation_prompt: bool
    ) -> str:
        parts = [self.bos_token]
        start = 1 if messages[0].role == "system" else 0
        system = messages[0].content if start else None
        if tools:
            parts.append(self._builtin_tool_preamble(messages, start, tools))
            start += 1
        elif system is not None:
            parts.append(_header("system") + system.strip() + EOT_ID)
        parts.extend(_builtin_message(i, messages[i]) for i in range(start, len(messages)))
        if add_generation_prompt:
            parts.append(_header("assistant"))
        return "".join(parts)

    def _builtin_tool_preamble(self, messages: list[ChatMessage], start: int, tools: list[dict[str, Any]]) -> str:
        """Meta's Llama 3.1 layout for custom tools: an ipython system turn, then definitions in the first user turn."""
        if start >= len(messages) or messages[start].role != "user":
            raise ChatFormatError(
                "With tools, the first message after the system message must be a user message: "
                "Llama 3 reads the tool definitions from it."
            )
        system = (messages[0].content or "").strip() if start else ""
        today = _now().strftime("%d %b %Y")
        system_turn = (
            _header("system")
            + f"Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: {today}\n\n{system}"
            + EOT_ID
        )
        definitions = "".join(json.dumps(tool, indent=4, ensure_ascii=False) + "\n\n" for tool in tools)
        user = (messages[start].content or "").strip()
        return system_turn + _header("user") + _TOOLS_INSTRUCTION + definitions + user + EOT_ID
