"""A deployment's sizes through the real CLI, the management API and a running gateway: the replicas run with
what was set (n up to --parallel, the context of --ctx-size), `deploy show` says what they run with, a change
restarts them with the new sizes, and a size that cannot fit in memory is refused with the numbers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamafoundry.cli import main
from tests.api.deployment_fixtures import chat, cli_json, start_gateway, wait_for, wait_ready
from tests.gguf_files import metadata_only_gguf

MODEL = "Llama-3.2-1B-Instruct"  # trained for 128K tokens; the weights here are the tiny random model's


def served_sizing(url: str, admin_key: str, name: str = "sized") -> dict[str, Any] | None:
    """What the deployment's replicas run with, once they answer (not while new ones start beside them)."""
    body = httpx.get(f"{url}/management/deployments/{name}", headers={"api-key": admin_key}, timeout=30).json()
    return None if "changing" in body["status"] else body["status"].get("sizing")


def test_sizes_reach_the_replicas_and_a_change_restarts_them(
    tmp_path: Path, tiny_model_path: Path, tiny32_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    weights = str(tiny32_model_path)  # heads of 32 numbers: what a q8_0 cache stores
    created = cli_json(home, "deploy", "create", "sized", "--model", MODEL, "--type", "managed", "--weights", weights,
                       "--ctx-size", "2048", "--parallel", "6", "--threads", "1", "--kv-cache-type", "q8_0",
                       "--speculative-tokens", "0")  # fmt: skip
    assert created["settings"] == {"ctx_size": 2048, "parallel": 6, "threads": 1, "kv_cache_type": "q8_0",
                                   "speculative_tokens": 0}  # fmt: skip
    admin_key = cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]
    gateway = start_gateway(home, tiny_model_path)
    try:
        url, key = f"{gateway.url}/deployments/sized", created["primary_key"]
        wait_ready(f"{url}/chat/completions", key)
        assert served_sizing(gateway.url, admin_key) == {
            "ctx_size": 2048, "parallel": 6, "threads": 1, "kv_cache_type": "q8_0", "flash_attn": "auto",
            "gpu_layers": 0, "speculative_tokens": 0,
        }  # fmt: skip
        extra = {"extra-parameters": "pass-through"}
        six = chat(f"{url}/chat/completions", key, extra, n=6, temperature=1.0)
        assert six.status_code == 200 and len(six.json()["choices"]) == 6  # above the 4 replicas once had
        long_prompt = "word " * 1500  # ~1,500 tokens: more than 1,024, within 2,048
        assert chat(f"{url}/chat/completions", key, messages=[{"role": "user", "content": long_prompt}]).status_code \
            == 200  # fmt: skip

        # The management API changes them; the gateway restarts the replicas with the new sizes.
        patched = httpx.patch(f"{gateway.url}/management/deployments/sized", json={"parallel": 2, "ctx_size": 1024},
                              headers={"api-key": admin_key}, timeout=30)  # fmt: skip
        assert patched.status_code == 200, patched.text
        wait_for(lambda: (served_sizing(gateway.url, admin_key) or {}).get("parallel") == 2, 60, "the new sizes")
        wait_ready(f"{url}/chat/completions", key)
        refused = chat(f"{url}/chat/completions", key, extra, n=6)
        assert refused.status_code == 400, refused.text  # six choices need six slots; the replicas have two
        too_long = chat(f"{url}/chat/completions", key, messages=[{"role": "user", "content": long_prompt}])
        assert too_long.status_code == 400 and "1024" in too_long.text.replace(",", "")

        def shown() -> str:
            main(["deploy", "show", "sized", "--data-dir", str(home)])
            captured = capsys.readouterr()
            return " ".join((captured.out + captured.err).split())

        line = "runs with: context 1024 tokens x 2 parallel, 1 thread(s), KV q8_0, flash attention auto"
        wait_for(lambda: line in shown(), 30, "deploy show printing what the replicas run with")
    finally:
        gateway.stop()


def test_a_size_that_cannot_fit_is_refused_with_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    weights = metadata_only_gguf(tmp_path / "llama-8b.gguf")
    # 16 x 131072 tokens of 128 KiB: 256 GiB of KV cache
    code = main(["deploy", "create", "huge", "--model", "Meta-Llama-3.1-8B-Instruct", "--weights", str(weights),
                 "--ctx-size", "131072", "--parallel", "16", "--data-dir", str(home)])  # fmt: skip
    printed = " ".join(capsys.readouterr().err.split())
    assert code == 1, printed
    assert "This deployment needs 256.5 GiB: weights 0.0 + KV 256.0 (16 x 131072 tokens, f16) + 0.5;" in printed
    assert "GiB free" in printed and "--kv-cache-type q8_0" in printed
    assert cli_json(home, "deploy", "list") == []  # nothing was stored

    forwarded = ["deploy", "create", "forwarded", "--model", MODEL, "--type", "managed", "--upstream", "http://127.0.0.1:9"]
    code = main([*forwarded, "--parallel", "8", "--data-dir", str(home)])
    assert code == 1 and "which sizes itself" in " ".join(capsys.readouterr().err.split())


def test_scaling_and_resizing_under_load_drop_no_request(tmp_path: Path, tiny_model_path: Path) -> None:
    home = tmp_path / "home"
    created = cli_json(home, "deploy", "create", "rolling", "--model", MODEL, "--type", "managed", "--weights",
                       str(tiny_model_path), "--threads", "1", "--ctx-size", "1024")  # fmt: skip
    admin_key = cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]
    gateway = start_gateway(home, tiny_model_path)
    url, key = f"{gateway.url}/deployments/rolling/chat/completions", created["primary_key"]
    outcomes: list[int | str] = []
    stop = threading.Event()

    def client(streamed: bool) -> None:
        while not stop.is_set():
            body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 24, "stream": streamed}
            try:
                with httpx.stream("POST", url, json=body, headers={"api-key": key}, timeout=60) as response:
                    text = response.read().decode()
                ok = response.status_code == 200 and (not streamed or text.rstrip().endswith("data: [DONE]"))
                outcomes.append(200 if ok else f"{response.status_code}: {text[:200]}")
            except httpx.HTTPError as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")

    def status() -> dict[str, Any]:
        found = httpx.get(f"{gateway.url}/management/deployments/rolling", headers={"api-key": admin_key}, timeout=30)
        return dict(found.json()["status"])

    def settled(check: Callable[[dict[str, Any]], bool]) -> bool:
        now = status()
        return "changing" not in now and all(r["healthy"] for r in now.get("replicas") or [{}]) and check(now)

    try:
        wait_ready(url, key)
        threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        cli_json(home, "deploy", "update", "rolling", "--instances", "2")
        wait_for(lambda: settled(lambda s: len(s["replicas"]) == 2), 60, "two replicas serving")
        time.sleep(1.0)
        cli_json(home, "deploy", "update", "rolling", "--ctx-size", "2048")
        wait_for(lambda: settled(lambda s: s["sizing"]["ctx_size"] == 2048), 60, "the resized replicas serving")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        gateway.stop()
    failed = [o for o in outcomes if o != 200]
    print(f"rolling changes under load: {len(outcomes)} requests sent, {len(outcomes) - len(failed)} completed, "
          f"{len(failed)} failed")
    assert len(outcomes) >= 20 and not failed, failed[:5]
