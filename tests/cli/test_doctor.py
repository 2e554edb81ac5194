"""`llamafoundry doctor` through the CLI, as a user attaches it to a bug report, and the server's own check of its
model before it says ready."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from llamafoundry.hardware import cpu_features
from tests.serve_process import free_port, launch_serve, stop_process


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamafoundry", "doctor", *args], capture_output=True, text=True, timeout=300
    )


def test_doctor_json_reports_cpu_probed_sets_the_build_memory_and_measured_speeds(tiny_model_path: Path) -> None:
    done = doctor("--json", "--seconds", "1", "--model", str(tiny_model_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cpu"]["model"] == cpu_features.cpu_model_name() and report["cpu"]["logical_cpus"] >= 1
    assert report["memory"]["total_gib"] > 0
    assert report["llama_cpp"]["llama_cpp_python"] and "CPU" in report["llama_cpp"]["system_info"]
    sets = {entry["name"]: entry for entry in report["instruction_sets"]}
    assert set(sets) == {f.name for f in cpu_features.features_of(report["cpu"]["arch"])}
    for entry in sets.values():
        if entry["used_by_build"] and entry["runs"] is not None:
            assert entry["runs"], f"the build uses {entry['name']}, which does not run here"  # the AMX trap
    demo, tiny = report["speed"]
    assert demo["model"] == "llamafoundry-demo.gguf" and tiny["path"] == str(tiny_model_path)
    for entry in (demo, tiny):
        assert entry["ok"] and entry["tokens_per_s"] > 0 and entry["implied_gb_per_s"] >= 0


def test_doctor_prints_tables_for_people() -> None:
    done = doctor("--seconds", "0.5")
    assert done.returncode == 0, done.stderr
    for heading in ("llamafoundry doctor", "Instruction sets", "Decode speed", "llama-cpp-python", "tokens/s"):
        assert heading in done.stdout, done.stdout


def test_doctor_with_a_missing_model_says_so() -> None:
    done = doctor("--model", "/nonexistent/model.gguf", "--seconds", "0")
    assert done.returncode == 2 and "no such file" in done.stderr


def test_doctor_reports_a_model_that_crashes_or_fails_instead_of_dying(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    done = doctor("--json", "--seconds", "0", "--model", str(broken))
    assert done.returncode == 1
    failed = json.loads(done.stdout)["speed"][1]
    assert not failed["ok"] and "could not load" in failed["error"]


def test_a_server_whose_model_cannot_decode_says_why_in_health_and_in_answers(tmp_path: Path) -> None:
    """The decode runs in a child before the server says ready: a crash (or a file llama.cpp cannot run) becomes
    a sentence in /health and in every answer's 503, not a server killed by its first request."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    port, key = free_port(), "0123456789abcdef0123456789abcdef"
    log = tmp_path / "serve.log"
    process = launch_serve(["--model", str(broken), "--ctx-size", "64", "--port", str(port), "--api-key", key,
                            "--data-dir", str(tmp_path)], log)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{url}/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if health.json()["error"]["code"] == "model_load_failed":
                break
            time.sleep(0.2)
        assert health is not None and health.status_code == 503, log.read_text()
        assert "could not decode" in health.json()["error"]["message"], health.text
        answer = httpx.post(f"{url}/chat/completions", headers={"api-key": key}, timeout=10,
                            json={"messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
        assert answer.status_code == 503 and "retry-after" not in answer.headers
        message = answer.json()["error"]["message"]
        assert "could not decode" in message and "restart" in message
        assert process.poll() is None  # alive, answering
        assert "Traceback" not in log.read_text()
    finally:
        stop_process(process)
