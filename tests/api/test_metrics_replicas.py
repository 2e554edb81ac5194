"""The gateway's `/metrics` with a local deployment: a real `serve` whose deployment `fleet` runs one replica
process of the tiny GGUF. The replica's engine and process series appear at the gateway under
`deployment="fleet"` and `replica="0"` (never under the catalog model's name), beside the gateway's own process
series, build and model info; finish reasons and content-filter blocks are counted by deployment; a replica that
stops answering is reported down, and one that is killed is counted as restarted and up again.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import API_KEY
from tests.api.deployment_fixtures import Gateway, chat, cli_json, start_gateway, wait_for, wait_ready

pytestmark = pytest.mark.slow

MODEL = "Llama-3.2-1B-Instruct"  # the catalog name the replica itself labels its series with
TERM = "Contoso"  # on the deployment's blocklist
ANY_60 = r"[\s\S]{60}"
RESTART_TIMEOUT_S = 60
FLEET = (("deployment", "fleet"), ("replica", "0"))
TO_LENGTH = {"headers": {"extra-parameters": "pass-through"}, "ignore_eos": True, "max_tokens": 3}  # ends: length

# families the gateway counts itself for every request: a replica's own counts of them must not be added
GATEWAY_COUNTED = ("requests", "tokens", "finish_reasons", "request_duration_seconds", "time_to_first_token_seconds")
SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Setup:
    gateway: Gateway
    url: str  # the deployment's chat route
    key: str
    admin: dict[str, str]


@pytest.fixture(scope="module")
def setup(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("metrics-replicas")
    created = cli_json(home, "deploy", "create", "fleet", "--model", MODEL, "--type", "managed", "--instances", "1",
                       "--weights", str(tiny_model_path))  # fmt: skip
    cli_json(home, "deploy", "update", "fleet", "--content-safety", "on")  # a managed deployment's is off
    cli_json(home, "blocklist", "add", "fleet", "banned", TERM)
    admin = {"api-key": cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]}
    listed = home / "long.txt"  # the bare route's list: any 60 characters of an answer (never 3 tokens' worth)
    listed.write_text(f"re: {ANY_60}\n", encoding="utf-8")
    gateway = start_gateway(home, tiny_model_path, "--content-safety-blocklist", str(listed))
    url = f"{gateway.url}/deployments/fleet/chat/completions"
    try:
        wait_ready(url, created["primary_key"])
        yield Setup(gateway, url, created["primary_key"], admin)
    finally:
        gateway.stop()


def scrape(setup: Setup) -> Samples:
    """The gateway's /metrics, parsed (a malformed exposition fails here)."""
    response = httpx.get(f"{setup.gateway.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def labelled(found: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of `name` that have at least `labels`."""
    return {
        key: value
        for (sample, key), value in found.items()
        if sample == name and all(dict(key).get(k) == v for k, v in labels.items())
    }


def replica_pid(setup: Setup) -> int:
    answer = httpx.get(f"{setup.gateway.url}/management/deployments/fleet", headers=setup.admin, timeout=10)
    return int(answer.json()["status"]["replicas"][0]["pid"])


def test_the_replicas_engine_series_are_at_the_gateway_under_the_deployments_name(setup: Setup) -> None:
    for _ in range(2):  # the same prompt twice: the second finds the first's prefix in the replica's slot
        assert chat(setup.url, setup.key, **TO_LENGTH).status_code == 200
    found = scrape(setup)
    assert found[("llamafoundry_replica_up", FLEET)] == 1
    assert found[("llamafoundry_replica_restarts_total", FLEET)] == 0
    for name in ("llamafoundry_requests_running", "llamafoundry_queue_depth", "llamafoundry_kv_cache_usage_ratio"):
        assert (name, FLEET) in found, name
    assert found[("llamafoundry_prefix_cache_requests_total", (*FLEET, ("result", "miss"), ("tier", "none")))] >= 1
    assert found[("llamafoundry_prefix_cache_requests_total", (*FLEET, ("result", "hit"), ("tier", "slot")))] >= 1
    assert found[("llamafoundry_prefix_cache_reused_tokens_total", (*FLEET, ("source", "slot")))] > 0
    assert found[("llamafoundry_prefix_cache_computed_tokens_total", FLEET)] > 0
    assert found[("process_resident_memory_bytes", FLEET)] > 0  # the replica's process
    assert found[("process_resident_memory_bytes", ())] > 0  # the gateway's own
    assert labelled(found, "process_cpu_seconds_total", deployment="fleet")
    assert not labelled(found, "llamafoundry_queue_depth", deployment=MODEL)  # relabelled, not under the model
    # the gateway counts the deployment's requests itself: the replica's counts are not added a second time
    doubled = {f"llamafoundry_{stem}{suffix}" for stem in GATEWAY_COUNTED for suffix in SUFFIXES}
    assert not [name for name, labels in found if name in doubled and "replica" in dict(labels)]
    assert labelled(found, "llamafoundry_requests_total", deployment="fleet", status="200")
    assert labelled(found, "llamafoundry_finish_reasons_total", deployment="fleet", reason="length")
    info = labelled(found, "llamafoundry_model_info", deployment="fleet", model=MODEL, type="managed")
    assert list(info.values()) == [1] and dict(next(iter(info)))["context"].isdigit()
    assert labelled(found, "llamafoundry_model_info", deployment="tiny-llama", type="server")
    build = labelled(found, "llamafoundry_build_info")
    assert len(build) == 1 and {"version", "llama_cpp_python", "cpu_build"} <= set(dict(next(iter(build))))


def test_the_bare_route_and_the_replicas_share_one_family_per_series(setup: Setup) -> None:
    bare = f"{setup.gateway.url}/chat/completions"
    assert chat(bare, API_KEY, **TO_LENGTH).status_code == 200
    text = httpx.get(f"{setup.gateway.url}/metrics", timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    queue = families["llamafoundry_queue_depth"]
    owners = {s.labels["deployment"] for s in queue.samples}
    assert owners == {"tiny-llama", "fleet"}  # one family: the bare route's engine and the replica's
    found = scrape(setup)
    assert labelled(found, "llamafoundry_finish_reasons_total", deployment="tiny-llama")
    assert labelled(found, "llamafoundry_prefix_cache_requests_total", deployment="tiny-llama")


def test_a_blocked_prompt_is_counted_by_deployment_category_and_direction(setup: Setup) -> None:
    key = ("llamafoundry_content_filter_blocks_total",
           (("category", "custom_blocklists"), ("deployment", "fleet"), ("direction", "prompt")))  # fmt: skip
    before = scrape(setup).get(key, 0)
    blocked = chat(setup.url, setup.key, messages=[{"role": "user", "content": f"hi {TERM}"}])
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_filter", blocked.text
    assert scrape(setup)[key] == before + 1


def test_a_blocked_completion_is_counted_with_its_finish_reason(setup: Setup) -> None:
    key = ("llamafoundry_content_filter_blocks_total",
           (("category", "custom_blocklists"), ("deployment", "tiny-llama"), ("direction", "completion")))  # fmt: skip
    reason = ("llamafoundry_finish_reasons_total", (("deployment", "tiny-llama"), ("reason", "content_filter")))
    before = scrape(setup)
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 60, "ignore_eos": True, "stream": True}
    headers = {"api-key": API_KEY, "extra-parameters": "pass-through"}
    with httpx.stream("POST", f"{setup.gateway.url}/chat/completions", json=body, headers=headers, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert any('"finish_reason":"content_filter"' in line.replace(" ", "") for line in lines), lines
    after = scrape(setup)
    assert after[key] == before.get(key, 0) + 1
    assert after[reason] == before.get(reason, 0) + 1


def test_a_replica_that_stops_answering_is_down_and_a_killed_one_is_restarted(setup: Setup) -> None:
    pid = replica_pid(setup)
    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing: its scrape times out
    try:
        found = scrape(setup)
        assert found[("llamafoundry_replica_up", FLEET)] == 0
        assert not labelled(found, "process_resident_memory_bytes", deployment="fleet")  # left out, not stale
        assert found[("process_resident_memory_bytes", ())] > 0  # the rest of the scrape is whole
    finally:
        os.kill(pid, signal.SIGCONT)
    assert scrape(setup)[("llamafoundry_replica_up", FLEET)] == 1
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: scrape(setup).get(("llamafoundry_replica_restarts_total", FLEET)) == 1, RESTART_TIMEOUT_S,
             "the restart counted")  # fmt: skip
    wait_for(lambda: scrape(setup)[("llamafoundry_replica_up", FLEET)] == 1, RESTART_TIMEOUT_S, "replica 0 up")
    assert replica_pid(setup) != pid
    wait_ready(setup.url, setup.key)
