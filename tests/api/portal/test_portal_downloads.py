"""The portal follows a real download: a deployment of a catalog model made with the Deploy form downloads its
weights from the fake hub (paused part-way), and its page shows the progress bar moving, cancels the download,
resumes it and turns ready, without a reload."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.deployment_fixtures import Gateway, cli_json, start_gateway, wait_for
from tests.platform.fake_hub import FakeHub, running_hub

MODEL, REPO, FILE = "Llama-3.2-1B", "bartowski/Llama-3.2-1B-GGUF", "Llama-3.2-1B-Q4_K_M.gguf"
NAME = "portal-dl"


@pytest.fixture
def hub_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_path: Path
) -> Iterator[tuple[FakeHub, Gateway, str]]:
    with running_hub() as hub:
        hub.add(REPO, FILE, tiny_model_path.read_bytes())
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        home = tmp_path / "home"
        admin_key = cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]
        gateway = start_gateway(home, tiny_model_path)
        try:
            yield hub, gateway, admin_key
        finally:
            gateway.stop()


def test_the_deployment_page_follows_cancels_and_resumes_a_download(
    hub_server: tuple[FakeHub, Gateway, str], browser_context: Any
) -> None:
    hub, gateway, admin_key = hub_server
    size = len(hub.files[f"{REPO}/{FILE}"])
    hub.hold(size // 4)
    page = browser_context.new_page()
    page.goto(f"{gateway.url}/portal/deployments")
    page.get_by_label("API key").fill(admin_key)
    page.get_by_label("API key").press("Enter")
    page.wait_for_url(re.compile(r"/portal/deployments$"))
    page.goto(f"{gateway.url}/portal/deploy?model={MODEL}")
    page.get_by_label("Deployment name").fill(NAME)
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_url(re.compile(f"/portal/deployments/{NAME}$"))  # at once: the download goes on in the server

    bar = page.get_by_role("progressbar", name="Download progress")
    page.locator('#deployment-status [data-state="downloading"]').wait_for()
    wait_for(lambda: bar.get_attribute("aria-valuenow") == "25.0", 30, "the bar at the hub's first hold")  # polled
    assert "of" in page.locator("#download-text").inner_text() and "MB" in page.locator("#download-text").inner_text()
    hub.hold(size // 2)
    wait_for(lambda: bar.get_attribute("aria-valuenow") == "50.0", 30, "the bar moving on")

    page.get_by_role("button", name="Cancel download").click()
    page.locator('#deployment-status [data-state="cancelled"]').wait_for()
    assert "bytes downloaded are kept" in page.get_by_role("status").first.inner_text()
    admin = {"api-key": admin_key}
    shown = f"{gateway.url}/management/deployments/{NAME}"
    wait_for(lambda: "stopping_on" not in httpx.get(shown, headers=admin, timeout=10).json()["status"], 30,
             "the server seeing the cancel")  # fmt: skip
    hub.release()
    page.get_by_role("button", name="Resume download").click()
    page.locator('#deployment-status [data-state="ready"]').wait_for(timeout=120_000)  # polled until ready
    ranges = hub.blob_requests()
    assert ranges[0] is None and len(ranges) == 2 and ranges[1] == f"bytes={size // 2}-"  # resumed, not restarted
