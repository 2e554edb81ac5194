"""`llamafoundry bench shapes` on a real tiny GGUF: every shape is measured at every context and tabled."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import batch_shapes


def test_shapes_are_measured_per_context_and_tabled(tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    batch_shapes.add_arguments(parser)
    args = parser.parse_args(
        ["--model", str(tiny_model_path), "--context", "4", "40", "--shapes", "1+0", "3+0", "0+9", "2+5",
         "--repeats", "2", "--flash-attn", "off"]
    )  # fmt: skip
    assert batch_shapes.run(args) == 0
    table = capsys.readouterr().out.split("| decoding sequences", 1)[1].splitlines()
    rows = [line for line in table if line.startswith("| ") and "+" in line.split("|")[1]]
    assert [r.split("|")[1].strip() for r in rows] == ["1 + 0", "3 + 0", "0 + 9", "2 + 5"]
    for row in rows:
        cells = row.strip("|").split("|")[1:]
        assert len(cells) == 2 and all(float(c.split()[0]) > 0 for c in cells)


def test_step_cost_leaves_the_sequences_as_it_found_them(tiny_model_path: Path) -> None:
    from llamafoundry.model.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(tiny_model_path, kv_size=4 * 64, max_seqs=4, max_batch_tokens=64, num_threads=1)
    try:
        batch_shapes.fill_context(runner, 4, 20)
        for _ in range(2):  # a second run only succeeds if the first removed its tokens (positions must follow on)
            assert batch_shapes.step_cost(runner, 3, 6, 20, repeats=2) > 0
    finally:
        runner.close()


def test_decode_steps_of_given_sequence_ids_are_measured(
    tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert batch_shapes.parse_ids("0-2,4,6-7") == [0, 1, 2, 4, 6, 7]
    parser = argparse.ArgumentParser()
    batch_shapes.add_arguments(parser)
    args = parser.parse_args(
        ["--model", str(tiny_model_path), "--context", "10", "--decode-sets", "0-2", "0,2", "--repeats", "2"]
    )
    assert batch_shapes.run(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "decoding ids" in line]
    assert [line.split("decoding ids")[1].split("(")[0].strip() for line in lines] == ["0-2", "0,2"]
    assert all(float(line.split(":")[-1].split()[0]) > 0 for line in lines)
