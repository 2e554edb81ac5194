"""Which llama.cpp builds the install tries for which probe results, and what it does when a build crashes.
The probe and the pip steps are faked here; tests/hardware/test_cpu_features.py and test_decode_check.py run the
real ones."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from llamafoundry.hardware import llama_build
from llamafoundry.hardware.cpu_features import X86_FEATURES, ProbeResult
from llamafoundry.hardware.decode_check import CheckResult
from llamafoundry.hardware.llama_build import BuildError, BuildPlan, Environment, Toolkit, ensure, plans

ALL_X86 = [f.name for f in X86_FEATURES]


def x86_probe(runs: list[str], advertised: list[str] | None = None) -> ProbeResult:
    advertised = runs if advertised is None else advertised
    return ProbeResult(
        "x86_64", runs={n: n in runs for n in ALL_X86}, advertised={n: n in advertised for n in ALL_X86}
    )


def switches(plan: BuildPlan) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in plan.cmake_args)


SAPPHIRE_RAPIDS_VM = [n for n in ALL_X86 if not n.startswith("amx")]  # AMX advertised, faults when run
EPYC_AVX2 = ["sse42", "avx", "avx2", "fma", "f16c", "bmi2"]


def test_a_vm_that_advertises_amx_and_faults_on_it_gets_avx512_vnni_and_no_amx() -> None:
    first = plans(x86_probe(SAPPHIRE_RAPIDS_VM, advertised=ALL_X86))[0]
    flags = switches(first)
    assert flags["GGML_NATIVE"] == "OFF"  # -march=native trusts CPUID: the crash this exists for
    for name in ("GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX512_VBMI", "GGML_AVX2", "GGML_FMA"):
        assert flags[name] == "ON", name
    for name in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert flags[name] == "OFF", name


def test_amx_is_kept_where_it_really_runs_and_dropped_first_when_the_build_crashes() -> None:
    found = plans(x86_probe(ALL_X86))
    assert switches(found[0])["GGML_AMX_INT8"] == "ON" and switches(found[0])["GGML_AMX_TILE"] == "ON"
    second = switches(found[1])
    assert second["GGML_AMX_INT8"] == "OFF" and second["GGML_AVX512_VNNI"] == "ON"


def test_an_avx2_epyc_gets_avx2_fma_f16c_and_no_avx512() -> None:
    flags = switches(plans(x86_probe(EPYC_AVX2))[0])
    assert {k: flags[k] for k in ("GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2")} == dict.fromkeys(
        ("GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"), "ON"
    )
    assert flags["GGML_AVX512"] == "OFF" and flags["GGML_AVX_VNNI"] == "OFF"


def test_every_switch_is_set_explicitly_since_llama_cpp_turns_sse_to_bmi2_on_by_itself() -> None:
    for plan in plans(x86_probe(EPYC_AVX2)):
        assert set(switches(plan)) == {"GGML_NATIVE"} | {option for option, _ in llama_build.X86_OPTIONS}


def test_fallback_ends_at_a_build_with_no_optional_instruction_set() -> None:
    found = plans(x86_probe(SAPPHIRE_RAPIDS_VM))
    last = switches(found[-1])
    assert all(value == "OFF" for value in last.values())
    assert len({p.cmake_args for p in found}) == len(found)  # no plan is tried twice


def test_an_avx512_extension_is_never_switched_on_without_avx512_itself() -> None:
    flags = switches(plans(x86_probe(EPYC_AVX2 + ["avx512_vnni"]))[0])
    assert flags["GGML_AVX512_VNNI"] == "OFF"


def test_arm_builds_name_the_extensions_that_ran_and_fall_back_to_plain_neon() -> None:
    probe = ProbeResult("aarch64", runs={"neon": True, "dotprod": True, "fp16": True, "i8mm": False, "sve": False})
    found = plans(probe)
    assert switches(found[0]) == {"GGML_NATIVE": "OFF", "GGML_CPU_ARM_ARCH": "armv8.2-a+dotprod+fp16"}
    assert switches(found[-1])["GGML_CPU_ARM_ARCH"] == "armv8-a"


def test_a_cpu_family_without_a_probe_uses_llama_cpps_detection_then_its_portable_build() -> None:
    found = plans(ProbeResult("riscv64", error="no instruction probe exists for riscv64 CPUs"))
    assert [switches(p)["GGML_NATIVE"] for p in found] == ["ON", "OFF"]


def test_a_gpu_backend_without_its_toolkit_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama_build.shutil, "which", lambda name: None)
    monkeypatch.delenv("CUDACXX", raising=False)
    with pytest.raises(BuildError, match="nvcc"):
        plans(x86_probe(EPYC_AVX2), gpu="cuda")
    with pytest.raises(BuildError, match="glslc"):
        plans(x86_probe(EPYC_AVX2), gpu="vulkan")


def test_a_gpu_backend_is_added_to_every_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama_build.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "nvcc" else None)
    assert all("-DGGML_CUDA=ON" in p.cmake_args for p in plans(x86_probe(EPYC_AVX2), gpu="cuda"))


class FakeSteps:
    """Builds write a file per plan; the check dies by SIGILL while a build that `crashes` is installed (by default:
    one with AMX)."""

    def __init__(self, crashes: Callable[[str], bool] = lambda args: "-DGGML_AMX_TILE=ON" in args) -> None:
        self.built: list[BuildPlan] = []
        self.installed: list[Path] = []
        self.crashes = crashes  # given the installed build's CMake arguments

    def build(self, plan: BuildPlan, folder: Path) -> Path:
        self.built.append(plan)
        folder.mkdir(parents=True, exist_ok=True)
        wheel = folder / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"
        wheel.write_text(" ".join(plan.cmake_args))
        return wheel

    def install(self, wheel: Path) -> None:
        self.installed.append(wheel)

    def check(self) -> CheckResult:
        if self.crashes(self.installed[-1].read_text()):
            return CheckResult(False, -signal.SIGILL, "llama.cpp died with SIGILL (Illegal instruction) ...")
        return CheckResult(True, 0, system_info="CPU : AVX512 = 1 |")

    def toolkit(self) -> Toolkit:
        return Toolkit(self.build, self.install, self.check, say=lambda text: None)


ENV = Environment("llama-cpp-python==0.3.36", "cpython-311", "linux-x86_64", "cc (Debian 12.2.0) 12.2.0")


def test_a_build_that_dies_by_a_signal_is_marked_and_the_next_plan_is_built(tmp_path: Path) -> None:
    probe = x86_probe(ALL_X86)  # AMX passes the probe here, and the decode still dies: defence in depth
    steps = FakeSteps()
    outcome = ensure(plans(probe), ENV, probe, tmp_path, steps.toolkit())
    assert [("amx_tile" in p.features) for p in steps.built] == [True, False]
    assert "amx_tile" not in outcome.plan.features and "avx512_vnni" in outcome.plan.features
    assert outcome.crashed and "SIGILL" in outcome.crashed[0]["how"]
    marker = tmp_path / ENV.key(steps.built[0]) / llama_build.CRASHED_MARKER
    assert "SIGILL" in marker.read_text()


def test_a_later_install_skips_the_crashed_build_and_reuses_the_good_wheel_without_compiling(tmp_path: Path) -> None:
    probe = x86_probe(ALL_X86)
    ensure(plans(probe), ENV, probe, tmp_path, FakeSteps().toolkit())
    again = FakeSteps()
    outcome = ensure(plans(probe), ENV, probe, tmp_path, again.toolkit())
    assert again.built == [] and len(again.installed) == 1
    assert "amx_tile" not in outcome.plan.features


def test_wheels_of_another_feature_set_or_python_are_never_reused(tmp_path: Path) -> None:
    """pip's cache keys a wheel by version alone; the project's folder keys it by the build flags too."""
    avx512, avx2 = plans(x86_probe(SAPPHIRE_RAPIDS_VM))[0], plans(x86_probe(EPYC_AVX2))[0]
    assert ENV.key(avx512) != ENV.key(avx2)
    other_python = Environment(ENV.pin, "cpython-312", ENV.platform, ENV.compiler)
    assert other_python.key(avx2) != ENV.key(avx2)


def test_a_decode_failure_that_is_not_a_crash_stops_the_install_with_its_message(tmp_path: Path) -> None:
    steps = FakeSteps()
    steps.check = lambda: CheckResult(False, 2, "llama.cpp could not decode m.gguf: no such file")  # type: ignore[method-assign]
    probe = x86_probe(EPYC_AVX2)
    with pytest.raises(BuildError, match="could not decode"):
        ensure(plans(probe), ENV, probe, tmp_path, steps.toolkit())
    assert len(steps.built) == 1  # a missing file is not fixed by dropping instruction sets


def test_when_every_build_crashes_the_install_says_so(tmp_path: Path) -> None:
    steps = FakeSteps(crashes=lambda args: True)
    probe = x86_probe(EPYC_AVX2)
    with pytest.raises(BuildError, match="Every llama.cpp build crashed"):
        ensure(plans(probe), ENV, probe, tmp_path, steps.toolkit())
    assert len(steps.built) == len(plans(probe))
