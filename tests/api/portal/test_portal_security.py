"""The portal's protections on a real server: every route needs a session, state changes need this origin and the
session's CSRF token (a forged cross-site POST is refused, in Chromium too), only the admin key and project keys
sign in (a project key sees its own project only and changes nothing), and a session ends with its key."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from llamafoundry.api.portal import portal_router
from tests.api.deployment_fixtures import cli_json
from tests.api.portal.conftest import PortalServer
from tests.serve_process import free_port

pytestmark = pytest.mark.slow

COOKIE = "llamafoundry_portal"
DEPLOYMENT = "guarded"


@pytest.fixture(scope="module")
def deployment_key(portal_server: PortalServer) -> str:
    """A deployment that forwards to nothing (no replica to start): only its key and its name matter here."""
    body = {"name": DEPLOYMENT, "model": "Meta-Llama-3.1-8B-Instruct", "upstream": "http://127.0.0.1:9/v1"}
    created = httpx.post(f"{portal_server.url}/management/deployments", json=body,
                         headers={"api-key": portal_server.admin_key})  # fmt: skip
    assert created.status_code == 201, created.text
    return str(created.json()["primary_key"])


def signed_in(server: PortalServer, key: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=server.url, follow_redirects=False)
    answer = client.post("/portal/sign-in", data={"api_key": key or server.admin_key})
    assert answer.status_code == 303, answer.text
    return client


def csrf_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def portal_routes() -> list[tuple[str, str]]:
    """(method, path) of every portal route, path parameters filled in."""
    found = []
    for route in portal_router(None).routes:
        path = re.sub(r"\{[^}]+\}", DEPLOYMENT, route.path)  # type: ignore[attr-defined]
        for method in sorted(route.methods):  # type: ignore[attr-defined]
            found.append((method, path))
    return found


def test_every_portal_route_without_a_session_redirects_to_sign_in(portal_server: PortalServer) -> None:
    routes = portal_routes()
    assert len(routes) >= 18
    checked = 0
    for method, path in routes:
        if path.startswith(("/portal/sign-in", "/portal/static/")):
            continue
        for cookies in ({}, {COOKIE: "forged-or-expired-session-id"}):
            answer = httpx.request(method, f"{portal_server.url}{path}", cookies=cookies, follow_redirects=False)
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"].startswith("/portal/sign-in"), (method, path)
            checked += 1
    assert checked >= 36
    sign_in_page = httpx.get(f"{portal_server.url}/portal/sign-in")
    assert sign_in_page.status_code == 200 and "API key" in sign_in_page.text
    assert 'aria-label="Main"' not in sign_in_page.text  # no navigation, nothing of the portal, before signing in


def test_a_deployment_key_or_the_servers_key_cannot_open_the_portal(
    portal_server: PortalServer, deployment_key: str
) -> None:
    for key in (deployment_key, "0123456789abcdef0123456789abcdef"):  # a deployment's key; `serve --api-key`
        answer = httpx.post(f"{portal_server.url}/portal/sign-in", data={"api_key": key}, follow_redirects=False)
        assert answer.status_code == 401 and COOKIE not in answer.headers.get("set-cookie", "")
        assert "This key does not open the portal" in answer.text
        as_header = httpx.get(f"{portal_server.url}/portal/deployments", headers={"api-key": key})
        assert as_header.status_code == 303  # a key in a header is no session


@pytest.fixture(scope="module")
def project_key(portal_server: PortalServer, deployment_key: str) -> str:
    """A project key of `team-a`, which holds one deployment (forwarding to nothing); `guarded` is in `default`."""
    admin = {"api-key": portal_server.admin_key}
    url = f"{portal_server.url}/management"
    assert httpx.post(f"{url}/projects", json={"name": "team-a"}, headers=admin).status_code == 201
    body = {"name": "team-chat", "model": "Meta-Llama-3.1-8B-Instruct", "upstream": "http://127.0.0.1:9/v1",
            "project": "team-a"}  # fmt: skip
    assert httpx.post(f"{url}/deployments", json=body, headers=admin).status_code == 201
    created = httpx.post(f"{url}/projects/team-a/keys", json={"name": "portal"}, headers=admin)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def test_a_project_key_sees_only_its_project_and_changes_nothing(
    portal_server: PortalServer, project_key: str
) -> None:
    client = signed_in(portal_server, project_key)
    listing = client.get("/portal/deployments")
    assert listing.status_code == 200 and "Signed in as project team-a" in listing.text
    assert "team-chat" in listing.text and DEPLOYMENT not in listing.text  # `guarded` is another project's
    assert "Deploy a model" not in listing.text
    assert client.get(f"/portal/deployments/{DEPLOYMENT}").status_code == 404  # as if it did not exist
    assert client.get(f"/portal/deployments/{DEPLOYMENT}/status").status_code == 404
    page = client.get("/portal/deployments/team-chat")
    assert page.status_code == 200 and "Read-only" in page.text
    assert "Regenerate primary key" not in page.text and "Delete deployment" not in page.text
    settings = client.get("/portal/deployments/team-chat?tab=settings").text
    assert settings.count('<fieldset class="bare" disabled>') >= 3  # every form shown disabled
    deploy = client.get("/portal/deploy")
    assert deploy.status_code == 403 and "changes need the admin key" in deploy.text
    token = csrf_token(client, "/portal/deployments/team-chat")
    for path in ("/portal/deployments/team-chat/delete", "/portal/deployments/team-chat/keys/primary/regenerate"):
        refused = client.post(path, data={"csrf_token": token})
        assert refused.status_code == 403, path
        assert "not change anything: changes need the admin key" in refused.text  # the API's sentence
    fields = {"csrf_token": token, "name": "mine", "model": "Meta-Llama-3.1-8B", "source": "upstream",
              "upstream": "http://127.0.0.1:9/v1"}  # fmt: skip
    create = client.post("/portal/deploy", data=fields)
    assert create.status_code == 403 and "changes need the admin key" in create.text
    saved = client.post("/portal/deployments/team-chat/settings/limits", data={"csrf_token": token, "rpm": "5"},
                        follow_redirects=True)  # fmt: skip
    assert "changes need the admin key" in saved.text
    names = [d["name"] for d in httpx.get(f"{portal_server.url}/management/deployments",
                                          headers={"api-key": portal_server.admin_key}).json()["data"]]  # fmt: skip
    assert "team-chat" in names and "mine" not in names and DEPLOYMENT in names
    usage = client.get("/portal/usage")
    assert usage.status_code == 200 and "Usage of project team-a" in usage.text and DEPLOYMENT not in usage.text
    health = client.get("/portal/health")
    assert health.status_code == 200 and DEPLOYMENT not in health.text
    playground = client.get("/portal/playground").text
    assert "this server&#39;s model" not in playground and "this server's model" not in playground
    other = client.get("/portal/usage.csv", params={"deployment": DEPLOYMENT})
    assert other.status_code == 200 and DEPLOYMENT not in other.text


def test_forged_cross_site_posts_are_refused(portal_server: PortalServer, deployment_key: str) -> None:
    client = signed_in(portal_server)
    token = csrf_token(client, f"/portal/deployments/{DEPLOYMENT}")
    delete = f"/portal/deployments/{DEPLOYMENT}/delete"
    for data, headers in (
        ({"csrf_token": token}, {"Origin": "http://evil.example"}),  # the token leaked, the origin is foreign
        ({}, {"Origin": portal_server.url}),  # no token
        ({"csrf_token": "guessed"}, {}),  # a wrong token
        ({"csrf_token": csrf_token(signed_in(portal_server), "/portal/usage")}, {}),  # another session's token
    ):
        answer = client.post(delete, data=data, headers=headers)
        assert answer.status_code == 403 and "Request refused" in answer.text
    assert httpx.get(f"{portal_server.url}/management/deployments/{DEPLOYMENT}",
                     headers={"api-key": portal_server.admin_key}).status_code == 200  # fmt: skip
    sign_in = httpx.post(f"{portal_server.url}/portal/sign-in", data={"api_key": portal_server.admin_key},
                         headers={"Origin": "http://evil.example"}, follow_redirects=False)  # fmt: skip
    assert sign_in.status_code == 403  # no login CSRF either
    regenerated = client.post(f"/portal/deployments/{DEPLOYMENT}/keys/secondary/regenerate",
                              data={"csrf_token": token}, headers={"Origin": portal_server.url})  # fmt: skip
    assert regenerated.status_code == 303  # the same request from this origin with the token is honoured


@pytest.fixture
def evil_site(portal_server: PortalServer) -> Iterator[str]:
    """A page on another site (localhost is not 127.0.0.1's site) that posts a form to the portal when loaded."""
    target = f"{portal_server.url}/portal/deployments/{DEPLOYMENT}/delete"
    page = (f'<html><body><form id="f" method="post" action="{target}"><input name="csrf_token" value="x"></form>'
            '<script>document.getElementById("f").submit()</script></body></html>').encode()  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_cross_site_form_in_the_browser_deletes_nothing(
    portal_server: PortalServer, deployment_key: str, browser_context: Any, evil_site: str
) -> None:
    page = browser_context.new_page()
    page.goto(f"{portal_server.url}/portal/sign-in")
    page.get_by_label("API key").fill(portal_server.admin_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile("/portal/deployments$"))
    page.goto(evil_site)
    page.wait_for_url(re.compile(r"/portal/(sign-in|deployments)"))
    page.wait_for_load_state()
    assert "Sign in" in page.content() or "Request refused" in page.content()
    assert httpx.get(f"{portal_server.url}/management/deployments/{DEPLOYMENT}",
                     headers={"api-key": portal_server.admin_key}).status_code == 200  # fmt: skip
    page.close()


def test_a_session_ends_when_its_key_is_regenerated(portal_server: PortalServer) -> None:
    client = signed_in(portal_server)
    assert client.get("/portal/catalog").status_code == 200
    new_key = cli_json(portal_server.gateway.home, "deploy", "admin-key", "--regenerate")["admin_key"]
    try:
        answer = client.get("/portal/catalog")
        assert answer.status_code == 303 and "expired=1" in answer.headers["location"]
        assert client.get("/portal/catalog").status_code == 303  # ended, not just refused once
    finally:
        portal_server.admin_key = new_key
