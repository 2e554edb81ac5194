"""Projects end to end: a platform team gives two teams their own project through the real CLI and the management
API of a real `serve` (on SQLite, and on PostgreSQL), with project keys opening upstream and local-replica
deployments, per-key limits, project-scoped management access, usage per project and the audit log; then two
gateways sharing one PostgreSQL and one Redis hold a key's limits and budget together, and the budget's webhook
is called once at 80 % and once at 100 %."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamafoundry.cli import main
from tests.api.conftest import API_KEY, Server
from tests.api.deployment_fixtures import PICKUP_S, chat, start_gateway, wait_for, wait_ready
from tests.platform.postgres_server import fresh_database, running_postgres
from tests.platform.redis_server import running_redis

pytestmark = pytest.mark.slow

M8, M70 = "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    args = ["--data-dir", str(tmp_path / "home"), "--create"]
    if request.param == "postgresql":
        args += ["--database-url", fresh_database(request.getfixturevalue("postgres_server"))]
    return args


def cli(store_args: list[str], *argv: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json", *store_args])
    assert code == 0, f"llamafoundry {' '.join(argv)} exited with {code}"
    return json.loads(out.getvalue()) if out.getvalue().strip() else None


def serve_args(store_args: list[str]) -> list[str]:
    return [arg for arg in store_args if arg not in ("--data-dir", store_args[1], "--create")]


def completions(url: str, name: str) -> str:
    return f"{url}/deployments/{name}/chat/completions"


def opens(url: str, deployment: str, key: str) -> bool:
    return httpx.get(f"{url}/deployments/{deployment}/info", headers={"api-key": key}, timeout=30).status_code == 200


def test_two_teams_get_their_own_project_keys_and_usage(
    server: Server, tiny_model_path: Path, tmp_path: Path, store_args: list[str]
) -> None:
    for team in ("team-a", "team-b"):
        cli(store_args, "project", "create", team)
    upstream = ["--upstream", server.url, "--upstream-key", API_KEY]
    cli(store_args, "deploy", "create", "chat-a", "--model", M8, "--project", "team-a", *upstream)
    cli(store_args, "deploy", "create", "chat-b", "--model", M8, "--project", "team-b", *upstream)  # same model
    local = cli(store_args, "deploy", "create", "local-a", "--model", M70, "--project", "team-a", "--weights",
                str(tiny_model_path), "--content-safety", "off")  # a replica process of local weights  # fmt: skip
    admin = {"api-key": cli(store_args, "deploy", "admin-key", "--regenerate")["admin_key"]}
    gateway = start_gateway(tmp_path / "home", tiny_model_path, *serve_args(store_args))
    url = gateway.url
    try:
        made = httpx.post(f"{url}/management/projects/team-a/keys", headers=admin, timeout=30,
                          json={"name": "ci", "deployments": ["chat-a", "local-a"], "rpm": 6}).json()  # fmt: skip
        ci = made["key"]
        dev = cli(store_args, "project", "key", "create", "team-a", "dev")["key"]
        listed = httpx.get(f"{url}/management/projects/team-a/keys", headers=admin, timeout=30).text
        assert ci not in listed and dev not in listed and made["id"] in listed  # shown once, stored hashed
        for key in (ci, dev):  # dev was written to the store by the CLI: the gateway reads it within PICKUP_S
            wait_for(functools.partial(opens, url, "chat-a", key), PICKUP_S + 1, "the new key opening chat-a")

        first = chat(completions(url, "chat-a"), ci)
        assert first.status_code == 200, first.text
        limited = chat(completions(url, "chat-a"), ci)  # 6 a minute: at most 1 in any 10 seconds, for the key
        assert limited.status_code == 429
        assert "This key's own call rate limit is 6" in limited.json()["error"]["message"]
        assert chat(completions(url, "chat-a"), dev).status_code == 200  # another key: its own counter
        assert chat(completions(url, "chat-b"), dev).status_code == 401  # team-b's deployment
        wait_ready(completions(url, "local-a"), local["primary_key"])
        assert chat(completions(url, "local-a"), dev).status_code == 200  # a local replica, by the project key
        assert chat(completions(url, "local-a"), ci).status_code == 429  # the key's limit spans its deployments

        _check_project_key_management(url, dev, admin)
        cli(store_args, "project", "key", "revoke", "team-a", "dev")
        wait_for(lambda: chat(completions(url, "chat-a"), dev).status_code == 401, PICKUP_S + 1, "dev refused")

        usage = httpx.get(f"{url}/management/usage", params={"project": "team-a"}, headers=admin, timeout=30).json()
        assert {row["deployment"] for row in usage["data"]} == {"chat-a", "local-a"}
        _check_audit(url, admin, made["id"], [ci, dev, admin["api-key"], API_KEY])
    finally:
        gateway.stop()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["usage", "--project", "team-a", "--format", "json", *store_args]) == 0
    rows = json.loads(out.getvalue())["data"]
    assert {row["deployment"] for row in rows} == {"chat-a", "local-a"}
    assert sum(row["requests"] for row in rows) >= 5 and sum(row["throttled"] for row in rows) == 2


def _check_project_key_management(url: str, key: str, admin: dict[str, str]) -> None:
    """A project key reads its own project's management resources and nothing else, and changes nothing."""
    own = {"api-key": key}

    def get(path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{url}/management{path}", params=params, headers=own, timeout=30)

    assert [p["name"] for p in get("/projects").json()["data"]] == ["team-a"]
    whoami = get("/whoami").json()
    assert (whoami["actor_type"], whoami["project"]) == ("project-key", "team-a") and whoami["actor"].startswith("key-")
    assert get("/projects/team-a").json()["deployments"] == ["chat-a", "local-a"]
    assert get("/projects/team-b").status_code == 404
    assert {d["name"] for d in get("/deployments").json()["data"]} == {"chat-a", "local-a"}
    assert get("/deployments/chat-b").status_code == 404 and get("/deployments/chat-a").status_code == 200
    assert get("/usage", project="team-b").status_code == 404
    assert {row["deployment"] for row in get("/usage").json()["data"]} <= {"chat-a", "local-a"}
    assert {e["project"] for e in get("/audit").json()["data"]} == {"team-a"}
    refused = httpx.delete(f"{url}/management/deployments/chat-a", headers=own, timeout=30)
    assert refused.status_code == 403 and "changes need the admin key" in refused.json()["error"]["message"]
    assert httpx.post(f"{url}/management/projects", json={"name": "mine"}, headers=own).status_code == 403
    assert httpx.get(f"{url}/management/deployments/chat-a", headers=admin).status_code == 200  # still there


def _check_audit(url: str, admin: dict[str, str], ci_id: str, secrets: list[str]) -> None:
    entries = httpx.get(f"{url}/management/audit", params={"project": "team-a", "limit": "50"}, headers=admin,
                        timeout=30).json()["data"]  # fmt: skip
    actions = [(e["action"], e["actor_type"], e["status"]) for e in entries]
    assert ("project.create", "cli", 200) in actions and ("deployment.create", "cli", 200) in actions
    created = next(e for e in entries if e["action"] == "project.key.create" and e["actor_type"] == "admin")
    assert created["details"]["id"] == ci_id and created["details"]["rpm"] == 6 and created["target"] == "team-a"
    assert created["actor"].startswith("key-")  # the admin key's id
    refused = next(e for e in entries if e["action"] == "deployment.delete")
    assert refused["actor_type"] == "project-key" and refused["status"] == 403 and "admin key" in refused["result"]
    assert entries[0]["action"] == "project.key.revoke" and entries[0]["target"] == "team-a/dev"
    everything = httpx.get(f"{url}/management/audit", params={"limit": "1000"}, headers=admin, timeout=30).text
    assert not any(secret in everything for secret in secrets)  # no key, ever


class WebhookReceiver:
    """A loopback HTTP server that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/budget?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_two_gateways_share_a_keys_limits_and_budget(
    server: Server, tiny_model_path: Path, tmp_path: Path, postgres_server: str
) -> None:
    store_args = ["--data-dir", str(tmp_path / "g0"), "--create", "--database-url", fresh_database(postgres_server)]
    cli(store_args, "project", "create", "team-a")
    cli(store_args, "deploy", "create", "chat-a", "--model", M8, "--project", "team-a", "--upstream", server.url,
        "--upstream-key", API_KEY)  # fmt: skip
    limited = cli(store_args, "project", "key", "create", "team-a", "ci", "--rpm", "12")["key"]  # 2 per 10 s
    spender = cli(store_args, "project", "key", "create", "team-a", "batch")["key"]
    receiver = WebhookReceiver()
    cli(store_args, "project", "budget", "set", "team-a", "--key", "batch", "--period", "day", "--usd", "0.000001",
        "--webhook", receiver.url)  # less than one request costs  # fmt: skip
    with running_redis(tmp_path) as redis_url:
        gateways = [start_gateway(tmp_path / f"g{i}", tiny_model_path, "--database-url", store_args[-1],
                                  "--redis-url", redis_url) for i in range(2)]  # fmt: skip
        try:
            urls = [completions(g.url, "chat-a") for g in gateways]
            statuses = [chat(urls[i % 2], limited).status_code for i in range(4)]
            assert statuses == [200, 200, 429, 429]  # one limit for both gateways, not 2 each

            body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True}
            with httpx.stream("POST", urls[0], json=body, headers={"api-key": spender}, timeout=60) as streamed:
                assert streamed.status_code == 200 and "data: [DONE]" in list(streamed.iter_lines())
            wait_for(lambda: chat(urls[1], spender).status_code == 429, 5, "the other gateway refusing the key")
            refused = chat(urls[1], spender).json()["error"]
            assert refused["code"] == "BudgetExceeded" and "daily budget of key" in refused["message"]
            assert chat(urls[1], limited).status_code in (200, 429)  # the project's other keys are not stopped
            wait_for(lambda: len(receiver.bodies) >= 2, 10, "the budget's webhooks")
            time.sleep(3)  # both gateways' watchers run every 2 s: neither sends a threshold twice
            assert sorted(b["threshold_percent"] for b in receiver.bodies) == [80, 100]
            assert all(b["project"] == "team-a" and b["spent_usd"] > 0.000001 for b in receiver.bodies)
        finally:
            for gateway in gateways:
                gateway.stop()
            receiver.close()
    logs = "".join(g.log() for g in gateways)
    assert "s3cret" not in logs and limited not in logs and spender not in logs
