"""Which CPU instruction sets this machine really executes: a tiny C program runs one instruction of each set,
each in its own process, and a set counts only if that process exits normally.

CPUID is not enough. On some virtual machines (Intel Xeon, Sapphire Rapids class) CPUID and the kernel both
advertise AMX, yet `tilezero` faults with SIGILL: a llama.cpp built with `-march=native` then dies on its first
decode. Running the instruction is the only test that cannot be fooled.

Standard library only: `scripts/install.sh` runs this before anything else is installed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

RUN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Feature:
    """One instruction set: the /proc/cpuinfo flags that advertise it and the C statement that executes it."""

    name: str
    cpuinfo_flags: tuple[str, ...]
    code: str


_AMX_SETUP = """
    /* Linux hands out AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA). */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
        fputs("the kernel refuses AMX tile state (arch_prctl)", stderr);
        return 4;
    }
    static struct { unsigned char palette, start_row, reserved[14]; unsigned short colsb[16];
                    unsigned char rows[16]; } __attribute__((aligned(64))) cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 3; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    __asm__ volatile("ldtilecfg %0" :: "m"(cfg));
"""

X86_FEATURES = (
    Feature("sse42", ("sse4_2",), '__asm__ volatile("pcmpistri $0, %%xmm0, %%xmm0" ::: "ecx", "cc");'),
    Feature("avx", ("avx",), '__asm__ volatile("vaddps %%ymm0, %%ymm0, %%ymm0" ::: "memory");'),
    Feature("avx2", ("avx2",), '__asm__ volatile("vpaddd %%ymm0, %%ymm0, %%ymm0" ::: "memory");'),
    Feature("fma", ("fma",), '__asm__ volatile("vfmadd231ps %%ymm0, %%ymm0, %%ymm0" ::: "memory");'),
    Feature("f16c", ("f16c",), '__asm__ volatile("vcvtph2ps %%xmm0, %%ymm0" ::: "memory");'),
    Feature("bmi2", ("bmi2",), '__asm__ volatile("pdep %%rax, %%rax, %%rax" ::: "rax");'),
    Feature("avx_vnni", ("avx_vnni",), '__asm__ volatile("%{vex%} vpdpbusd %%ymm0, %%ymm0, %%ymm0" ::: "memory");'),
    # llama.cpp's AVX512 switch compiles with F, CD, VL, DQ and BW: one instruction of each.
    Feature(
        "avx512",
        ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
        '__asm__ volatile("vaddps %%zmm0, %%zmm0, %%zmm0\\n\\tvpconflictd %%zmm0, %%zmm1\\n\\t'
        "vpaddd %%ymm16, %%ymm16, %%ymm16\\n\\tvpmullq %%zmm0, %%zmm0, %%zmm0\\n\\t"
        'vpaddb %%zmm0, %%zmm0, %%zmm0" ::: "memory");',
    ),
    Feature("avx512_vbmi", ("avx512vbmi",), '__asm__ volatile("vpermb %%zmm0, %%zmm0, %%zmm0" ::: "memory");'),
    Feature("avx512_vnni", ("avx512_vnni",), '__asm__ volatile("vpdpbusd %%zmm0, %%zmm0, %%zmm0" ::: "memory");'),
    Feature("avx512_bf16", ("avx512_bf16",), '__asm__ volatile("vdpbf16ps %%zmm0, %%zmm0, %%zmm0" ::: "memory");'),
    Feature(
        "amx_tile", ("amx_tile",), _AMX_SETUP + '__asm__ volatile("tilezero %%tmm0\\n\\ttilerelease" ::: "memory");'
    ),
    Feature(
        "amx_int8",
        ("amx_int8",),
        _AMX_SETUP + '__asm__ volatile("tilezero %%tmm1\\n\\ttilezero %%tmm2\\n\\ttdpbssd %%tmm2, %%tmm1, %%tmm0\\n\\t'
        'tilerelease" ::: "memory");',
    ),
    Feature(
        "amx_bf16",
        ("amx_bf16",),
        _AMX_SETUP
        + '__asm__ volatile("tilezero %%tmm1\\n\\ttilezero %%tmm2\\n\\ttdpbf16ps %%tmm2, %%tmm1, %%tmm0\\n\\t'
        'tilerelease" ::: "memory");',
    ),
)

ARM_FEATURES = (
    Feature("neon", ("asimd",), '__asm__ volatile("add v0.4s, v0.4s, v0.4s" ::: "v0");'),
    Feature(
        "dotprod", ("asimddp",), '__asm__ volatile(".arch_extension dotprod\\n\\tsdot v0.4s, v1.16b, v2.16b" ::: "v0");'
    ),
    Feature("fp16", ("asimdhp",), '__asm__ volatile(".arch_extension fp16\\n\\tfadd v0.8h, v0.8h, v0.8h" ::: "v0");'),
    Feature("i8mm", ("i8mm",), '__asm__ volatile(".arch_extension i8mm\\n\\tsmmla v0.4s, v1.16b, v2.16b" ::: "v0");'),
    Feature("sve", ("sve",), '__asm__ volatile(".arch_extension sve\\n\\tptrue p0.b" ::: "p0");'),
)


def machine() -> str:
    """`x86_64`, `aarch64`, or another `uname -m` value (no probe exists for those)."""
    name = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def features_of(arch: str) -> tuple[Feature, ...]:
    return {"x86_64": X86_FEATURES, "aarch64": ARM_FEATURES}.get(arch, ())


@dataclass
class ProbeResult:
    """What was found. `runs` is None for a feature that could not be probed (no compiler, another CPU family).

    Attributes:
        arch: `machine()`.
        runs: feature -> whether its instruction executed.
        advertised: feature -> whether /proc/cpuinfo lists all its flags.
        failures: feature -> how its probe ended when it did not run ("SIGILL", "exit 4", ...).
        error: why nothing was probed, or None.
    """

    arch: str
    runs: dict[str, bool] = field(default_factory=dict)
    advertised: dict[str, bool] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def running(self) -> set[str]:
        return {name for name, ok in self.runs.items() if ok}

    @property
    def advertised_but_faulting(self) -> list[str]:
        """The trap this module exists for: sets CPUID claims and the CPU refuses to run."""
        return [name for name, ok in self.runs.items() if not ok and self.advertised.get(name)]


def cpuinfo_flags(text: str | None = None) -> set[str]:
    """The flags /proc/cpuinfo lists (`flags` on x86, `Features` on ARM)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model_name(text: str | None = None) -> str:
    """The CPU's marketing name, as lscpu shows it (`model name` on x86; the implementer/part on ARM)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    if fields.get("CPU implementer"):
        return f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return platform.processor() or machine()


def probe_source(feature: Feature) -> str:
    """A C program that executes `feature`'s instruction and exits 0 (or dies trying)."""
    return "\n".join([
        "#define _GNU_SOURCE",
        "#include <stdio.h>",
        "#include <string.h>",
        "#include <unistd.h>",
        "#include <sys/syscall.h>",
        "int main(void) {",
        f"    {feature.code}",
        "    return 0;",
        "}",
        "",
    ])  # fmt: skip


def find_compiler() -> str | None:
    """The C compiler llama.cpp's build would use: $CC, else cc, gcc or clang on PATH."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def probe(arch: str | None = None, compiler: str | None = None, cpuinfo: str | None = None) -> ProbeResult:
    """Compile the probe program and run each feature's instruction in its own process."""
    arch = arch or machine()
    features = features_of(arch)
    flags = cpuinfo_flags(cpuinfo)
    result = ProbeResult(arch, advertised={f.name: all(flag in flags for flag in f.cpuinfo_flags) for f in features})
    if not features:
        result.error = f"no instruction probe exists for {arch} CPUs"
        return result
    compiler = compiler or find_compiler()
    if compiler is None:
        result.error = "no C compiler (cc, gcc or clang) on PATH to build the probe"
        return result
    with tempfile.TemporaryDirectory(prefix="llamafoundry-probe-") as tmp:
        for feature in features:
            ok, failure = probe_one(Path(tmp), feature, compiler)
            result.runs[feature.name] = ok
            if failure is not None:
                result.failures[feature.name] = failure
    return result


def probe_one(folder: Path, feature: Feature, compiler: str) -> tuple[bool, str | None]:
    """Build and run one feature's program (one program each: an assembler that does not know one set's
    instructions, which then cannot be built into llama.cpp either, fails that set alone)."""
    source, binary = folder / f"{feature.name}.c", folder / feature.name
    source.write_text(probe_source(feature))
    built = subprocess.run([compiler, "-O0", "-o", str(binary), str(source)], capture_output=True, text=True)
    if built.returncode != 0:
        return False, f"the compiler cannot build it ({built.stderr.strip().splitlines()[-1][:200]})"
    return run_one(binary)


def run_one(binary: Path) -> tuple[bool, str | None]:
    """Run one feature's program; (True, None), or (False, how it ended)."""
    try:
        done = subprocess.run([str(binary)], capture_output=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    if done.returncode == 0:
        return True, None
    said = done.stderr.decode(errors="replace").strip()
    return False, said if done.returncode > 0 and said else describe_exit(done.returncode)


def describe_exit(returncode: int) -> str:
    """`SIGILL (Illegal instruction)` for a death by signal, `exit N` otherwise."""
    if returncode < 0:
        return signal_name(-returncode)
    return f"exit {returncode}"


def signal_name(number: int) -> str:
    import signal

    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    description = signal.strsignal(sig) or ""
    return f"{sig.name} ({description})" if description else sig.name


if __name__ == "__main__":
    import json

    found = probe()
    print(json.dumps({"arch": found.arch, "runs": found.runs, "advertised": found.advertised,
                      "failures": found.failures, "error": found.error}, indent=2))  # fmt: skip
