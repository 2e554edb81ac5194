"""Build llama.cpp (llama-cpp-python) for the instruction sets this CPU really runs, and prove it with a decode.

`scripts/install.sh` runs `python3 src/llamafoundry/hardware/llama_install.py ensure --python .venv/bin/python` (the
command line and pip steps live there):

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

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path from the install script: import the sibling modules directly
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cpu_features  # type: ignore[import-not-found]
    import decode_check  # type: ignore[import-not-found]
else:
    from llamafoundry.hardware import cpu_features, decode_check

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
            write_json(folder / "build.json", {"cmake_args": list(plan.cmake_args), "features": list(plan.features),
                                                "environment": asdict(env)})  # fmt: skip
        else:
            tools.say(f"Reusing the llama.cpp build for [{plan.label}] from {folder}")
        tools.install(wheel)
        result = tools.check()
        if result.ok:
            return Outcome(plan, str(wheel), key, fingerprint(env, probe, gpu), probe_record(probe), crashed,
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


def probe_record(probe: cpu_features.ProbeResult) -> dict[str, object]:
    return {"arch": probe.arch, "runs": probe.runs, "advertised": probe.advertised, "failures": probe.failures,
            "error": probe.error}  # fmt: skip


def write_json(path: Path, body: object) -> None:
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
