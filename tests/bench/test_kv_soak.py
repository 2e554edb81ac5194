"""The soak of the prefix cache's tiers, at a size a test affords (tiny model, real llama.cpp): budgets small
enough to evict, every answer equal to a cache-off engine's, memory within the budgets, hits after a restart."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import kv_soak


def soak(model: Path, disk_dir: Path, disk_budget: int) -> tuple[argparse.Namespace, kv_soak.SoakReport]:
    """40 conversations x 3 turns in a 300 kB host-memory tier, with a disk tier of `disk_budget` bytes (0: none)."""
    parser = argparse.ArgumentParser()
    kv_soak.add_arguments(parser)
    sizes = ["--conversations", "40", "--turns", "3", "--threads", "1", "--ram-budget", "300000"]
    disk = ["--disk-budget", str(disk_budget), "--disk-dir", str(disk_dir)]
    args = parser.parse_args(["--model", str(model), *sizes, *disk])
    report = kv_soak.soak(args)
    assert report.turns > 100 and report.mismatches == []
    assert report.ram_evictions > 0 and report.max_ram_bytes <= args.ram_budget and report.reused["ram"] > 0
    return args, report


def test_a_short_soak_evicts_answers_as_cold_stays_in_budget_and_keeps_hits_after_a_restart(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    args, report = soak(tiny_model_path, tmp_path, disk_budget=600000)
    assert report.ram_recycled_buffers == 0  # the disk writer thread may still hold a dropped buffer
    assert report.disk_evictions > 0 and report.disk_bytes <= args.disk_budget
    assert report.reused["disk"] > 0
    assert report.restart_disk_tokens > 0 and report.restart_mismatches == 0


def test_host_memory_alone_writes_saves_over_evicted_buffers_and_answers_as_cold(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """`serve` without `--prefix-cache-dir`: a save is written over an evicted state's buffer."""
    _, report = soak(tiny_model_path, tmp_path, disk_budget=0)
    assert report.ram_recycled_buffers > 0
    assert not list(tmp_path.iterdir())  # no disk tier
