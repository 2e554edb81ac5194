"""`llamafoundry ps` against a running gateway: its own model and a deployment, their processes, memory, slots
and uptime, from the reports the server writes to the store; nothing once it has stopped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.api.deployment_fixtures import cli_json, start_gateway, wait_for, wait_ready


def test_ps_lists_the_server_model_and_the_deployments_replicas(tmp_path: Path, tiny_model_path: Path) -> None:
    home = tmp_path / "home"
    created = cli_json(home, "deploy", "create", "fleet", "--model", "Llama-3.2-1B-Instruct", "--type", "managed",
                       "--weights", str(tiny_model_path), "--instances", "2", "--threads", "1", "--ctx-size", "1024",
                       "--parallel", "3")  # fmt: skip
    gateway = start_gateway(home, tiny_model_path)
    try:
        wait_ready(f"{gateway.url}/deployments/fleet/chat/completions", created["primary_key"])

        def listed() -> dict[str, Any]:
            return {row["name"]: row for row in cli_json(home, "ps")}

        def settled() -> bool:  # the report written while wait_ready's last request was in flight says 1 until the next
            fleet = listed().get("fleet", {})
            return fleet.get("replicas") == "2/2" and fleet.get("in_flight") == 0

        wait_for(settled, 30, "ps showing both replicas, idle")
        rows = listed()
        own, fleet = rows["tiny-llama"], rows["fleet"]
        assert own["kind"] == "server model" and own["state"] == "ready"
        assert own["pids"] == [gateway.process.pid] and own["memory_bytes"] > 10 * 2**20
        assert fleet["kind"] == "deployment" and fleet["context"] == "1024 x 3" and len(fleet["pids"]) == 2
        assert gateway.process.pid not in fleet["pids"] and all(os.path.exists(f"/proc/{p}") for p in fleet["pids"])
        assert fleet["memory_bytes"] > 2 * 10 * 2**20 and fleet["in_flight"] == 0
        assert 0 <= fleet["up_s"] < 600 and not fleet["stale"]
    finally:
        gateway.stop()
    assert cli_json(home, "ps") == []  # a server that stops says it serves nothing
