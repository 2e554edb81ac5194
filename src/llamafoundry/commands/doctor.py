"""`llamafoundry doctor`: what this machine and the installed llama.cpp can do, and how fast, in one report to
attach to a bug or read before buying hardware (like `vllm collect-env`)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from llamafoundry import __version__
from llamafoundry.commands.common import console
from llamafoundry.hardware import cpu_features, decode_check
from llamafoundry.hardware.llama_build import read_record

# Our probe's names -> the names in llama.cpp's `llama_print_system_info` ("AVX512_VNNI = 1 | ...").
SYSTEM_INFO_NAMES = {
    "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "bmi2": "BMI2", "avx_vnni": "AVX_VNNI",
    "avx512": "AVX512", "avx512_vbmi": "AVX512_VBMI", "avx512_vnni": "AVX512_VNNI", "avx512_bf16": "AVX512_BF16",
    "amx_int8": "AMX_INT8", "neon": "NEON", "dotprod": "DOTPROD", "fp16": "FP16_VA", "i8mm": "MATMUL_INT8",
    "sve": "SVE",
}  # fmt: skip
GPU_BACKEND_NAMES = ("CUDA", "Vulkan", "Metal", "SYCL", "HIP")


def register(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="report the CPU (instruction sets that really run), the llama.cpp build, memory and decode speed",
    )
    doctor.add_argument("--model", type=Path, default=None, help="also measure this GGUF file's decode speed")
    doctor.add_argument("--seconds", type=float, default=5.0, help="how long each speed test decodes (0: skip)")
    doctor.add_argument("--threads", type=int, default=None, help="threads for the speed test (default: all cores)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    if args.model is not None and not args.model.is_file():
        raise FileNotFoundError(f"--model {args.model}: no such file. Pass the path of a .gguf file.")
    report = collect(args.model, args.seconds, args.threads)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if all(s.get("ok") for s in report["speed"]) else 1


def collect(model: Path | None, seconds: float, threads: int | None) -> dict[str, Any]:
    """The whole report as plain data (what `--json` prints)."""
    probe = cpu_features.probe()
    models = [decode_check.DEMO_MODEL] + ([model] if model is not None else [])
    speed = [_measure(path, seconds, threads) for path in models]
    system_info = next((s["system_info"] for s in speed if s.get("system_info")), None)
    used = build_features(system_info)
    record = read_record(Path(sys.prefix))
    return {
        "llamafoundry": __version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "cpu": _cpu(probe),
        "memory": _memory(),
        "instruction_sets": [
            {
                "name": name,
                "advertised": probe.advertised.get(name),
                "runs": probe.runs.get(name),
                "used_by_build": used.get(name, _from_record(record, name)),
                "note": probe.failures.get(name),
            }
            for name in [f.name for f in cpu_features.features_of(probe.arch)]
        ],  # fmt: skip
        "probe_error": probe.error,
        "llama_cpp": {
            "llama_cpp_python": _package_version("llama_cpp_python"),
            "system_info": system_info,
            "build": _build_summary(record),
            "gpu_backends": [name for name in GPU_BACKEND_NAMES if system_info and name.lower() in system_info.lower()],
        },
        "gpu": _gpus(),
        "speed": speed,
        "notes": _notes(probe, used, record),
    }


def build_features(system_info: str | None) -> dict[str, bool]:
    """Which probed sets llama.cpp says its build uses, from `llama_print_system_info`."""
    if not system_info:
        return {}
    flags: dict[str, bool] = {}
    for part in system_info.replace("\n", "|").split("|"):
        key, sep, value = part.partition("=")
        if sep:
            flags[key.strip().split(":")[-1].strip()] = value.strip() == "1"
    return {ours: flags[theirs] for ours, theirs in SYSTEM_INFO_NAMES.items() if theirs in flags}


def _from_record(record: dict[str, Any] | None, name: str) -> bool | None:
    """For sets llama.cpp's summary does not list (SSE4.2, AMX tiles): what the install built with, if recorded."""
    if record is None:
        return None
    features = (record.get("plan") or {}).get("features")
    return None if features is None else name in features


def _cpu(probe: cpu_features.ProbeResult) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": cpu_features.cpu_model_name(),
        "arch": probe.arch,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "serve_threads": os.cpu_count(),  # `serve` without --threads: llama.cpp gets every core
    }


def _memory() -> dict[str, float | None]:
    fields: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    gib = 2**30

    def to_gib(key: str) -> float | None:
        return round(fields[key] / gib, 1) if key in fields else None

    return {"total_gib": to_gib("MemTotal"), "available_gib": to_gib("MemAvailable")}


def _measure(model: Path, seconds: float, threads: int | None) -> dict[str, Any]:
    """Decode speed of `model` in a child process (a crash is reported, not suffered), and the memory bandwidth it
    implies: one stream reads every weight once per token."""
    result = decode_check.check(model, bench_seconds=max(seconds, 0.0), threads=threads)
    size = model.stat().st_size
    entry: dict[str, Any] = {"model": model.name, "path": str(model), "size_gib": round(size / 2**30, 3),
                             "ok": result.ok, "system_info": result.system_info, "threads": result.threads}  # fmt: skip
    if not result.ok:
        entry["error"] = result.message
    elif result.tokens_per_s is not None:
        entry["tokens_per_s"] = round(result.tokens_per_s, 1)
        entry["implied_gb_per_s"] = round(size * result.tokens_per_s / 1e9, 1)
    return entry


def _build_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    plan = record.get("plan") or {}
    return {"features": plan.get("features"), "cmake_args": plan.get("cmake_args"), "wheel": record.get("wheel"),
            "crashed_builds": record.get("crashed") or [], "gpu": record.get("gpu")}  # fmt: skip


def _gpus() -> dict[str, Any]:
    """GPU toolkits and devices the machine has (whether or not this build uses them)."""
    found: dict[str, Any] = {"nvcc": shutil.which("nvcc"), "glslc": shutil.which("glslc"), "devices": []}
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)  # fmt: skip
        found["devices"] += [f"NVIDIA {line.strip()}" for line in done.stdout.splitlines() if line.strip()]
    if shutil.which("vulkaninfo"):
        done = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True, timeout=20)
        found["devices"] += [f"Vulkan {line.split('=', 1)[1].strip()}" for line in done.stdout.splitlines()
                             if line.strip().startswith("deviceName")]  # fmt: skip
    return found


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _notes(probe: cpu_features.ProbeResult, used: dict[str, bool], record: dict[str, Any] | None) -> list[str]:
    notes = []
    for name in probe.advertised_but_faulting:
        notes.append(
            f"{name}: the CPU advertises it but cannot run it ({probe.failures.get(name)}); builds leave it out."
        )
    for name, is_used in used.items():
        if is_used and probe.runs.get(name) is False:
            notes.append(f"{name}: the build uses it but this CPU cannot run it; rebuild (make clean && make serve).")
        if not is_used and probe.runs.get(name):
            notes.append(f"{name}: this CPU runs it but the build does not use it; a rebuild may be faster.")
    if record is None:
        notes.append("No build record in this environment: llama-cpp-python was not installed by scripts/install.sh.")
    elif record.get("crashed"):
        notes.append(f"{len(record['crashed'])} build(s) crashed on this machine and were replaced by a plainer one.")
    if probe.error:
        notes.append(f"Instruction sets were not probed: {probe.error}.")
    return notes


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    out = console.__class__()  # stdout, unlike the shared stderr console
    summary = Table(title="llamafoundry doctor", show_header=False)
    cpu, memory, llama = report["cpu"], report["memory"], report["llama_cpp"]
    build = llama["build"] or {}
    rows = [
        ("CPU", f"{cpu['model']} ({cpu['arch']})"),
        ("cores", f"{cpu['logical_cpus']} logical, {cpu['usable_cpus']} usable; serve uses {cpu['serve_threads']}"),
        ("memory", f"{memory['total_gib']} GiB total, {memory['available_gib']} GiB available"),
        ("llamafoundry", f"{report['llamafoundry']} (Python {report['python']}, {report['os']})"),
        ("llama-cpp-python", str(llama["llama_cpp_python"])),
        ("build flags", " ".join(build.get("cmake_args") or []) or "unknown (no build record)"),
        ("GPU backend", ", ".join(llama["gpu_backends"]) or "none (CPU only)"),
        ("GPU devices", ", ".join(report["gpu"]["devices"]) or "none found"),
    ]  # fmt: skip
    for key, value in rows:
        summary.add_row(key, value)
    out.print(summary)
    sets = Table(title="Instruction sets")
    for column in ("set", "advertised (CPUID)", "runs (probed)", "used by the build", "note"):
        sets.add_column(column)
    for entry in report["instruction_sets"]:
        sets.add_row(entry["name"], _mark(entry["advertised"]), _mark(entry["runs"]), _mark(entry["used_by_build"]),
                     entry["note"] or "")  # fmt: skip
    out.print(sets)
    speed = Table(title="Decode speed (one stream, one token per step)")
    for column in ("model", "size", "threads", "tokens/s", "implied memory bandwidth"):
        speed.add_column(column)
    for entry in report["speed"]:
        if not entry["ok"]:
            speed.add_row(entry["model"], f"{entry['size_gib']} GiB", "", "failed", entry["error"])
            continue
        rate = entry.get("tokens_per_s")
        bandwidth = f"{entry['implied_gb_per_s']} GB/s" if rate is not None else "-"
        speed.add_row(entry["model"], f"{entry['size_gib']} GiB", str(entry["threads"]),
                      f"{rate}" if rate is not None else "not measured", bandwidth)  # fmt: skip
    out.print(speed)
    for note in report["notes"]:
        out.print(f"- {note}", soft_wrap=True)


def _mark(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[value]
