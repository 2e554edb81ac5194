"""The installed llama.cpp decodes in a child process, and a child that dies is turned into a sentence."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llamafoundry.hardware import decode_check
from llamafoundry.hardware.decode_check import DEMO_MODEL, ModelCrashError, check, ensure_model_decodes


def test_the_installed_build_decodes_the_demo_model_in_a_subprocess_and_exits_normally() -> None:
    """On a build that executes an instruction this CPU lacks (llama-cpp-python's -march=native on a VM that
    advertises AMX) the child dies with SIGILL and this fails."""
    done = subprocess.run(
        [sys.executable, "-m", "llamafoundry.hardware.decode_check", "--model", str(DEMO_MODEL)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and report["ok"] and report["returncode"] == 0, done.stdout + done.stderr
    assert "CPU" in report["system_info"]


def test_a_timed_run_reports_the_decode_speed() -> None:
    result = check(DEMO_MODEL, bench_seconds=0.5, threads=1)
    assert result.ok and result.tokens_per_s is not None and result.tokens_per_s > 0 and result.threads == 1


def dying_python(tmp_path: Path, sig: signal.Signals) -> str:
    """A stand-in for the venv's python whose 'llama.cpp' dies by `sig`, as a bad build does."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\nkill -{sig.name[3:]} $$\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_child_killed_by_sigill_is_named_with_the_cause_and_the_rebuild(tmp_path: Path) -> None:
    result = check(DEMO_MODEL, python=dying_python(tmp_path, signal.SIGILL))
    assert not result.ok and result.died_by_signal and result.returncode == -signal.SIGILL
    assert "SIGILL (Illegal instruction)" in result.message
    assert "instruction this machine cannot execute" in result.message and "make clean && make serve" in result.message


def test_a_segfault_points_at_the_file_and_the_build(tmp_path: Path) -> None:
    result = check(DEMO_MODEL, python=dying_python(tmp_path, signal.SIGSEGV))
    assert "SIGSEGV" in result.message and "corrupt or truncated" in result.message


def test_a_file_llama_cpp_cannot_load_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"GGUF" + os.urandom(64))
    result = check(bogus)
    assert not result.ok and not result.died_by_signal
    assert "could not load" in result.message


def test_a_model_that_decoded_is_not_checked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_model_decodes(DEMO_MODEL, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    monkeypatch.setattr(decode_check, "check", lambda *a, **k: pytest.fail("checked twice"))
    ensure_model_decodes(DEMO_MODEL, cache_dir=tmp_path)


def test_a_failing_model_raises_the_sentence_and_is_not_remembered(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ModelCrashError, match="could not load"):
        ensure_model_decodes(bogus, cache_dir=tmp_path / "checks")
    assert not (tmp_path / "checks").exists()


def test_a_crash_at_serve_time_marks_the_installed_wheel_so_the_next_install_skips_it(tmp_path: Path) -> None:
    wheel_folder = tmp_path / "llama-wheels" / "abc"
    wheel_folder.mkdir(parents=True)
    record = {"wheel": str(wheel_folder / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl")}
    (tmp_path / decode_check.RECORD_NAME).write_text(json.dumps(record))
    marker = decode_check.mark_installed_build_crashed("died with SIGILL", prefix=tmp_path)
    assert marker == wheel_folder / decode_check.CRASHED_MARKER and marker.read_text() == "died with SIGILL"
    assert decode_check.mark_installed_build_crashed("x", prefix=tmp_path / "no-record") is None
