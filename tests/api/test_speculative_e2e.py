"""Prompt-lookup speculative decoding through a real server and the real SDK: the same streamed answer as a
server with it off, several tokens per streamed update where drafts were kept, and its counters in /metrics."""

from __future__ import annotations

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Server, module_server

pytestmark = pytest.mark.slow

COPY = "Repeat exactly: the quick brown fox jumps over the lazy dog, the quick brown fox jumps over the lazy dog."


plain_server = module_server("--ctx-size", "1024", "--speculative-tokens", "0")


def stream_answer(server: Server) -> list[str]:
    """The content of each streamed update of a greedy 64-token answer (the SDK's own stream parser)."""
    client = ChatCompletionsClient(server.url, AzureKeyCredential(server.key))
    updates = client.complete(
        messages=[UserMessage(COPY)],
        max_tokens=64,
        temperature=0,
        stream=True,
        model_extras={"ignore_eos": True},
    )
    return [u.choices[0].delta.content for u in updates if u.choices and u.choices[0].delta.content]


def speculative_counts(server: Server) -> tuple[float, float]:
    text = httpx.get(f"{server.url}/metrics", headers={"api-key": server.key}).text
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return found["llamafoundry_speculative_draft_tokens_total"], found["llamafoundry_speculative_accepted_tokens_total"]


def test_same_answer_with_drafts_kept_and_counted(server: Server, plain_server: Server) -> None:
    drafted_before, accepted_before = speculative_counts(server)
    fast = stream_answer(server)
    plain = stream_answer(plain_server)
    assert "".join(fast) == "".join(plain) and len(plain) > 40  # the tiny model's greedy answer loops
    drafted, accepted = speculative_counts(server)
    assert drafted > drafted_before and accepted > accepted_before
    assert len(fast) < len(plain)  # kept drafts arrive together: fewer, longer updates
    assert speculative_counts(plain_server) == (0, 0)
