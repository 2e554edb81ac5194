"""Smoke test of `bench kv` on the tiny-32 model (real llama.cpp): every cache type is measured and a quantized
cache takes fewer bytes per token. Nothing is timed against a target."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import kv_cache


def test_every_cache_type_is_measured_and_quantized_ones_are_smaller(tiny32_model_path: Path, capsys) -> None:  # noqa: ANN001
    parser = argparse.ArgumentParser()
    kv_cache.add_arguments(parser)
    args = parser.parse_args(["--model", str(tiny32_model_path), "--threads", "1", "--context", "200",
                              "--ctx-size", "512", "--batch", "4", "--steps", "2", "--repeats", "1",
                              "--rounds", "1"])  # fmt: skip
    assert kv_cache.run(args) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ")}
    sizes = {kind: float(rows[kind][2].replace(",", "")) for kind in ("f16", "q8_0", "q4_0")}
    assert sizes["q4_0"] < sizes["q8_0"] < 0.6 * sizes["f16"]
