"""`/openapi.json` and `/docs`: the API's description, generated from the app's routes, and Swagger UI to read it.

Handlers read their bodies by hand (`api.body`, `protocol.chat`) to keep Azure's error envelope and the
`extra-parameters` rules, so FastAPI sees no body parameters. Each operation is completed here instead: request
bodies are the JSON schemas of the pydantic models the server validates with (`protocol.schemas`,
`protocol.responses`) or of the field tables the management handlers check (`api.management*`); answers are the
shapes in `api.openapi_models`. Paths come from `app.routes`, so a new route is in the spec without a line here
(with a generic body until one is described).

Both pages are open, as vLLM's and llama-server's are: they hold no secrets (no keys, no deployment names, no
prompts), and a client generator or a user without a key yet needs them. Swagger UI's files are served by the
server itself (from the fastapi-offline package): servers run offline, so nothing is loaded from a CDN.
"""

from __future__ import annotations

import re
import warnings
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from fastapi.utils import deep_dict_update
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from llamafoundry.api import management, management_safety
from llamafoundry.api.inference import API_VERSIONS
from llamafoundry.api.openai_routes import V1_VERSIONS
from llamafoundry.api.openapi_models import ANSWERS
from llamafoundry.api.routing import DEPLOYMENT_HEADER
from llamafoundry.protocol import completions, responses
from llamafoundry.protocol.schemas import OPENAI_ROUTE_PARAMETERS, ChatCompletionsOptions, LlamaExtras

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
REQUEST_MODELS: list[type[BaseModel]] = [
    ChatCompletionsOptions, LlamaExtras, responses.MessageItem, responses.FunctionCallItem,
    responses.FunctionCallOutputItem,
]  # fmt: skip
SECURITY_SCHEMES = {
    "api-key": {"type": "apiKey", "in": "header", "name": "api-key"},
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "The key as a Bearer token (management: the admin key or a project key)."},
}
DESCRIPTION = (
    "The Azure AI Model Inference API (`/chat/completions`, `/info`, also under `/models` and "
    "`/deployments/{deployment}`), the OpenAI-compatible routes (`/v1`, Azure AI Foundry's `/openai/v1`, Azure "
    "OpenAI's `/openai/deployments/{deployment}`) and the management API (`/management`, the admin key or a "
    "project key). Send the key as `api-key: <key>` or `Authorization: Bearer <key>`. Errors are Azure's envelope "
    '`{"error": {"code", "message", "param", "status"}}`; a missing or wrong key is a 401 `{"statusCode", "message"}`.'
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def install_docs(app: FastAPI, version: str) -> None:
    """Serve `/openapi.json` (built once, on first request) and `/docs` (Swagger UI, offline) on `app`."""
    cache: dict[str, Any] = {}

    def document() -> dict[str, Any]:
        if "spec" not in cache:
            cache["spec"] = openapi_document(app, version)
        return cache["spec"]

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document())

    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return _swagger_page(root)

    app.openapi = document  # type: ignore[method-assign]  # FastAPI's documented way to own the schema
    app.add_api_route(OPENAPI_PATH, openapi_json, methods=["GET"], include_in_schema=False)
    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")


def _swagger_page(root: str) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_PATH}",
        title="llamafoundry API",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        # validatorUrl: Swagger UI would fetch a badge from validator.swagger.io; nothing leaves the server's host
        swagger_ui_parameters={"validatorUrl": None},  # and no persistAuthorization: keys stay out of localStorage
    )


def openapi_document(app: FastAPI, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `app`'s routes (those with `include_in_schema`)."""
    with warnings.catch_warnings():  # FastAPI gives a GET+POST route one id for both: replaced just below
        warnings.filterwarnings("ignore", message="Duplicate Operation ID")
        spec = get_openapi(title="llamafoundry", version=version, description=DESCRIPTION, routes=app.routes)
    names = {(path, method.lower()): name for path, methods, name in schema_routes(app) for method in methods}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            extra = operation_extra(path, names.get((path, method), ""), {method.upper()})
            answers = extra.pop("responses")
            deep_dict_update(operation, extra)
            operation["responses"] = answers  # instead of FastAPI's "200: Successful Response", an empty schema
            # unique (FastAPI's are not for a GET+POST route), and what client generators name methods after
            operation["operationId"] = re.sub(r"\W+", "_", f"{method} {path}").strip("_")
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {}).update(model_schemas())
    components["securitySchemes"] = SECURITY_SCHEMES
    spec["security"] = [{"api-key": []}, {"bearer": []}]
    return spec


def schema_routes(app: FastAPI) -> list[tuple[str, set[str], str]]:
    """(path, methods, name) of every API route of `app` that belongs in the spec, included routers' too."""
    found = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            found.append((route.path_format or "", set(route.methods or ()), route.name or ""))
    return found


def model_schemas() -> dict[str, Any]:
    """The JSON schemas of the request models (as validated) and the answers, as components."""
    models = [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in ANSWERS]
    _, schema = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas: dict[str, Any] = schema["$defs"]
    chat = schemas["ChatCompletionsOptions"]["properties"]
    extras = schemas["LlamaExtras"]["properties"]
    schemas["OpenAIChatCompletionsOptions"] = {
        "description": "A chat on the OpenAI routes: the Azure fields, OpenAI's and vLLM's extensions as ordinary "
        "fields, max_completion_tokens for max_tokens; " + ", ".join(sorted(OPENAI_ROUTE_PARAMETERS - {
            "max_completion_tokens"})) + " are accepted and ignored.",  # fmt: skip
        "allOf": [_ref("ChatCompletionsOptions"), _ref("LlamaExtras")],
        "properties": {"max_completion_tokens": chat["max_tokens"]},
    }
    schemas["CompletionsOptions"] = {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                      "minItems": 1, "maxItems": 1}]},  # fmt: skip
            "echo": {"type": "boolean"},
            "suffix": {"type": "string", "description": "Not supported (422) unless empty."},
            **{name: chat[name] for name in completions.SAMPLING_FIELDS},
            **extras,
        },
    }
    schemas["ResponsesOptions"] = _responses_schema(chat, extras)
    return schemas


def _responses_schema(chat: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    items = {"oneOf": [_ref("MessageItem"), _ref("FunctionCallItem"), _ref("FunctionCallOutputItem")]}
    return {
        "type": "object",
        "required": ["input"],
        "description": "OpenAI's Responses API, stateless: previous_response_id, conversation and prompt are a 400.",
        "properties": {
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": items, "minItems": 1}]},
            "instructions": {"type": "string", "description": "The system message."},
            "tools": {"type": "array", "items": {"type": "object"}, "description": "Flat function tools."},
            "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            "text": {"type": "object", "description": "{format: {type: text | json_object | json_schema, ...}}"},
            "max_output_tokens": chat["max_tokens"],
            **{name: chat[name] for name in ("temperature", "top_p", "stream")},
            "top_logprobs": extras["top_logprobs"],
            **{name: extras[name] for name in responses.VLLM_FIELDS},
        },
    }


def operation_extra(path: str, name: str, methods: set[str]) -> dict[str, Any]:
    """What FastAPI cannot see of an operation (handlers take only the request): its tag, parameters, body and
    answers."""
    in_path = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
               for name in re.findall(r"{(\w+)}", path)]  # fmt: skip
    if path.startswith("/management"):
        return {**_management(name, methods), "parameters": in_path, "summary": name}
    is_openai = path.startswith(("/v1/", "/openai/"))
    extra: dict[str, Any] = {"tags": [_tag(path)], "parameters": in_path + _parameters(path, is_openai, methods)}
    summary = next((text for suffix, text in SUMMARIES.items() if path.endswith(suffix)), None)
    if summary is not None:
        extra["summary"] = summary
    body = _request_body(path, is_openai) if "POST" in methods else None
    if body is not None:
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    extra["responses"] = {**_answers(path), **ERRORS}
    return extra


SUMMARIES = {"/chat/completions": "Chat completions", "/completions": "Text completions", "/responses": "Responses",
             "/info": "The served model", "/models": "List models", "/models/{model_id}": "Get a model",
             "embeddings": "Embeddings (not served)"}  # fmt: skip


def _tag(path: str) -> str:
    if path.startswith(("/v1/", "/openai/v1/")):
        return "OpenAI"
    return "Azure OpenAI" if path.startswith("/openai/") else "Azure AI Model Inference"


def _parameters(path: str, is_openai: bool, methods: set[str]) -> list[dict[str, Any]]:
    required = path.startswith("/openai/") and not path.startswith("/openai/v1/")
    versions: dict[str, Any] = {"type": "string"}
    if not is_openai:
        versions["enum"] = list(API_VERSIONS)
    elif not required:
        versions["examples"] = list(V1_VERSIONS)
    else:
        versions["examples"] = ["2024-10-21", "2025-04-01-preview"]
    parameters = [{"name": "api-version", "in": "query", "required": required, "schema": versions}]
    if "POST" in methods and not is_openai:
        parameters.append({"name": "extra-parameters", "in": "header", "required": False,
                           "description": "What to do with fields beyond the Azure spec (LlamaExtras and unknown "
                           "ones): error (the default, a 400), drop, or pass-through (honour them).",
                           "schema": {"type": "string", "enum": ["error", "drop", "pass-through"]}})  # fmt: skip
    if "{deployment}" not in path and not path.endswith(("/models", "/models/{model_id}")):
        parameters.append({"name": DEPLOYMENT_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                           "description": "The deployment to use (else the body's model, else the server's own)."})
    return parameters


def _request_body(path: str, is_openai: bool) -> str | None:
    if path.endswith("/chat/completions"):
        return "OpenAIChatCompletionsOptions" if is_openai else "ChatCompletionsOptions"
    if path.endswith("/completions"):
        return "CompletionsOptions"
    if path.endswith("/responses"):
        return "ResponsesOptions"
    return None


def _answers(path: str) -> dict[str, Any]:
    streamed = {"/chat/completions": ("ChatCompletion", "ChatCompletionChunk"),
                "/completions": ("TextCompletion", "TextCompletion"),
                "/responses": ("ResponseObject", "ResponseObject")}  # fmt: skip
    for suffix, (answer, event) in streamed.items():
        if path.endswith(suffix):
            return {"200": {"description": "The answer; with stream: true, server-sent events (data: <json>).",
                            "content": {"application/json": {"schema": _ref(answer)},
                                        "text/event-stream": {"schema": {"type": "string"},
                                                              "x-event-schema": _ref(event)}}}}  # fmt: skip
    if path.endswith("/info"):
        return _ok("The served model.", "ModelInfo")
    if path.endswith("/models"):
        return _ok("The models the key opens.", "ModelList")
    if path.endswith("/models/{model_id}"):
        return _ok("A model the key opens.", "Model")
    return {"404": {"description": "Always: a chat deployment serves no embeddings, as on Azure.",
                    "content": {"application/json": {"schema": _ref("ErrorEnvelope")}}}}


def _ok(description: str, model: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": _ref(model)}}}}


ERRORS = {
    "401": {"description": "No key, or a wrong one.",
            "content": {"application/json": {"schema": _ref("Unauthorized")}}},
    "4XX": {"description": "Azure's error envelope: what was wrong and what to do (429 carries Retry-After).",
            "content": {"application/json": {"schema": _ref("ErrorEnvelope")}}},
    "5XX": {"description": "Azure's error envelope (503 while the model loads, with Retry-After).",
            "content": {"application/json": {"schema": _ref("ErrorEnvelope")}}},
}  # fmt: skip


def _management(name: str, methods: set[str]) -> dict[str, Any]:
    listing = "GET" in methods and name.endswith(".list")
    answer = "ManagementList" if listing else "ManagementObject"
    extra: dict[str, Any] = {"tags": ["Management"], "responses": {
        "200": {"description": "Done (201 for a creation).", "content": {"application/json": {"schema": _ref(answer)}}},
        **ERRORS,
    }}  # fmt: skip
    if methods & {"POST", "PUT", "PATCH"}:
        schema = MANAGEMENT_BODIES.get(name, {"type": "object"})
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return extra


def fields_schema(fields: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object schema of a handler's field table ({name: type or (types)}): only those fields are accepted."""
    properties = {name: _json_type(kind) for name, kind in fields.items()}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**schema, "required": list(required)} if required else schema


_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", float: "number", list: "array", dict: "object"}


def _json_type(kind: Any) -> dict[str, Any]:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    types = [_JSON_TYPES[k] for k in kinds]
    return {"type": types[0] if len(types) == 1 else types}


MANAGEMENT_BODIES: dict[str, dict[str, Any]] = {
    "deployment.create": fields_schema(management.CREATE_FIELDS, required=("name", "model")),
    "deployment.update": fields_schema({**management.SETTING_FIELDS, "instances": int}),
    "deployment.key.regenerate": {"type": "object", "required": ["keyType"], "properties": {
        "keyType": {"type": "string", "enum": ["primary", "secondary"]}, "keyValue": {"type": "string"}}},
    "deployment.blocklist.put": fields_schema({"description": str, "items": list}, required=("items",)),
    "deployment.content_safety.update": fields_schema(management_safety.FIELDS),
}  # fmt: skip
