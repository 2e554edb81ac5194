"""The prefix cache's tiers through real servers: a conversation returning after a restart restores its history
from the disk tier (counted in /metrics, answered as a server without any cache answers), and a deployment's
replicas get the gateway's KV cache type and share its disk tier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Server, start_server, stop_server
from tests.api.deployment_fixtures import cli_json, start_gateway, wait_for, wait_ready

pytestmark = pytest.mark.slow

FIRST = "Tell me about the sea, the ships that sail on it, and the people who keep the lighthouses. " * 3


def ask(server: Server, messages: list[dict[str, str]]) -> dict[str, Any]:
    body = {"messages": messages, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    headers = {"api-key": server.key, "extra-parameters": "pass-through"}
    response = httpx.post(f"{server.url}/chat/completions", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json())


def reused_tokens(server: Server) -> dict[str, float]:
    return {labels["source"]: value for labels, value in prefix_cache(server, "reused_tokens_total")}


def requests_by_tier(server: Server) -> dict[str, float]:
    """Finished requests by the tier their prompt's head came from ("none": a miss)."""
    return {labels["tier"]: value for labels, value in prefix_cache(server, "requests_total")}


def prefix_cache(server: Server, name: str) -> list[tuple[dict[str, str], float]]:
    text = httpx.get(f"{server.url}/metrics", headers={"api-key": server.key}).text
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == f"llamafoundry_prefix_cache_{name}"
    ]


def test_a_conversation_returning_after_a_restart_restores_its_history_from_disk(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    tier = ("--prefix-cache-dir", str(tmp_path / "kv"), "--prefix-cache-ram", "0", "--ctx-size", "1024")
    turn_1 = [{"role": "user", "content": FIRST}]
    before = start_server(tiny_model_path, tmp_path, *tier)
    try:
        first = ask(before, turn_1)
    finally:
        stop_server(before)  # Ctrl-C: what was handed to the disk tier is written before it exits
    turn_2 = turn_1 + [
        {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
        {"role": "user", "content": "And the lighthouses?"},
    ]
    after = start_server(tiny_model_path, tmp_path, *tier)
    plain = start_server(tiny_model_path, tmp_path, "--prefix-cache-ram", "0", "--ctx-size", "1024")
    try:
        assert reused_tokens(after).get("disk", 0) == 0
        second = ask(after, turn_2)
        assert reused_tokens(after)["disk"] >= first["usage"]["prompt_tokens"]
        assert requests_by_tier(after) == {"slot": 0, "ram": 0, "disk": 1, "none": 0}
        copied = {labels["direction"]: value for labels, value in prefix_cache(after, "copy_seconds_total")}
        assert copied["load"] > 0 and copied["save"] > 0  # the history loaded; the new turn written through
        assert second["choices"][0]["message"] == ask(plain, turn_2)["choices"][0]["message"]
        assert reused_tokens(plain).get("disk", 0) == 0
        copied_plain = [labels["direction"] for labels, _ in prefix_cache(plain, "copy_seconds_total")]
        assert copied_plain == ["slot"]  # no tiers: only copies between slots to report
    finally:
        stop_server(after)
        stop_server(plain)


def test_a_deployments_replicas_get_the_cache_type_and_share_the_disk_tier(
    tiny32_model_path: Path, tmp_path: Path
) -> None:
    """...and a host-memory tier too small for the slots it backs is named at start-up, for the server's own model
    and for the deployment (whose replicas each get half of it)."""
    home, kv = tmp_path / "home", tmp_path / "kv"
    home.mkdir()
    weights = str(tiny32_model_path)
    created = cli_json(home, "deploy", "create", "fleet", "--model", "Meta-Llama-3.1-8B-Instruct", "--type",
                       "managed", "--instances", "2", "--weights", weights)  # fmt: skip
    tiers = ("--kv-cache-type", "q8_0", "--prefix-cache-dir", str(kv), "--prefix-cache-ram", "64KiB")
    gateway = start_gateway(home, tiny32_model_path, *tiers)
    try:
        url = f"{gateway.url}/deployments/fleet/chat/completions"
        key = created["primary_key"]
        wait_ready(url, key)
        body = {"messages": [{"role": "user", "content": FIRST}], "max_tokens": 4, "temperature": 0}
        for _ in range(2):  # one request to each replica (balanced by requests in flight, then served)
            assert httpx.post(url, json=body, headers={"api-key": key}, timeout=120).status_code == 200
        wait_for(lambda: any(kv.glob("*/*.kv")), 30, "a state file in the shared directory")
        states = list(kv.glob("*/*.kv"))
        assert len({p.parent for p in states}) == 1  # both replicas: one model key, one directory
        assert b"q8_0" in states[0].read_bytes()[:400]  # the fingerprint in the file's header
        logged = " ".join(gateway.log().split())
        assert "--prefix-cache-ram 64.0 KiB holds the KV states of" in logged, logged  # the server's own model
        assert "deployment fleet (each of its 2 replicas' share): --prefix-cache-ram 32.0 KiB" in logged, logged
    finally:
        gateway.stop()
