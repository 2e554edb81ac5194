"""Smoke test of the benchmark harness against a real `llamafoundry serve` on a tiny model: every workload runs,
every request is counted with exactly max_tokens tokens, and the side-by-side report renders. Nothing is timed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bench.client import Endpoint, run_level
from bench.servers import ServerConfig, start_server
from bench.workloads import WordSource, build_workload

from bench import compare, report


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    cfg = ServerConfig(tiny_model_path, parallel=4, ctx_size=2048, threads=2, port=18711)
    running = start_server("llamafoundry", cfg, tmp_path_factory.mktemp("logs"), ready_timeout_s=120)
    yield running
    running.stop()


@pytest.mark.parametrize("workload", ["random", "shared-prefix", "chat"])
def test_every_workload_completes_with_exact_token_counts(server, tiny_model_path: Path, workload: str) -> None:  # noqa: ANN001
    words = WordSource.from_gguf(tiny_model_path, seed=1)
    conversations = build_workload(workload, words, 3, input_len=16, output_len=8, prefix_len=200, num_turns=2)
    summary, results = asyncio.run(run_level(server.endpoint, conversations, concurrency=2))
    turns = 2 if workload == "chat" else 1
    assert summary.failed == 0, summary.errors
    assert summary.completed == 3 * turns
    assert all(r.output_tokens == 8 for r in results)
    assert summary.total_output_tokens == 8 * 3 * turns
    assert summary.output_throughput > 0 and summary.ttft_ms["p50"] > 0 and summary.e2el_ms["p99"] > 0
    if workload == "shared-prefix":
        assert all(r.prompt_tokens > 200 for r in results)
    if workload == "chat":
        assert max(r.prompt_tokens for r in results) > min(r.prompt_tokens for r in results)


def test_openai_route_and_errors_are_reported_not_raised(server) -> None:  # noqa: ANN001
    words = WordSource.from_gguf(server.command[server.command.index("--model") + 1], seed=2)
    openai = Endpoint(server.endpoint.base_url, "openai", server.endpoint.api_key, extra_body={"ignore_eos": True})
    openai.extra_headers["extra-parameters"] = "pass-through"
    summary, _ = asyncio.run(run_level(openai, build_workload("random", words, 2, 8, 4), concurrency=2))
    assert summary.completed == 2 and summary.total_output_tokens == 8
    wrong_key = Endpoint(server.endpoint.base_url, "azure", "not-the-key")
    summary, results = asyncio.run(run_level(wrong_key, build_workload("random", words, 1, 8, 4), concurrency=1))
    assert summary.failed == 1 and "HTTP 401" in results[0].error


def test_compare_writes_tables_ratios_and_a_plot(tiny_model_path: Path, tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written method.\n")
    parser = compare.argparse.ArgumentParser()
    compare.add_arguments(parser)
    args = parser.parse_args(
        [
            "--model", str(tiny_model_path), "--servers", "llamafoundry", "--concurrency", "1", "2",
            "--output-len", "6", "--input-len", "8", "--parallel", "2", "--ctx-size", "512", "--prefix-len", "100",
            "--shared-prefix-concurrency", "2", "--chat-concurrency", "1", "--chat-turns", "2", "--raw-repeats", "1",
            "--port", "18731", "--log-dir", str(tmp_path / "logs"), "--results", str(tmp_path / "run.json"),
            "--write-doc", str(doc),
        ]
    )  # fmt: skip
    assert compare.run(args) == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert set(run["raw"]) == {"1", "2"} and run["servers"]["llamafoundry"]["levels"]["random"]["2"]["failed"] == 0
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written method.") and report.START in text
    assert "### Random prompts, fixed concurrency" in text and "### Single stream against the raw loop" in text
    shared = run["servers"]["llamafoundry"]["levels"]["shared-prefix"]["2"]
    assert shared["ttft_first_wave_ms"]["n"] == 2 and shared["ttft_later_ms"]["n"] == 2
    assert "first wave TTFT p50" in text
    if report.can_plot():  # matplotlib comes with the bench extra only
        assert (tmp_path / "benchmarks-concurrency.png").stat().st_size > 10_000
    compare.run(args)  # a second run replaces the block instead of appending another
    assert doc.read_text().count(report.START) == 1


def test_first_wave_is_the_first_requests_sent_whatever_order_they_finish() -> None:
    from bench.metrics import RequestResult, first_wave_ttft

    results = [
        RequestResult(ok=True, start=2.0, ttft=0.5),
        RequestResult(ok=True, start=0.0, ttft=9.0),
        RequestResult(ok=False, start=0.1, ttft=0.0),  # failed requests count in neither wave
        RequestResult(ok=True, start=0.2, ttft=8.0),
        RequestResult(ok=True, start=3.0, ttft=0.7),
    ]
    assert first_wave_ttft(results, 2) == ([9.0, 8.0], [0.5, 0.7])


def test_request_timeline_lists_requests_in_the_order_sent_with_failures_kept() -> None:
    from bench.metrics import RequestResult, request_timeline

    results = [
        RequestResult(ok=True, start=12.5, ttft=0.25, e2el=2.0, prompt_tokens=40, output_tokens=8),
        RequestResult(ok=False, start=10.0, error="HTTP 429"),
        RequestResult(ok=True, start=10.0625, ttft=9.0, e2el=11.0, prompt_tokens=1040, output_tokens=8),
    ]
    timeline = request_timeline(results)
    assert [row["sent_s"] for row in timeline] == [0.0, 0.062, 2.5]
    assert timeline[0] == {
        "sent_s": 0.0, "ok": False, "ttft_ms": None, "e2el_ms": None, "prompt_tokens": 0, "output_tokens": 0,
        "error": "HTTP 429",
    }  # fmt: skip
    assert (timeline[1]["ttft_ms"], timeline[1]["e2el_ms"]) == (9000.0, 11000.0)
    assert timeline[2]["ttft_ms"] == 250.0 and timeline[2]["prompt_tokens"] == 40
    assert request_timeline([]) == []
