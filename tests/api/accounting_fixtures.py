"""An in-process app over the fake service with chosen limits, a fake clock and a metering store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.testclient import TestClient

from llamafoundry.api.app import create_app
from llamafoundry.api.limits import Accounting, LimitsSource
from llamafoundry.api.metrics import Metrics
from llamafoundry.config import EngineSettings, ServeSettings
from llamafoundry.platform.metering import Meter
from llamafoundry.platform.ratelimit import MemoryRateLimiter, RateLimits
from llamafoundry.platform.store import Store
from tests.api.conftest import API_KEY, MODEL_NAME
from tests.api.fakes import FakeChatService

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class LimitedApp:
    client: TestClient
    service: FakeChatService
    accounting: Accounting
    clock: FakeClock
    store: Store

    def chat(self, **body: object) -> object:
        payload = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100, **body}
        return self.client.post("/chat/completions", json=payload)


def limited_app(
    tmp_path: Path, limits: RateLimits | None, service: FakeChatService | None = None
) -> Iterator[LimitedApp]:
    service = service or FakeChatService(model_name=MODEL_NAME)
    clock = FakeClock()
    store = Store.open(tmp_path)
    accounting = Accounting(
        limiter=MemoryRateLimiter(clock),
        limits=LimitsSource({MODEL_NAME: limits}),
        metrics=Metrics(),
        meter=Meter(store.engine),
        default_deployment=MODEL_NAME,
    )
    settings = ServeSettings(
        engine=EngineSettings(model_path=Path("unused.gguf")), model_name=MODEL_NAME, api_key=API_KEY
    )
    app = create_app(service, settings, accounting)  # type: ignore[arg-type]
    with TestClient(app, headers={"api-key": API_KEY}) as client:
        yield LimitedApp(client, service, accounting, clock, store)
    store.close()
