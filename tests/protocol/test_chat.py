"""Request body -> ChatRequest: validation with `param`, extra-parameters modes, Llama extras, cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest

from llamafoundry.api.errors import from_service_exception
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.protocol.chat import extra_parameters_mode, parse_chat, parse_json_object
from llamafoundry.protocol.errors import ApiError
from llamafoundry.service.sampling import DEFAULT_TEMPERATURE, sampling_params
from llamafoundry.service.structured import with_grammar

USER = [{"role": "user", "content": "Hi"}]


def params_of(body: dict[str, Any], mode: str = "error", **kwargs: Any) -> SamplingParams:
    """The engine's settings for `body`, as the API parses it and the service prepares it."""
    request = parse_chat(body, mode, **kwargs)
    return with_grammar(request, sampling_params(request))


def rejected(body: dict[str, Any], mode: str = "error", **kwargs: Any) -> ApiError:
    """The API's error for `body`: from parsing (protocol) or from preparing it (service), as the API maps it."""
    try:
        params_of(body, mode, **kwargs)
    except ApiError as exc:
        return exc
    except Exception as exc:
        error = from_service_exception(exc)
        assert error is not None, f"{type(exc).__name__} is no API error: {exc}"
        return error
    pytest.fail(f"accepted: {body}")


# ---- JSON and content type ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8", "x/y+json"])
def test_json_content_types(content_type: str | None) -> None:
    assert parse_json_object(b'{"a": 1}', content_type) == {"a": 1}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_other_content_types_are_415(content_type: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json_object(b'{"a": 1}', content_type)
    assert caught.value.status == 415 and "application/json" in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"\xff\xfe\x00",
        b'{"t": NaN}',
        b'{"t": Infinity}',
        b"[" * 100_000,
    ],
)
def test_bodies_that_are_not_json_objects_are_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json_object(raw, "application/json")
    assert caught.value.status == 400 and caught.value.code == "invalid_json"


# ---- extra-parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "mode"), [(None, "error"), ("", "error"), ("drop", "drop"), (" Pass-Through ", "pass-through")]
)
def test_extra_parameters_modes(header: str | None, mode: str) -> None:
    assert extra_parameters_mode(header) == mode


def test_invalid_extra_parameters_value_uses_the_maas_text() -> None:
    with pytest.raises(ApiError) as caught:
        extra_parameters_mode("ignore")
    text = "Unexpected EXTRA_PARAMETERS option ignore, expected options are ['error', 'drop', 'pass-through']"
    assert caught.value.status == 400 and caught.value.body()["detail"] == text
    assert caught.value.body()["error"]["message"] == text


def test_extras_in_error_mode_give_the_exact_contract_body() -> None:
    error = rejected({"messages": USER, "n": 2, "foo": 1})
    text = (
        "Extra parameters ['n', 'foo'] are not allowed when extra-parameters is not set or set to be 'error'. "
        "Set extra-parameters to 'pass-through' to pass to the model."
    )
    assert error.status == 400
    assert error.body() == {
        "error": {"code": "extra_parameters_not_allowed", "message": text, "param": None, "type": None, "status": 400},
        "detail": text,
    }


def test_drop_removes_extras_including_llama_ones() -> None:
    params = params_of({"messages": USER, "n": 3, "logprobs": True, "foo": {"x": 1}}, "drop")
    assert params.n == 1 and not params.logprobs


def test_pass_through_applies_llama_extras_and_ignores_unknown_ones() -> None:
    body = {
        "messages": USER,
        "n": 2,
        "best_of": 3,
        "logprobs": True,
        "top_logprobs": 4,
        "ignore_eos": True,
        "stop_token_ids": [128009],
        "skip_special_tokens": False,
        "key1": "value1",
    }
    params = params_of(body, "pass-through")
    assert (params.n, params.best_of, params.logprobs, params.top_logprobs) == (2, 3, True, 4)
    assert params.ignore_eos and params.stop_token_ids == [128009] and not params.skip_special_tokens


def test_openai_route_knows_stream_options_and_user() -> None:
    body = {"messages": USER, "stream": True, "stream_options": {"include_usage": True}, "user": "u1"}
    assert parse_chat(body, "error", is_openai_route=True).stream
    assert rejected(body).code == "extra_parameters_not_allowed"  # `user`, on the Azure routes


def test_openai_route_takes_max_completion_tokens_as_max_tokens() -> None:
    body = {"messages": USER, "max_completion_tokens": 7, "parallel_tool_calls": False}
    assert params_of(body, "error", is_openai_route=True).max_tokens == 7
    same = parse_chat({**body, "max_tokens": 7}, "error", is_openai_route=True)
    assert same.options.max_tokens == 7
    with pytest.raises(ApiError) as caught:
        parse_chat({**body, "max_tokens": 8}, "error", is_openai_route=True)
    assert (caught.value.status, caught.value.param) == (400, "max_completion_tokens")


def test_azure_routes_ignore_parallel_tool_calls_and_stream_options() -> None:
    """langchain-azure-ai 1.2.12 (ChatOpenAI on /chat/completions) sends `parallel_tool_calls: false` for structured
    output and agents, `stream_options` with `stream_usage=True`: each was 400 extra_parameters_not_allowed. Other
    OpenAI fields keep the contract's rule."""
    body = {"messages": USER, "max_completion_tokens": 7, "parallel_tool_calls": False,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    assert params_of(body, "error").max_tokens == 7
    assert rejected({**body, "user": "u1"}).code == "extra_parameters_not_allowed"


def test_azure_routes_take_max_completion_tokens_too() -> None:
    """langchain-azure-ai 1.2.12 sends it on /chat/completions: it was 400 extra_parameters_not_allowed."""
    assert params_of({"messages": USER, "max_completion_tokens": 16}).max_tokens == 16


def test_openai_routes_take_openai_and_vllm_fields_without_the_header() -> None:
    body = {
        "messages": USER, "n": 2, "logprobs": True, "top_logprobs": 2, "logit_bias": {"42": -100}, "user": "u",
        "store": True, "metadata": {"k": "v"}, "service_tier": "auto", "parallel_tool_calls": True, "top_k": 40,
        "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": False, "best_of": 3, "use_beam_search": False,
        "stop_token_ids": [7], "skip_special_tokens": True,
    }  # fmt: skip
    params = params_of(body, "error", is_openai_route=True)
    assert (params.n, params.best_of, params.top_logprobs, params.top_k, params.min_p) == (2, 3, 2, 40, 0.05)
    assert params.repetition_penalty == 1.1 and params.logit_bias == {42: -100.0} and params.stop_token_ids == [7]
    assert rejected(body).code == "extra_parameters_not_allowed"  # the Azure routes keep the extra-parameters rule
    assert params_of(body, "pass-through").top_k == 40  # ... and honour them under pass-through


def test_openai_routes_refuse_unknown_keys_unless_told_to_drop_them() -> None:
    body = {"messages": USER, "max_token": 5}
    error = rejected(body, is_openai_route=True)
    assert (error.status, error.code, error.param) == (400, "unknown_parameter", "max_token")
    assert "extra-parameters: drop" in error.message
    assert params_of(body, "drop", is_openai_route=True).max_tokens is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]), ("functions", [{}]),
     ("web_search_options", {})],
)  # fmt: skip
def test_openai_features_this_server_lacks_are_422(field: str, value: Any) -> None:
    error = rejected({"messages": USER, field: value}, is_openai_route=True)
    assert (error.status, error.param) == (422, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [("top_k", -2), ("min_p", 2), ("repetition_penalty", 0), ("logit_bias", {"x": 1}), ("logit_bias", {"1": 101})],
)
def test_sampling_extensions_out_of_range_name_the_field(field: str, value: Any) -> None:
    error = rejected({"messages": USER, field: value}, is_openai_route=True)
    assert error.status == 400 and error.param is not None and error.param.startswith(field)


# ---- logprobs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extras", "expected"),
    [
        ({"logprobs": True}, (True, 0)),
        ({"logprobs": True, "top_logprobs": 5}, (True, 5)),
        ({"logprobs": False}, (False, 0)),
        ({"logprobs": 3}, (True, 3)),  # the Llama extras form: the 3 most likely tokens
        ({"logprobs": 0}, (True, 0)),
        ({"logprobs": 3, "top_logprobs": 3}, (True, 3)),
    ],
)
def test_logprobs_forms(extras: dict[str, Any], expected: tuple[bool, int]) -> None:
    params = params_of({"messages": USER, **extras}, "pass-through")
    assert (params.logprobs, params.top_logprobs) == expected


@pytest.mark.parametrize(
    ("extras", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": 3, "top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": 21}, "logprobs"),  # it named top_logprobs, which the client never sent
        ({"logprobs": "lots"}, "logprobs"),
    ],
)
def test_bad_logprobs(extras: dict[str, Any], param: str) -> None:
    error = rejected({"messages": USER, **extras}, "pass-through")
    assert (error.status, error.param) == (400, param)


# ---- cross-field rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extras", "param"),
    [
        ({"n": 3, "best_of": 2}, "best_of"),
        ({"use_beam_search": True}, "use_beam_search"),  # best_of must be > 1
        ({"use_beam_search": True, "best_of": 3, "temperature": 0.5}, "use_beam_search"),
        ({"best_of": 3, "stream": True}, "best_of"),
        ({"use_beam_search": True, "best_of": 2, "stream": True}, "use_beam_search"),
        ({"n": 0}, "n"),
        ({"stop_token_ids": [-1]}, "stop_token_ids[0]"),
    ],
)
def test_cross_field_rules_name_the_field(extras: dict[str, Any], param: str) -> None:
    error = rejected({"messages": USER, **extras}, "pass-through")
    assert (error.status, error.param) == (400, param)
    assert error.message.endswith(".")


def test_beam_search_defaults_to_temperature_zero() -> None:
    params = params_of({"messages": USER, "use_beam_search": True, "best_of": 3}, "pass-through")
    assert params.use_beam_search and params.temperature == 0


def test_n_choices_can_stream() -> None:
    assert parse_chat({"messages": USER, "n": 2, "stream": True}, "pass-through").stream


# ---- fields ------------------------------------------------------------------------------------------


def test_defaults() -> None:
    params = params_of({"messages": USER}, "error")
    assert params.temperature == DEFAULT_TEMPERATURE and params.top_p == 1.0 and params.max_tokens is None
    assert params.stop == [] and params.seed is None and params.n == 1


def test_sampling_fields_are_passed_on() -> None:
    body = {
        "messages": USER,
        "temperature": 0,
        "top_p": 0.5,
        "max_tokens": 7,
        "presence_penalty": 1.5,
        "frequency_penalty": -1,
        "seed": 42,
        "stop": "END",
        "stream": "True",  # azureml-examples send a string
    }
    parsed = parse_chat(body, "error")
    params = params_of(body, "error")
    assert (params.temperature, params.top_p, params.max_tokens, params.seed) == (0, 0.5, 7, 42)
    assert (params.presence_penalty, params.frequency_penalty, params.stop) == (1.5, -1, ["END"])
    assert parsed.stream


def test_negative_and_huge_seeds_are_accepted() -> None:
    assert params_of({"messages": USER, "seed": -1}, "error").seed == 2**64 - 1
    assert params_of({"messages": USER, "seed": 2**63}, "error").seed == 2**63


def test_top_p_zero_means_only_the_most_likely_token() -> None:
    assert 0 < params_of({"messages": USER, "top_p": 0}, "error").top_p < 1e-6


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("temperature", 2.5, "temperature"),
        ("temperature", -0.1, "temperature"),
        ("temperature", "hot", "temperature"),
        ("top_p", 1.5, "top_p"),
        ("presence_penalty", 2.1, "presence_penalty"),
        ("frequency_penalty", -3, "frequency_penalty"),
        ("max_tokens", 0, "max_tokens"),
        ("max_tokens", -1, "max_tokens"),
        ("max_tokens", 1.5, "max_tokens"),
        ("seed", "abc", "seed"),
        ("stop", [""], "stop"),
        ("stop", 5, "stop"),
        ("stop", ["a"] * 17, "stop"),
        ("stream", "maybe", "stream"),
        ("model", 3, "model"),
        ("tools", [], "tools"),
        ("tools", [{"type": "function", "function": {"name": "bad name"}}], "tools[0].function.name"),
        ("tool_choice", "sometimes", "tool_choice"),
        ("response_format", {"type": "xml"}, "response_format.type"),
        # the union's tag is no part of the field's name (it read response_format.json_schema.json_schema.name)
        (
            "response_format",
            {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}},
            "response_format.json_schema.name",
        ),
        ("messages", [], "messages"),
        ("messages", "hello", "messages"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(field: str, value: Any, param: str) -> None:
    error = rejected({"messages": USER, field: value})
    assert (error.status, error.param) == (400, param)
    assert error.code in ("invalid_value", "invalid_type", "missing_required_parameter")


def test_several_faults_are_listed_in_details() -> None:
    error = rejected({"messages": USER, "temperature": 9, "top_p": 9})
    assert error.param == "temperature"
    assert [d["target"] for d in error.body()["error"]["details"]] == ["temperature", "top_p"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
        ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0].type"),
        ([{"role": "tool", "content": "42"}], "messages[0].tool_call_id"),
        ([USER[0], {"role": "assistant", "tool_calls": [{"id": "c1"}]}], "messages[1].tool_calls[0].function"),
        (["hello"], "messages[0]"),
    ],
)
def test_invalid_messages_name_the_field(messages: list[Any], param: str) -> None:
    error = rejected({"messages": messages})
    assert (error.status, error.param) == (400, param)


def test_messages_are_normalized() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "u"},
        {
            "role": "assistant",
            "tool_calls": [
                # echoed from a response: an object as arguments, plus keys the schema does not know
                {
                    "id": "c1",
                    "type": "function",
                    "index": 0,
                    "function": {"name": "f", "arguments": {"x": 1}, "call_id": None},
                }
            ],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
    ]
    out = parse_chat({"messages": messages}, "error").messages
    assert [(m.role, m.content) for m in out] == [
        ("system", "Be brief."),
        ("user", "a\nb"),
        ("assistant", None),
        ("tool", "42"),
    ]
    assert out[1].name == "u"
    assert out[2].tool_calls == [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]
    assert out[3].tool_call_id == "c1"


def test_tools_and_tool_choice_are_passed_on() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    request = parse_chat({"messages": USER, "tools": tools, "tool_choice": choice}, "error")
    assert request.tools == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    assert request.tool_choice == choice


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ],
)
def test_tool_choice_must_match_tools(body: dict[str, Any], param: str) -> None:
    if "nope" in str(body):
        body["tools"] = [{"type": "function", "function": {"name": "f"}}]
    error = rejected({"messages": USER, **body})
    assert (error.status, error.param) == (400, param)


# ---- what a text-only Llama cannot do (422) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "word"),
    [
        ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, "images"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "audio"),
        ({"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}}, "audio"),
    ],
)
def test_non_text_parts_are_422(part: dict[str, Any], word: str) -> None:
    content = [{"type": "text", "text": "What is this?"}, part]
    error = rejected({"messages": [{"role": "user", "content": content}]})
    assert (error.status, error.code, error.param) == (422, "parameter_not_supported", "messages[0].content[1]")
    assert f"cannot read {word}" in error.message


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}],
)
def test_json_response_formats_constrain_decoding(response_format: dict[str, Any]) -> None:
    parsed = parse_chat({"messages": USER, "response_format": response_format}, "error")
    assert parsed.response_format == {**response_format, **(parsed.response_format or {})}
    params = params_of({"messages": USER, "response_format": response_format}, "error")
    assert params.grammar is not None and params.grammar_param == "response_format"


def test_a_json_schema_keyword_the_grammar_cannot_enforce_is_422() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "array", "uniqueItems": True}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    error = rejected({"messages": USER, "response_format": fmt})
    assert (error.status, error.code) == (422, "parameter_not_supported")
    assert error.param == "response_format.json_schema.schema"
    assert "'uniqueItems'" in error.message and error.body()["detail"]["input"] == "uniqueItems"


def test_numeric_bounds_and_one_of_are_taken() -> None:
    """Pydantic writes `minimum`/`maximum` for Field(ge=, le=) and `oneOf` for discriminated unions: both were 422."""
    cat = {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer", "maximum": 9}},
           "required": ["kind"]}  # fmt: skip
    dog = {"type": "object", "properties": {"kind": {"const": "dog"}, "age": {"type": "number", "minimum": 0}},
           "required": ["kind"]}  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"oneOf": [cat, dog]}}}
    assert params_of({"messages": USER, "response_format": fmt}, "error").grammar


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum (5) is greater than maximum (1)"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}, "/$defs/A"),
        ({"type": "string", "pattern": "[a-"}, "regex parse error"),
        (nested(300), "more than 64 levels deep"),
    ],
)
def test_a_wrong_json_schema_is_400_saying_what_is_wrong(schema: dict[str, Any], words: str) -> None:
    """A schema nested 300 levels deep was a 500 (issue 22); the others were 422s naming a keyword that is fine."""
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    error = rejected({"messages": USER, "response_format": fmt})
    assert (error.status, error.param) == (400, "response_format.json_schema.schema") and words in error.message


def test_text_response_format_is_fine() -> None:
    parse_chat({"messages": USER, "response_format": {"type": "text"}}, "error")
