"""The portal in a real browser (headless Chromium through Playwright) on a real `llamafoundry serve`: the admin signs
in, finds a model, deploys it into a project with a GGUF file and sizes, copies its key, scales it (Changing, then
two replicas), chats in the playground and sees the text stream in, sees the request in the usage chart, regenerates
the key (the old one is refused), and signs out (and is refused); then a project key signs in, sees its project only,
read-only, and chats with its own key. Every page is screenshotted and checked for controls without an accessible
name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.deployment_fixtures import PICKUP_S, chat, wait_for
from tests.api.portal.conftest import UNNAMED_CONTROLS_JS, PortalServer

pytestmark = pytest.mark.slow

MODEL = "Meta-Llama-3.1-8B-Instruct"
DEPLOYMENT = "portal-chat"
PROJECT = "team-a"
ELSEWHERE = "elsewhere"  # a deployment of the project `default`, which the project key must not see
READY_TIMEOUT_S = 120
CHARTED_REQUESTS_JS = """(name) => {
  const chart = Chart.getChart(document.getElementById('chart-requests'));
  const set = chart.data.datasets.find(d => d.label === name);
  return set ? set.data.reduce((a, b) => a + b, 0) : 0;
}"""


def expect_named_controls(page: Any) -> None:
    assert page.evaluate(UNNAMED_CONTROLS_JS) == [], f"controls without an accessible name on {page.url}"


def nav(page: Any, name: str) -> None:
    link = page.get_by_role("navigation", name="Main").get_by_role("link", name=name)
    href = link.get_attribute("href")
    link.click()
    # The next page, loaded: the click returns before it is, and acting at once raced the navigation (the
    # playground's key was read before its script had filled it).
    page.wait_for_url(re.compile(re.escape(href) + r"(\?.*)?$"))


def sign_in(page: Any, server: PortalServer, shoot: Any, key: str | None = None) -> None:
    page.goto(f"{server.url}/portal/deployments")
    assert "/portal/sign-in" in page.url  # no session: the sign-in page, which returns here afterwards
    expect_named_controls(page)
    if key is None:
        shoot(page, "sign-in")
    page.get_by_label("API key").fill(key or server.admin_key)
    page.get_by_label("API key").press("Enter")  # the keyboard signs in
    page.wait_for_url(re.compile(r"/portal/deployments$"))


def find_and_deploy(page: Any, weights: Path, shoot: Any) -> None:
    nav(page, "Catalog")
    page.get_by_label("Deployment type").select_option("serverless")
    page.get_by_label("Search models").fill("8B instruct")
    page.wait_for_url(re.compile(r"q=8B"))  # htmx swapped in the cards that match (and pushed the URL)
    names = page.locator("#model-cards .model-card h2").all_inner_texts()
    assert MODEL in names and "Meta-Llama-3.1-8B" not in names and "Llama-Guard-3-1B" not in names
    expect_named_controls(page)
    shoot(page, "catalog")
    page.get_by_role("link", name=MODEL, exact=True).click()
    page.get_by_text("Llama 3.1 Community License").wait_for(state="visible")  # the card text (waits for it)
    shoot(page, "model")
    page.get_by_role("link", name="Deploy", exact=True).click()
    page.get_by_label("Deployment name").fill("x")  # a name the platform refuses: its sentence, on the field
    page.get_by_label("A GGUF file on the server").check()
    page.get_by_label("Weights file").fill(str(weights))
    page.get_by_role("button", name="Deploy").click()
    assert "'x' is not a valid deployment name" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Deployment name").get_attribute("aria-invalid") == "true"
    page.get_by_label("Deployment name").fill(DEPLOYMENT)
    page.get_by_label("Project").select_option(PROJECT)
    page.locator('input[name="type"][value="managed"]').check()
    page.get_by_label("Content safety", exact=True).select_option("on")
    page.get_by_label("Parallel sequences").fill("0")  # a size the platform refuses: its sentence, on the field
    page.get_by_role("button", name="Deploy").click()
    assert "parallel must be from 1 to 128" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Parallel sequences").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Project").input_value() == PROJECT  # the form keeps what was typed
    expect_named_controls(page)
    shoot(page, "deploy")
    page.get_by_label("Parallel sequences").fill("2")
    page.get_by_label("Context size").fill("512")
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_url(re.compile(f"/portal/deployments/{DEPLOYMENT}$"))
    page.locator('#deployment-status [data-state="ready"]').wait_for(timeout=READY_TIMEOUT_S * 1000)  # polled
    assert page.locator('#runs-with [data-size="ctx_size"]').inner_text() == "512"  # status.sizing
    assert page.locator('#runs-with [data-size="parallel"]').inner_text() == "2"


def copy_key(page: Any, server: PortalServer, shoot: Any) -> str:
    page.get_by_role("button", name="Copy primary key").click()
    key = page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert page.get_by_label("Primary key", exact=True).get_attribute("type") == "password"  # masked until shown
    response = chat(f"{server.url}/deployments/{DEPLOYMENT}/chat/completions", key)
    assert response.status_code == 200, response.text  # the copied key is the deployment's
    expect_named_controls(page)
    shoot(page, "deployment")
    page.get_by_role("link", name="Consume").click()
    page.get_by_role("tab", name="curl").press("Enter")
    assert f"/deployments/{DEPLOYMENT}/chat/completions" in page.locator("#sample-curl").inner_text()
    page.get_by_role("tab", name="curl").press("ArrowRight")  # the keyboard moves between the samples
    assert page.get_by_role("tab", name="OpenAI SDK").get_attribute("aria-selected") == "true"
    expect_named_controls(page)
    shoot(page, "consume")
    return key


def change_settings(page: Any, server: PortalServer, shoot: Any) -> None:
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Tokens per minute").fill("-5")
    page.get_by_role("button", name="Save rate limits").click()
    assert "give a number of tokens or requests per minute" in page.get_by_role("alert").inner_text()  # the CLI's
    page.get_by_label("Tokens per minute").fill("")
    page.get_by_label("Requests per minute").fill("600")
    page.get_by_role("button", name="Save rate limits").click()
    assert "not limited tokens and 600 requests per minute" in page.locator("main").inner_text()  # managed
    page.get_by_label("Streaming mode").select_option("asynchronous")
    page.get_by_role("button", name="Save content safety").click()
    page.get_by_label("List name").fill("brands")
    page.get_by_label("Items").fill("Acme Corp\nre:sku-\\d{4}")
    page.get_by_role("button", name="Save blocklist").click()
    assert "Blocklist brands saved" in page.get_by_role("status").first.inner_text()
    policy = httpx.get(f"{server.url}/management/deployments/{DEPLOYMENT}/content-safety",
                       headers={"api-key": server.admin_key}).json()["policy"]  # fmt: skip
    assert policy["streaming"] == "asynchronous" and policy["enabled"] is True
    assert policy["blocklists"][0]["items"][1] == {"pattern": "sku-\\d{4}", "is_regex": True}
    resize(page)
    expect_named_controls(page)
    shoot(page, "settings")


def resize(page: Any) -> None:
    """A size that cannot work is refused with the platform's sentence; two instances start while one answers."""
    page.get_by_label("Context size").fill("99999")
    page.get_by_role("button", name="Save sizes").click()
    assert "ctx_size 99999 is more than the 8192 tokens" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Context size").input_value() == "512"  # nothing was changed
    page.get_by_label("Instances", exact=True).fill("2")
    page.get_by_role("button", name="Save sizes").click()
    assert "Sizes saved" in page.get_by_role("status").first.inner_text()
    assert page.locator("#deployment-status [data-state]").get_attribute("data-state") == "changing"
    page.locator('#deployment-status [data-state="ready"]').wait_for(timeout=READY_TIMEOUT_S * 1000)  # polled
    assert page.locator('#runs-with [data-size="replicas"]').inner_text() == "2"


def chat_in_playground(page: Any, key: str, shoot: Any) -> None:
    nav(page, "Playground")
    page.get_by_label("Deployment", exact=True).select_option(DEPLOYMENT)
    assert page.get_by_label("API key").input_value() == key  # this session was shown the key
    send_message(page)
    assert page.evaluate("window.textUpdates") >= 3, "the answer arrived in one piece, not streamed"
    assert int(page.locator('[data-stat="completion_tokens"]').inner_text()) > 0
    assert page.locator('[data-stat="ttft"]').inner_text().endswith("ms")
    assert "hate: safe" in page.locator("#pg-filter").inner_text()  # content safety on
    page.get_by_text("View code").click()
    assert f"/deployments/{DEPLOYMENT}/chat/completions" in page.locator("#pg-code-curl").inner_text()
    expect_named_controls(page)
    shoot(page, "playground")


def send_message(page: Any) -> None:
    page.get_by_label("Max tokens").fill("40")
    page.get_by_label("Temperature").fill("1")
    page.evaluate("""() => { window.textUpdates = 0; new MutationObserver(() => window.textUpdates++)
        .observe(document.getElementById('chat-log'), {childList: true, subtree: true, characterData: true}); }""")
    page.get_by_label("Message", exact=True).fill("Tell me a story.")
    page.get_by_role("button", name="Send").click()
    page.locator('[data-stat="finish_reason"]').filter(has_text=re.compile("length|stop")).wait_for()
    answer = page.locator(".msg-assistant .text").last.inner_text()
    assert answer.strip(), "no text streamed"


def see_usage(page: Any, shoot: Any) -> None:
    nav(page, "Usage")
    page.locator("#health-table").wait_for()  # the health fragment loaded
    requests = page.evaluate(CHARTED_REQUESTS_JS, DEPLOYMENT)
    assert requests >= 2  # the copied key's request and the playground's
    assert DEPLOYMENT in page.locator("#usage-table").inner_text()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert DEPLOYMENT in Path(download.value.path()).read_text()
    expect_named_controls(page)
    shoot(page, "usage")


def regenerate_key(page: Any, server: PortalServer, old_key: str) -> None:
    page.goto(f"{server.url}/portal/deployments/{DEPLOYMENT}")
    page.get_by_role("button", name="Regenerate primary key").focus()
    page.keyboard.press("Enter")  # the dialog opens from the keyboard
    dialog = page.get_by_role("dialog", name="Regenerate the primary key?")
    dialog.get_by_role("button", name="Regenerate").click()
    assert "the old one stopped working" in page.get_by_role("status").first.inner_text()
    new_key = page.get_by_label("Primary key", exact=True).input_value()
    assert new_key != old_key
    url = f"{server.url}/deployments/{DEPLOYMENT}/chat/completions"
    wait_for(lambda: chat(url, old_key).status_code == 401, PICKUP_S * 5, "the old key being refused")
    assert chat(url, new_key).status_code == 200


def sign_out(page: Any, server: PortalServer) -> None:
    cookie = next(c for c in page.context.cookies() if c["name"] == "llamafoundry_portal")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile("/portal/sign-in"))
    page.goto(f"{server.url}/portal/deployments")
    assert "/portal/sign-in" in page.url
    replayed = httpx.get(f"{server.url}/portal/deployments", cookies={cookie["name"]: cookie["value"]})
    assert replayed.status_code == 303 and "/portal/sign-in" in replayed.headers["location"]  # the session ended


def as_project_key(page: Any, server: PortalServer, project_key: str, shoot: Any) -> None:
    """A project key's session: its project's deployment only, read-only, and the playground chats with its key."""
    sign_in(page, server, shoot, project_key)
    assert "Signed in as project team-a" in page.locator("header").inner_text()
    table = page.locator("table.data").inner_text()
    assert DEPLOYMENT in table and ELSEWHERE not in table
    assert page.get_by_role("link", name="Deploy a model").count() == 0
    expect_named_controls(page)
    shoot(page, "project-deployments")
    page.get_by_role("link", name=DEPLOYMENT, exact=True).click()
    assert page.locator("#read-only-note").is_visible()
    assert page.get_by_role("button", name="Regenerate primary key").count() == 0
    assert page.get_by_role("button", name="Delete deployment").count() == 0
    page.get_by_role("link", name="Settings").click()
    assert page.get_by_role("button", name="Save sizes").is_disabled()
    assert page.get_by_label("Instances", exact=True).is_disabled()
    expect_named_controls(page)
    nav(page, "Playground")
    assert page.get_by_label("Deployment", exact=True).input_value() == DEPLOYMENT  # the server's model is not offered
    assert page.get_by_label("API key").input_value() == project_key  # the project key opens it
    send_message(page)
    nav(page, "Usage")
    assert page.get_by_role("heading", name="Usage of project team-a").is_visible()
    assert DEPLOYMENT in page.locator("#usage-table").inner_text()
    expect_named_controls(page)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile("/portal/sign-in"))


@pytest.fixture
def project_key(portal_server: PortalServer) -> str:
    """Project `team-a` and a key of it; a deployment `elsewhere` in `default` (forwarding to nothing)."""
    admin = {"api-key": portal_server.admin_key}
    url = f"{portal_server.url}/management"
    assert httpx.post(f"{url}/projects", json={"name": PROJECT}, headers=admin).status_code == 201
    other = {"name": ELSEWHERE, "model": MODEL, "upstream": "http://127.0.0.1:9/v1"}
    assert httpx.post(f"{url}/deployments", json=other, headers=admin).status_code == 201
    created = httpx.post(f"{url}/projects/{PROJECT}/keys", json={"name": "portal"}, headers=admin)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def test_a_user_deploys_chats_and_rotates_a_key(
    portal_server: PortalServer, browser_context: Any, screenshots: Any, tiny_model_path: Path, project_key: str
) -> None:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    sign_in(page, portal_server, screenshots)
    find_and_deploy(page, tiny_model_path, screenshots)
    key = copy_key(page, portal_server, screenshots)
    change_settings(page, portal_server, screenshots)
    chat_in_playground(page, key, screenshots)
    see_usage(page, screenshots)
    regenerate_key(page, portal_server, key)
    sign_out(page, portal_server)
    as_project_key(page, portal_server, project_key, screenshots)
    assert errors == []  # no script errors, no CSP violations
