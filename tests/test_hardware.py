"""ISA detection from cpuinfo text: an AMX Xeon, an AVX2-only EPYC, and this machine."""
from pathlib import Path

import pytest

from fastpipes.hardware import (bf16_native_from_flags, detect, fp16_native_from_flags, parse_cpuinfo,
                                tier_from_flags, unmet_requirements)
from fastpipes.recipe.schema import Requires

XEON_8480 = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni amx_bf16 avx512_fp16 amx_tile amx_int8
processor	: 1
model name	: ignored second block
"""
EPYC_AVX2 = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
"""


def test_amx_xeon_flags():
    model, flags = parse_cpuinfo(XEON_8480)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_bf16", "amx_int8", "avx512_bf16", "avx_vnni", "avx512_fp16"} <= flags
    assert bf16_native_from_flags(flags) and fp16_native_from_flags(flags)
    assert tier_from_flags(flags) == "amx"


def test_avx2_epyc_flags():
    model, flags = parse_cpuinfo(EPYC_AVX2)
    assert model == "AMD EPYC 7B13" and "avx2" in flags and "avx512f" not in flags
    assert not bf16_native_from_flags(flags) and not fp16_native_from_flags(flags)
    assert tier_from_flags(flags) == "avx2"


def test_the_four_tiers_we_have_seen():
    zen4 = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert tier_from_flags(zen4) == "avx512-bf16"
    assert tier_from_flags({"avx2", "fma", "avx512f"}) == "avx512"
    assert tier_from_flags({"sse2"}) == "other"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_this_machine_matches_its_cpuinfo():
    _, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    info = detect()
    assert info.isa["avx2"] == ("avx2" in flags)
    assert info.bf16_native == ("amx_bf16" in flags or "avx512_bf16" in flags)
    assert info.fp16_native == ("amx_fp16" in flags or "avx512_fp16" in flags)
    assert info.torch_threads >= 1 and info.torch_version
    assert info.tier == tier_from_flags(flags)
    note = info.low_precision_note("bf16")
    assert ("NOT native" in note) != info.bf16_native


def test_unmet_requirements_explain_the_effect():
    info = detect()
    fake = type(info)(**{**info.to_dict(), "bf16_native": False, "fp16_native": False,
                         "packages": []})
    unmet = unmet_requirements(Requires(native_bf16=True), fake)
    assert len(unmet) == 1 and "100x or more slower" in unmet[0]
    assert unmet_requirements(Requires(), fake) == []
    assert "needs a CUDA device" in unmet_requirements(Requires(device="cuda"), fake, "cpu")[0]


def test_check_device_explains_what_is_unusable(monkeypatch):
    import torch

    from fastpipes.hardware import check_device

    assert check_device("cpu") is None
    assert "not a device name: 'gpu0'" in check_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in check_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "sees no CUDA device" in check_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") is None and check_device("cuda:1") is None
    assert "there is no cuda:2: this machine has 2 CUDA device(s)" in check_device("cuda:2")


def test_package_probes_run_side_by_side_and_land_on_their_own_package(monkeypatch):
    import threading

    from fastpipes import hardware

    seen = set()

    def probe(module):
        seen.add(threading.get_ident())
        return module != "diffusers", f"probed {module}"

    monkeypatch.setattr(hardware, "_probe_import", probe)
    monkeypatch.setattr(hardware.metadata, "version", lambda dist: "2.8.0")
    infos = hardware.packages(probe=True)
    assert [p.name for p in infos] == [dist for dist, _ in hardware.OPTIONAL_PACKAGES]
    for info, (_, module) in zip(infos, hardware.OPTIONAL_PACKAGES):
        assert info.importable == (module != "diffusers")
        assert info.error.endswith(f"probed {module}")  # IPEX's says more before it
    assert threading.get_ident() not in seen  # in a pool, not one after another here
