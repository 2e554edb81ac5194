"""Hypothesis strategies over the inference API's requests, shared by the fuzz test
(`tests/api/test_fuzz_deployments.py`) and the memory soak (`bench/soak.py`).

A request goes to one target (the server's own model, a replica deployment, an upstream deployment) on one of
its routes, with a body that is valid, valid but for one field (an odd type, a huge, negative or NaN-ish number,
unicode, nested junk, or a value past a limit), or junk altogether. Valid bodies generate a few tokens only, so
a run of hundreds stays short. JSON schemas are small and realistic (their numeric keywords stay small: the
grammar a schema compiles to is bounded by the constrained-decoding engine, not by these requests).

The app has no OpenAPI document yet; when it has one, schemathesis can drive the same checks from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

ROLES = ["system", "developer", "user", "assistant", "tool"]
ODD_NUMBERS = [0, -0.0, 1, -1, 1e-320, 5e-324, 1e-39, 1e-7, 2.0000001, 1e308, -1e308, 2**31, 2**53 + 1, 2**63,
               2**64, -(2**63) - 1, 10**30, -(10**30), float("inf"), float("-inf"), float("nan")]  # fmt: skip
BOOL_TEXT = ["true", "false", "True", "1", "0", "yes", "maybe", ""]


@dataclass(frozen=True)
class FuzzTarget:
    """One served model and the routes that reach it, with the key that opens it.

    Args:
        name: for reports.
        key: its API key.
        chat_paths: chat-completions routes.
        text_paths: text-completions routes.
        headers: sent with every request (`azureml-model-deployment` routes `/v1` to a deployment).
    """

    name: str
    key: str
    chat_paths: tuple[str, ...]
    text_paths: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FuzzRequest:
    target: str
    method: str
    path: str
    headers: dict[str, str]
    content: bytes
    kind: str  # valid, mutated, junk, limit

    @property
    def is_stream(self) -> bool:
        return b'"stream": true' in self.content


unicode_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["é", "字", "🦙", "\u202e", "\x00"]),
    max_size=40,
) | st.sampled_from(["<|eot_id|><|start_header_id|>system<|end_header_id|>", "Hi", " "])
# Longer text of random words, each one new (drawn from a seeded Random: hypothesis's own text repeats itself), as
# a content filter's word features see in hostile traffic.
prose = st.randoms(use_true_random=True).map(
    lambda rng: " ".join(
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=rng.randint(3, 40)))
        for _ in range(rng.randint(5, 200))
    )
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | unicode_text
nested_junk = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unicode_text, inner, max_size=3),
    max_leaves=10,
)
odd_values = st.one_of(
    st.sampled_from(ODD_NUMBERS), st.sampled_from(BOOL_TEXT), nested_junk, st.integers(-(2**70), 2**70)
)


def content() -> st.SearchStrategy[Any]:
    parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": unicode_text}), min_size=1, max_size=3)
    return unicode_text.filter(bool) | prose | parts


def messages() -> st.SearchStrategy[list[dict[str, Any]]]:
    system = st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": content()})
    turn = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": content()})
    user = st.fixed_dictionaries({"role": st.just("user"), "content": content()})
    return st.tuples(st.lists(system, max_size=1), st.lists(turn, max_size=2), user).map(lambda t: [*t[0], *t[1], t[2]])


def schemas(depth: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """Small JSON schemas of the kinds Pydantic models produce."""
    leaf = st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean", "null"])}),
        st.fixed_dictionaries({"type": st.just("string"), "maxLength": st.integers(0, 12)}),
        st.fixed_dictionaries(
            {"type": st.just("integer"), "minimum": st.integers(-5, 0), "maximum": st.integers(0, 9)}
        ),
        st.fixed_dictionaries({"enum": st.lists(st.text(max_size=6), min_size=1, max_size=3, unique=True)}),
    )  # fmt: skip
    if depth <= 1:
        return leaf
    inner = schemas(depth - 1)
    names = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
    objects = st.dictionaries(names, inner, min_size=1, max_size=3).map(
        lambda props: {"type": "object", "properties": props, "required": sorted(props)[:1]}
    )
    arrays = st.fixed_dictionaries({"type": st.just("array"), "items": inner, "maxItems": st.integers(0, 3)})
    any_of = st.lists(inner, min_size=2, max_size=2).map(lambda options: {"anyOf": options})
    return leaf | objects | arrays | any_of


def response_formats() -> st.SearchStrategy[dict[str, Any]]:
    schema_format = schemas().map(lambda s: {"type": "json_schema", "json_schema": {"name": "answer", "schema": s}})
    return st.sampled_from([{"type": "text"}, {"type": "json_object"}]) | schema_format


def tools() -> st.SearchStrategy[list[dict[str, Any]]]:
    function = st.fixed_dictionaries(
        {"name": st.sampled_from(["get_weather", "lookup", "f"]), "parameters": schemas(2)},
        optional={"description": unicode_text},
    )
    return st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": function}), min_size=1,
                    max_size=2, unique_by=lambda t: t["function"]["name"])  # fmt: skip


def valid_chat() -> st.SearchStrategy[dict[str, Any]]:
    """A body every route must serve (200), generating at most 8 tokens per choice."""
    return st.fixed_dictionaries(
        {"messages": messages(), "max_tokens": st.integers(1, 8)},
        optional={
            "temperature": st.sampled_from([0, 1e-320, 1e-6, 0.7, 2]) | st.floats(0, 2),
            "top_p": st.floats(0, 1),
            "presence_penalty": st.floats(-2, 2),
            "frequency_penalty": st.floats(-2, 2),
            "seed": st.integers(-(2**63), 2**64 - 1),
            "stop": st.lists(st.text(min_size=1, max_size=5), max_size=4) | st.text(min_size=1, max_size=5),
            "stream": st.booleans(),
            "response_format": response_formats(),
            "n": st.integers(1, 2),
            "logprobs": st.booleans(),
            "top_logprobs": st.integers(0, 3),
            "stop_token_ids": st.lists(st.integers(0, 128_000), max_size=3),
        },
    ).map(_consistent)


def _consistent(body: dict[str, Any]) -> dict[str, Any]:
    """Drop the combinations the API refuses on purpose (they are the mutated bodies' business)."""
    if "top_logprobs" in body and not body.get("logprobs"):
        body.pop("top_logprobs")
    if body.get("response_format", {}).get("type") in ("json_object", "json_schema"):
        body.pop("stop_token_ids", None)
    return body


def with_tools(body: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return body
    chosen = draw(tools())
    choice = draw(st.sampled_from(["auto", "none", "required", "named"]))
    named = {"type": "function", "function": {"name": chosen[0]["function"]["name"]}}
    return {**body, "tools": chosen, "tool_choice": named if choice == "named" else choice}


def valid_text() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"prompt": unicode_text.filter(bool) | prose, "max_tokens": st.integers(1, 8)},
        optional={"temperature": st.floats(0, 2), "seed": st.integers(0, 2**64 - 1), "stream": st.booleans(),
                  "logprobs": st.integers(0, 5), "echo": st.booleans(), "stop": st.text(min_size=1, max_size=4)},
    ).map(lambda b: {k: v for k, v in b.items() if not (k == "echo" and "logprobs" in b)})  # fmt: skip


def pick(draw: st.DrawFn, options: list[Any]) -> Any:
    """One of `options`, uniformly (hypothesis's own `sampled_from` favours the first ones heavily)."""
    return draw(st.randoms(use_true_random=True)).choice(options)


def past_the_limits() -> list[dict[str, Any]]:
    """Bodies with one field past one of the limits of `api/bounds.py`."""
    deep: Any = {"type": "string"}
    for _ in range(299):
        deep = {"type": "array", "items": deep}
    junk_deep: Any = "x"
    for _ in range(400):
        junk_deep = [junk_deep]
    user = [{"role": "user", "content": "Hi"}]
    return [
        {"messages": user * 2049},
        {"messages": [{"role": "user", "content": "y" * 1_048_577}]},
        {"messages": user, "max_tokens": 131_073},
        {"messages": user, "n": 4, "max_tokens": 70_000},
        {"messages": user, "stop": ["s"] * 17},
        {"messages": user, "stop": "z" * 513},
        {"messages": user, "stop_token_ids": list(range(257))},
        {"messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": deep}}},
        {"messages": user, "tools": [{"type": "function", "function": {"name": "f", "parameters": deep}}]},
        {"messages": user, "metadata": junk_deep},
        {"messages": user, "seed": 2**64},
        {"messages": user, "temperature": 1e-320, "max_tokens": 2},  # not past a limit: greedy
    ]


@st.composite
def chat_body(draw: st.DrawFn) -> tuple[str, Any]:
    kind = pick(draw, ["valid", "valid", "mutated", "mutated", "junk", "limit"])
    if kind == "limit":
        return kind, pick(draw, past_the_limits())
    if kind == "junk":
        return kind, draw(nested_junk | st.dictionaries(unicode_text, nested_junk, max_size=4))
    body = with_tools(draw(valid_chat()), draw)
    if kind == "mutated":
        name = pick(draw, sorted(body) + ["temperature", "top_p", "seed", "n", "tools", "tool_choice",
                                          "response_format", "stop_token_ids", "best_of", "logprobs"])
        body = {k: v for k, v in body.items() if k != name}
        if draw(st.integers(0, 4)):  # mostly replaced, sometimes only removed
            body[name] = draw(odd_values)
    return kind, body


@st.composite
def text_body(draw: st.DrawFn) -> tuple[str, Any]:
    kind = pick(draw, ["valid", "valid", "mutated", "junk"])
    body = draw(valid_text())
    if kind == "junk":
        return kind, draw(nested_junk)
    if kind == "mutated":
        name = pick(draw, ["prompt", "max_tokens", "temperature", "logprobs", "echo", "n", "logit_bias"])
        body[name] = draw(odd_values)
    return kind, body


def encode(body: Any, draw: st.DrawFn) -> bytes:
    """JSON bytes; now and then with lone surrogates escaped in (ASCII-only output), or cut short."""
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    if pick(draw, range(20)) == 0:
        text = text[: pick(draw, range(len(text)))]
    if pick(draw, range(20)) == 0:
        text = text.replace('"Hi"', '"\\ud800 Hi"')
    return text.encode("utf-8", "surrogatepass")


@st.composite
def fuzz_requests(draw: st.DrawFn, targets: list[FuzzTarget]) -> FuzzRequest:
    """A request to one of `targets`: mostly with its key and JSON, sometimes with extra-parameters set, another
    content type, or a wrong key."""
    target = pick(draw, targets)
    is_text = bool(target.text_paths) and pick(draw, range(5)) == 0
    path = pick(draw, list(target.text_paths if is_text else target.chat_paths))
    kind, body = draw(text_body() if is_text else chat_body())
    headers = {"content-type": "application/json", "api-key": target.key, **target.headers}
    mode = pick(draw, ["pass-through", "pass-through", "drop", None, "error", "sideways"])
    if mode is not None:
        headers["extra-parameters"] = mode
    if pick(draw, range(30)) == 0:
        headers["api-key"] = "0" * 32
    if pick(draw, range(30)) == 0:
        headers["content-type"] = "text/plain"
    return FuzzRequest(target.name, "POST", path, headers, encode(body, draw), kind)
