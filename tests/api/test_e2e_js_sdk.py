"""The JS SDK (`@azure-rest/ai-inference` with `@azure/core-sse`) under Node against a real server: its bare
route and `/deployments/<name>` of a local replica and an upstream deployment (`target`, tests/api/targets.py).

`tests/js/chat.mjs` makes the calls the SDK samples make and prints a JSON summary; this test checks it.
`make test` installs the Node packages (`npm install` in tests/js) when npm is available.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.api.targets import Target

pytestmark = pytest.mark.slow

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def js_summary(target: Target) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JS SDK test needs Node.js 18 or later")
    if not (JS_DIR / "node_modules" / "@azure-rest" / "ai-inference").is_dir():
        pytest.skip(f"the JS SDK packages are not installed: run `npm install` in {JS_DIR} (make test does)")
    env = {**os.environ, "LF_ENDPOINT": target.url, "LF_KEY": target.key}
    done = subprocess.run([node, "chat.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"node failed:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_non_streaming(js_summary: dict[str, Any], target: Target) -> None:
    result = js_summary["complete"]
    assert result["status"] == "200" and result["headers"]["requestId"]
    body = result["body"]
    assert body["model"] == target.name and isinstance(body["created"], int) and len(body["id"]) == 32
    assert body["choices"][0]["message"]["role"] == "assistant" and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def test_streaming(js_summary: dict[str, Any]) -> None:
    result = js_summary["stream"]
    assert result["contentType"].startswith("text/event-stream") and result["sawDone"]
    events = result["events"]
    assert all(e["event"] in (None, "", "message") and e["id"] in (None, "") for e in events)  # data-only events
    chunks = [e["chunk"] for e in events]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["completion_tokens"] == 5
    # the role chunk, then one per token, except that a token ending inside a UTF-8 character goes with the next
    assert 2 <= len(chunks) <= 6


def test_info_and_errors(js_summary: dict[str, Any], target: Target) -> None:
    assert js_summary["info"]["model_type"] == "chat-completions"
    assert js_summary["wrongKey"]["status"] == "401" and js_summary["wrongKey"]["unexpected"]
    assert "Auth token validation failed" in js_summary["wrongKey"]["body"]["message"]
    bad = js_summary["badRequest"]
    assert bad["status"] == "400" and bad["body"]["error"]["param"] == "temperature"
