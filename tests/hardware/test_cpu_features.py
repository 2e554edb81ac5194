"""The instruction-set probe on the machine the tests run on, and how its findings are read."""

from __future__ import annotations

import pytest

from llamafoundry.hardware import cpu_features
from llamafoundry.hardware.cpu_features import ProbeResult, cpu_model_name, cpuinfo_flags, probe

SAPPHIRE_RAPIDS_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw avx512vbmi avx512_vnni
 avx512_bf16 avx512_fp16 avx_vnni amx_tile amx_int8 amx_bf16
"""


def test_the_probe_runs_every_set_of_this_cpu_family_in_its_own_process() -> None:
    found = probe()
    if found.error is not None:
        pytest.skip(found.error)
    names = [f.name for f in cpu_features.features_of(found.arch)]
    assert set(found.runs) == set(names)
    baseline = {"x86_64": "sse42", "aarch64": "neon"}[found.arch]
    assert found.runs[baseline], found.failures
    for name, ok in found.runs.items():  # a set that did not run says how it ended
        assert ok or found.failures.get(name), name


def test_a_set_the_cpu_lacks_is_reported_as_not_running_not_as_an_error() -> None:
    found = probe()
    if found.arch != "x86_64" or found.error is not None:
        pytest.skip("x86-64 with a C compiler only")
    lacking = [name for name, advertised in found.advertised.items() if not advertised]
    if not lacking:
        pytest.skip("this CPU advertises every set the probe knows")
    assert all(found.runs[name] is False for name in lacking)


def test_sets_advertised_but_faulting_are_the_ones_builds_must_leave_out() -> None:
    found = ProbeResult(
        "x86_64",
        runs={"avx512": True, "amx_tile": False, "avx_vnni": False},
        advertised={"avx512": True, "amx_tile": True, "avx_vnni": False},
    )
    assert found.advertised_but_faulting == ["amx_tile"]
    assert found.running == {"avx512"}


def test_cpuinfo_is_read_for_flags_and_model_name() -> None:
    flags = cpuinfo_flags(SAPPHIRE_RAPIDS_CPUINFO.replace("\n avx512_bf16", " avx512_bf16"))
    assert {"amx_tile", "avx512_vnni", "avx2"} <= flags
    assert cpu_model_name(SAPPHIRE_RAPIDS_CPUINFO) == "Intel(R) Xeon(R) Processor"
    arm = "processor : 0\nCPU implementer : 0x41\nCPU part : 0xd0c\n"
    assert cpu_model_name(arm) == "ARM implementer 0x41 part 0xd0c"


def test_without_a_compiler_nothing_is_probed_and_the_reason_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_features, "find_compiler", lambda: None)
    found = probe(arch="x86_64")
    assert found.runs == {} and "no C compiler" in (found.error or "")
