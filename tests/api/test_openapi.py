"""`/openapi.json` and `/docs`: a valid OpenAPI document of every API route (inference and management), served
without a key; Swagger UI loaded from the server itself; request bodies drawn from the document's own schemas are
accepted or refused with the Azure envelope by a real server, never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.api.management import management_router
from llamafoundry.config import EngineSettings, ServeSettings
from llamafoundry.platform.gateway import Gateway, Target, single_key_policy
from llamafoundry.platform.store import Store
from tests.api.conftest import API_KEY, MODEL_NAME, Platform, Server
from tests.api.fakes import FakeChatService
from tests.api.portal.conftest import CHROMIUM, CHROMIUM_FLAGS, require_browser
from tests.api.test_fuzz import assert_error_answer

# What the server answers outside the API, on purpose not in the document.
NOT_API = ("/health", "/metrics", "/openapi.json", "/docs", "/portal")


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app with the management API (over a store in a temporary folder) and the server's own model."""
    home = tmp_path_factory.mktemp("openapi")
    store = Store.open(home)
    settings_ = ServeSettings(engine=EngineSettings(model_path=Path("x.gguf")), model_name=MODEL_NAME, api_key=API_KEY)
    default = Target(FakeChatService(model_name=MODEL_NAME), single_key_policy(API_KEY), default_name=MODEL_NAME)
    gateway = Gateway(default, store, lambda d: FakeChatService(model_name=d.model))
    app = create_app(default.service, settings_, gateway=gateway,  # type: ignore[arg-type]
                     management=management_router(store, home, gateway))  # fmt: skip
    with TestClient(app) as client:
        yield client
    store.close()


def test_every_api_route_of_the_app_is_in_the_document(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    served = set()
    for route in iter_route_contexts(app_client.app.routes):  # type: ignore[attr-defined]
        if isinstance(route.original_route, APIRoute) and not route.path_format.startswith(NOT_API):
            served |= {(route.path_format, method.lower()) for method in route.methods}
    documented = {(path, method) for path, operations in spec["paths"].items() for method in operations}
    assert served - documented == set()
    assert {"/chat/completions", "/deployments/{deployment}/chat/completions", "/v1/responses", "/v1/completions",
            "/openai/deployments/{deployment}/chat/completions", "/openai/v1/chat/completions", "/info",
            "/management/deployments", "/management/projects"} <= {path for path, _ in served}  # fmt: skip
    assert not [path for path in spec["paths"] if path.startswith(NOT_API)]


def test_the_document_is_valid_openapi_and_describes_bodies_answers_and_keys(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    validate(spec)
    assert spec["components"]["securitySchemes"]["api-key"] == {"type": "apiKey", "in": "header", "name": "api-key"}
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = spec["paths"]
    azure = paths["/deployments/{deployment}/chat/completions"]["post"]
    assert _body_ref(azure) == "ChatCompletionsOptions"
    assert set(azure["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert azure["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    assert _body_ref(paths["/v1/chat/completions"]["post"]) == "OpenAIChatCompletionsOptions"
    assert _body_ref(paths["/openai/v1/responses"]["post"]) == "ResponsesOptions"
    assert _body_ref(paths["/v1/completions"]["post"]) == "CompletionsOptions"
    version = {p["name"]: p for p in paths["/openai/deployments/{deployment}/chat/completions"]["post"]["parameters"]}
    assert version["api-version"]["required"] is True and version["deployment"]["in"] == "path"
    create = paths["/management/deployments"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["required"] == ["name", "model"] and "instances" in create["properties"]
    # the request schemas are the pydantic models the server validates with, fields and bounds included
    messages = spec["components"]["schemas"]["ChatCompletionsOptions"]["properties"]["messages"]
    assert messages["minItems"] == 1 and messages["items"]["discriminator"]["propertyName"] == "role"


def _body_ref(operation: dict[str, Any]) -> str:
    return str(operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_open_without_a_key_and_load_nothing_from_another_host(platform: Platform) -> None:
    spec = httpx.get(f"{platform.url}/openapi.json", timeout=30)
    assert spec.status_code == 200
    validate(spec.json())  # the real server's, with /management/usage and everything `serve` adds
    page = httpx.get(f"{platform.url}/docs", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://|//[a-z]", page.text, re.IGNORECASE), "no URL of another host"
    parser = _Urls()
    parser.feed(page.text)
    assert len(parser.urls) >= 3  # the stylesheet, the icon, Swagger UI's script
    for url in parser.urls:
        asset = httpx.get(platform.url + url, timeout=30)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert "'/openapi.json'" in page.text


# ---- requests drawn from the document, against a real server ----------------------------------------------------

FUZZED = ["/chat/completions", "/deployments/{deployment}/chat/completions", "/v1/chat/completions",
          "/openai/deployments/{deployment}/chat/completions", "/v1/completions", "/v1/responses"]  # fmt: skip
MAX_TOKENS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@pytest.mark.slow
def test_requests_drawn_from_the_document_are_answered_or_refused_with_the_envelope(server: Server) -> None:
    """schemathesis draws whole requests (body, api-version, headers) from the real server's own document, valid
    and invalid ones; each is answered (200) or refused with a 4xx and the envelope: never a 500."""
    spec = schemathesis.openapi.from_dict(httpx.get(f"{server.url}/openapi.json", timeout=30).json())
    drawn = st.one_of([spec[path]["POST"].as_strategy() for path in FUZZED])
    seen: dict[int, int] = {}

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=drawn)  # fmt: skip
    def check(case: Any) -> None:
        if "deployment" in case.path_parameters:
            case.path_parameters["deployment"] = server.name  # the served one: an unknown name is a plain 404
        body = case.body
        if isinstance(body, dict):  # a valid count, kept small: the property is accepting or refusing
            body.update({key: 2 for key in MAX_TOKENS if isinstance(body.get(key), int) and body[key] > 2})
        headers = {**(case.headers or {}), "api-key": server.key}
        headers.pop("Authorization", None)  # the key is what is tested here; 401s are the fuzz test's
        response = case.call(base_url=server.url, headers=headers, timeout=60)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        if response.status_code != 200:
            content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: a list per header
            assert_error_answer(response.status_code, content_type, response.content, (case.path, case.query, body))

    check()
    assert seen.get(200, 0) > 0, f"no drawn request was accepted: {seen}"


def test_swagger_ui_renders_the_document_in_a_browser_with_no_other_host(platform: Platform) -> None:
    """Headless Chromium opens /docs with every request to another host refused and recorded: Swagger UI still
    renders every operation, and it asked no other host for anything."""
    sync_playwright = require_browser()
    elsewhere: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(platform.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(f"{platform.url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert "Unable to render" not in page.content()
        finally:
            browser.close()
    documented = httpx.get(f"{platform.url}/openapi.json", timeout=30).json()["paths"]
    assert len(paths) == sum(len(operations) for operations in documented.values())
    assert {"/v1/chat/completions", "/management/deployments"} <= {p.replace("\u200b", "") for p in paths}
    assert elsewhere == []
