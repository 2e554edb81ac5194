"""`bench speculative`: the replay takes the engine's steps for a known answer, and the command prices and reports
them on a real (tiny) model. Nothing is timed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from bench.speculative_replay import add_arguments, build_cases, replay, run

PROMPT = list(range(1000, 1060))


def test_an_answer_that_copies_its_prompt_takes_few_passes() -> None:
    answer = [7, 8] + PROMPT[:40]
    result = replay(PROMPT, answer)
    assert result.num_tokens == len(answer) and all(1 <= size <= 16 for size in result.pass_sizes)
    assert len(result.pass_sizes) < len(answer) // 2 and result.num_accepted > 25
    # every pass yields its kept drafted tokens and one sampled token: the answer, after its first token
    assert len(result.pass_sizes) + result.num_accepted == len(answer) - 1


def test_an_answer_with_nothing_to_copy_takes_one_pass_per_token() -> None:
    answer = list(range(5000, 5100))
    result = replay(PROMPT, answer)
    assert result.pass_sizes == [1] * (len(answer) - 1) and result.num_drafted == 0


def test_cases_cover_prose_code_edits_and_quotes() -> None:
    cases = build_cases()
    assert {c.workload for c in cases} == {"prose", "code edit", "quote"}
    assert all(c.answer.strip() for c in cases)


def test_the_command_reports_every_workload(tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--model", str(tiny_model_path), "--context", "64", "--repeats", "1"])) == 0
    out = capsys.readouterr().out
    for workload in ("prose", "code edit", "quote"):
        assert f"| {workload} | " in out
