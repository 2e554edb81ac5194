"""API test fixtures: the app over a scripted fake service (unit tests), and real `llamafoundry serve`
processes on loopback serving the tiny random-weight GGUF (end-to-end tests)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.config import EngineSettings, ServeSettings
from tests.api.fakes import FakeChatService
from tests.api.servers import API_KEY, MODEL_NAME, Server, start_server, stop_server  # noqa: F401 (for the tests)

# ---- in-process app over a fake service ------------------------------------------------------------------


@pytest.fixture
def fake_service() -> FakeChatService:
    return FakeChatService(model_name=MODEL_NAME)


@pytest.fixture
def client(fake_service: FakeChatService) -> Iterator[TestClient]:
    """A TestClient (lifespan run) with the API key sent on every request."""
    settings = ServeSettings(
        engine=EngineSettings(model_path=Path("unused.gguf")), model_name=MODEL_NAME, api_key=API_KEY
    )
    with TestClient(create_app(fake_service, settings), headers={"api-key": API_KEY}) as test_client:
        yield test_client


# ---- real server processes -------------------------------------------------------------------------------


def module_server(*extra_args: str) -> Any:
    """A module-scoped fixture: a real server started with `extra_args` for the tests of one file."""

    @pytest.fixture(scope="module")
    def fixture(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        running = start_server(tiny_model_path, tmp_path_factory.mktemp("server"), *extra_args)
        yield running
        stop_server(running)

    return fixture


@pytest.fixture(scope="session")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the session: 4 slots, 1024-token context."""
    running = start_server(tiny_model_path, tmp_path_factory.mktemp("server"), "--ctx-size", "1024", "--parallel", "4")
    yield running
    stop_server(running)


@dataclass
class Platform:
    """A server with its own model and a serverless deployment `chat` (one local replica; content safety on, as
    serverless deployments have it), metered into its data directory."""

    url: str
    home: Path
    deployment_key: str
    admin_key: str


@pytest.fixture(scope="session")
def platform(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    from tests.api.deployment_fixtures import cli_json, start_gateway, wait_ready

    home = tmp_path_factory.mktemp("clients-platform")
    deployment = cli_json(home, "deploy", "create", "chat", "--model", "Meta-Llama-3.1-8B-Instruct",
                          "--weights", str(tiny_model_path))  # fmt: skip
    admin_key = cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]
    gateway = start_gateway(home, tiny_model_path)
    wait_ready(f"{gateway.url}/deployments/chat/chat/completions", deployment["primary_key"])
    yield Platform(gateway.url, home, deployment["primary_key"], admin_key)
    gateway.stop()


# ---- parity targets: bare, local deployment, upstream deployments (tests/api/targets.py) -------------------------

from tests.api.targets import (  # noqa: E402,F401,I001  (the fixtures, for every module here)
    bare_target,
    llama_server_target,
    llama_server_upstream,
    local_target,
    one_slot_bare_server,
    one_slot_bare_target,
    one_slot_local_target,
    one_slot_target,
    one_slot_upstream_server,
    one_slot_upstream_target,
    parity_gateway,
    target,
    upstream_server,
    upstream_target,
)
from tests.api.targets import mark_known_gaps  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_known_gaps(items)
