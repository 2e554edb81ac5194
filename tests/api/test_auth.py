"""Which headers carry the key (contract §2), checked through the real app: the one key check production uses
(`Target.authorize` behind the routes' dependency), so these fail when production auth breaks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.config import EngineSettings, ServeSettings
from tests.api.fakes import FakeChatService

KEY = "0123456789abcdef0123456789abcdef"
BODY = {"messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def bare_client() -> Iterator[TestClient]:
    """The app with no default headers: each test sends exactly the headers it names."""
    settings = ServeSettings(engine=EngineSettings(model_path=Path("unused.gguf")), model_name="m", api_key=KEY)
    with TestClient(create_app(FakeChatService(model_name="m"), settings)) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {"api-key": KEY},
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},
        {"authorization": KEY},
        {"api-key": KEY, "authorization": f"Bearer {KEY}"},  # what the Python and JS SDKs send
        {"api-key": "wrong", "authorization": f"Bearer {KEY}"},
    ],
)
@pytest.mark.parametrize("path", ["/chat/completions", "/v1/chat/completions", "/info"])
def test_accepted(bare_client: TestClient, headers: dict[str, str], path: str) -> None:
    if path == "/info":
        assert bare_client.get(path, headers=headers).status_code == 200
    else:
        assert bare_client.post(path, headers=headers, json=BODY).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"api-key": ""},
        {"api-key": "wrong"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {KEY}"},
        {"api-key": KEY[:-1]},
        {"api-key": KEY + "x"},
    ],
)
def test_refused_with_the_maas_401(bare_client: TestClient, headers: dict[str, str]) -> None:
    answer = bare_client.post("/chat/completions", headers=headers, json=BODY)
    assert answer.status_code == 401
    assert answer.json()["message"].startswith("Auth token validation failed")


def test_non_ascii_key_bytes_are_refused_without_error(bare_client: TestClient) -> None:
    answer = bare_client.post("/chat/completions", headers={"api-key": "ключ".encode()}, json=BODY)  # raw bytes
    assert answer.status_code == 401
