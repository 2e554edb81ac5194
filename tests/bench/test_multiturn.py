"""Smoke test of the multi-turn harness against a real `llamafoundry serve` on a tiny model: conversations take
turns in rounds with their history resent, every turn is counted by its index, and the report renders its table
and plot. Nothing is timed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bench.multiturn import Workload, build_conversations, run_workload, summarize
from bench.servers import ServerConfig, start_server
from bench.workloads import WordSource

from bench import multiturn_report


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    cfg = ServerConfig(tiny_model_path, parallel=2, ctx_size=1024, threads=1, port=18721)
    running = start_server("llamafoundry", cfg, tmp_path_factory.mktemp("logs"), ready_timeout_s=120)
    yield running
    running.stop()


def test_conversations_take_turns_with_their_history_and_the_report_renders(server, tiny_model_path: Path,  # noqa: ANN001
                                                                             tmp_path: Path) -> None:  # fmt: skip
    workload = Workload.parse("3x3@2")
    words = WordSource.from_gguf(tiny_model_path, seed=1)
    conversations = build_conversations(words, workload, first_len=30, turn_len=8)
    results, wall = asyncio.run(run_workload(server.endpoint, conversations, 2, output_len=6, think_time_s=0.01))
    assert sorted((t.conversation, t.turn) for t in results) == [(c, t) for c in range(3) for t in (1, 2, 3)]
    by_conversation = {c: [t.result.prompt_tokens for t in sorted(results, key=lambda t: t.turn) if t.conversation == c]
                       for c in range(3)}  # fmt: skip
    assert all(a < b < c for a, b, c in by_conversation.values())  # each turn resends a longer history
    assert all(len(conv.history) == 6 for conv in conversations)  # 3 user turns and 3 answers
    summary = summarize([(results, wall)])
    assert summary["failed"] == 0 and set(summary["ttft_by_turn_ms"]) == {"1", "2", "3"}
    run = {"date": "now", "machine": "CPU X, 2 cores, 8 GiB", "model": {"path": "m.gguf", "size_mib": 1.0},
           "command": "llamafoundry bench multiturn", "servers": {"llamafoundry": {"workloads": {"3x3@2": summary}}},
           "settings": {"parallel": 2, "threads": 1, "ctx_size": 1024, "first_turn_len": 30, "turn_len": 8,
                        "output_len": 6, "think_time_s": 0.01, "rounds": 1, "workloads": ["3x3@2"]}}  # fmt: skip
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    multiturn_report.write_markdown(doc, multiturn_report.markdown(run, ["p.png"]), ["3x3@2"])
    text = doc.read_text()
    assert "| llamafoundry |" in text and "turn 3 TTFT p50" in text and "CPU X" in text
    assert multiturn_report.plot(run, tmp_path) == ["benchmarks-multiturn.png"]
    multiturn_report.write_markdown(doc, "second run\n", ["3x3@2"])  # the block is replaced, not appended
    assert doc.read_text().count("bench:multiturn:start") == 1 and "second run" in doc.read_text()
    assert (tmp_path / "benchmarks-multiturn.png").stat().st_size > 1000
