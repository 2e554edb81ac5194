"""Prefix-aware routing across real servers: the balancer a deployment's gateway forwards with sends each turn of a
conversation to the server that answered its previous turn, so every returning turn finds its history cached."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llamafoundry.platform.upstream_client import RemoteChatClient
from tests.api.conftest import API_KEY, start_server, stop_server
from tests.api.test_prefix_cache_e2e import reused_tokens

pytestmark = pytest.mark.slow


def test_each_turn_goes_where_the_conversation_is_cached(tiny_model_path: Path, tmp_path: Path) -> None:
    servers = [start_server(tiny_model_path, tmp_path, "--prefix-cache-ram", "0", "--ctx-size", "1024")]
    servers.append(start_server(tiny_model_path, tmp_path, "--prefix-cache-ram", "0", "--ctx-size", "1024"))

    async def converse() -> list[int]:
        client = RemoteChatClient([s.url for s in servers], API_KEY)
        histories: dict[int, list[dict[str, str]]] = {c: [] for c in range(3)}
        reusable = []
        try:
            for turn in range(3):
                for conversation, history in histories.items():  # conversations take turns, one request at a time
                    text = f"Conversation {conversation}, turn {turn}: go on. " * 4
                    history.append({"role": "user", "content": text})
                    body = {"messages": history, "max_tokens": 6, "temperature": 0, "ignore_eos": True}
                    answer = await client.complete(body, {"extra-parameters": "pass-through"})
                    if turn:
                        reusable.append(previous[conversation])
                    previous[conversation] = answer["usage"]["prompt_tokens"]
                    history.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"]})
        finally:
            await client.aclose()
        return reusable

    previous: dict[int, int] = {}
    try:
        reusable = asyncio.run(converse())
        reused = sum(reused_tokens(server).get("slot", 0) for server in servers)
        # every returning turn reused at least its previous prompt (answers may re-tokenize differently)
        assert reused >= sum(reusable), (reused, reusable)
    finally:
        for server in servers:
            stop_server(server)
