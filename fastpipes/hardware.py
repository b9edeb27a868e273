"""What this machine can do: CPU model and ISA, native low-precision matmul, torch, packages.

Nothing here runs at import time; :func:`detect` reads the machine when asked.

>>> info = detect()                       # doctest: +SKIP
>>> info.bf16_native, info.isa["avx2"]    # doctest: +SKIP
(False, True)
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from fastpipes.openvino_probe import openvino_unavailable

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "avx_vnni")
# optional packages: (distribution name, import name)
OPTIONAL_PACKAGES = (("segment-anything", "segment_anything"), ("diffusers", "diffusers"),
                     ("transformers", "transformers"), ("safetensors", "safetensors"),
                     ("intel-extension-for-pytorch", "intel_extension_for_pytorch"),
                     ("torchvision", "torchvision"), ("openvino", "openvino"), ("nncf", "nncf"))


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, set of ISA flags) from /proc/cpuinfo text (first processor block)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def bf16_native_from_flags(flags: set[str]) -> bool:
    return "amx_bf16" in flags or "avx512_bf16" in flags


def fp16_native_from_flags(flags: set[str]) -> bool:
    return "amx_fp16" in flags or "avx512_fp16" in flags


# CPU tiers, best first: (name, flags it needs, what it means for recipes)
TIERS = (
    ("amx", ("amx_tile", "amx_bf16"), "AMX tiles: BF16 and int8 GEMMs several times FP32's"),
    ("avx512-bf16", ("avx512f", "avx512_bf16"), "native BF16 dot products: BF16 ~2x FP32"),
    ("avx512", ("avx512f",), "AVX-512 without BF16: BF16 GEMM far slower than FP32"),
    ("avx2", ("avx2", "fma"), "AVX2 only: BF16 GEMM 100-500x slower than FP32"),
)


# What each tier's GEMMs reach on a quiet 2-core machine (GFLOP/s; int8: GOP/s of
# torch._int_mm), as measured (docs/passes/precision.md): the prior auto orders its
# candidates by, and what a benchmark's measured ceilings are held against to tell a loaded
# machine. A class absent here is not native on that tier (or not measured).
TIER_CEILINGS_2T = {
    "amx": {"exact": 260.0, "bf16": 1300.0, "int8": 2000.0, "fp16": 230.0},
    "avx512-bf16": {"exact": 180.0, "bf16": 415.0, "int8": 570.0},
    "avx2": {"exact": 140.0, "bf16": 0.5},
}


def expected_ceilings(tier: str, threads: int = 2) -> dict[str, float]:
    """The tier's typical GEMM ceilings for `threads` threads (scaled from 2: a rough guide,
    not a promise), or {} for a tier without measurements."""
    return {k: v * threads / 2 for k, v in TIER_CEILINGS_2T.get(tier, {}).items()}


def tier_from_flags(flags: set[str]) -> str:
    """The machine's CPU tier: amx, avx512-bf16, avx512, avx2, or 'other'."""
    for name, needs, _ in TIERS:
        if all(f in flags for f in needs):
            return name
    return "other"


@dataclass
class PackageInfo:
    name: str
    version: str | None  # None: not installed
    importable: bool | None = None  # None: not probed
    error: str = ""


@dataclass
class MachineInfo:
    cpu_model: str
    machine: str
    logical_cpus: int
    torch_threads: int
    isa: dict[str, bool]
    bf16_native: bool
    fp16_native: bool
    torch_version: str
    torch_cpu_capability: str
    cuda_devices: list[str] = field(default_factory=list)
    cuda_bf16: bool = False
    packages: list[PackageInfo] = field(default_factory=list)
    tier: str = "other"  # amx | avx512-bf16 | avx512 | avx2 | other (see TIERS)

    def native(self, dtype: str, device: str = "cpu") -> bool:
        """Whether `dtype` ("bf16"/"fp16") matmul is native on `device`."""
        if device.startswith("cuda"):
            return bool(self.cuda_devices) and (dtype == "fp16" or self.cuda_bf16)
        return self.bf16_native if dtype == "bf16" else self.fp16_native

    def low_precision_note(self, dtype: str) -> str:
        """What a user should expect from `dtype` matmul on this CPU, in words."""
        if self.native(dtype):
            return f"{dtype} matmul is native on this CPU"
        need = "AMX or AVX512-BF16" if dtype == "bf16" else "AMX-FP16 or AVX512-FP16"
        return (f"{dtype} matmul is NOT native on this CPU ({self.cpu_model or 'unknown'}; "
                f"needs {need}): expect {dtype} GEMM to be 100x or more slower than FP32 here; "
                "prefer an FP32 recipe (e.g. *_fp32_fast) or weight-only quantization")

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    path = Path("/proc/cpuinfo")
    if path.exists():
        return parse_cpuinfo(path.read_text(errors="replace"))
    return platform.processor(), set()


def _probe_import(module: str) -> tuple[bool, str]:
    """Import `module` in a child process so a broken package cannot hurt this one."""
    code = f"import {module}"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"probe failed: {e}"
    if r.returncode == 0:
        return True, ""
    lines = [ln for ln in (r.stderr or "").strip().splitlines() if ln.strip()]
    return False, lines[-1] if lines else f"exit code {r.returncode}"


def packages(probe: bool = False) -> list[PackageInfo]:
    """Versions of the optional packages; with `probe`, whether each really imports.

    The probes run side by side, one child process each (as many at once as there are
    CPUs): each imports torch and its package, 0.5-3.5 s apiece, and one after another
    they were most of ``fastpipes info``'s 8-10 s."""
    import torch

    out, modules = [], {}
    for dist, module in OPTIONAL_PACKAGES:
        try:
            out.append(PackageInfo(dist, metadata.version(dist)))
            modules[dist] = module
        except metadata.PackageNotFoundError:
            out.append(PackageInfo(dist, None))
    if not probe or not modules:
        return out
    with ThreadPoolExecutor(max_workers=min(len(modules), os.cpu_count() or 1)) as pool:
        probes = dict(zip(modules, pool.map(_probe_import, modules.values())))
    for info in out:
        if info.name not in probes:
            continue
        info.importable, info.error = probes[info.name]
        if info.name == "intel-extension-for-pytorch" and not info.importable:
            needs = ".".join(info.version.split(".")[:2])
            info.error = (f"installed but incompatible with torch {torch.__version__} "
                          f"(needs {needs}.*): {info.error}")
    return out


@functools.lru_cache(maxsize=1)
def _detect_cached() -> MachineInfo:
    return _detect(probe=False)


def detect(probe_packages: bool = False) -> MachineInfo:
    """Read this machine. Cached unless `probe_packages` (which spawns import probes)."""
    return _detect(probe=True) if probe_packages else _detect_cached()


def _detect(probe: bool) -> MachineInfo:
    import torch

    model, flags = _cpu_model_and_flags()
    cuda, cuda_bf16 = [], False
    if torch.cuda.is_available():
        cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cuda_bf16 = torch.cuda.is_bf16_supported()
    return MachineInfo(
        cpu_model=model,
        machine=platform.machine(),
        logical_cpus=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        isa={f: f in flags for f in ISA_FLAGS},
        bf16_native=bf16_native_from_flags(flags),
        fp16_native=fp16_native_from_flags(flags),
        torch_version=torch.__version__,
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cuda_devices=cuda,
        cuda_bf16=cuda_bf16,
        packages=packages(probe),
        tier=tier_from_flags(flags),
    )


IPEX_DIST = "intel-extension-for-pytorch"


def _ipex_version_problem() -> tuple[str, str, str]:
    """(why IPEX cannot import with this torch, judged from versions alone, or ""; the
    sentence an import failure starts with; the advice it ends with)."""
    import torch

    try:
        version = metadata.version(IPEX_DIST)
    except metadata.PackageNotFoundError:
        return (f"{IPEX_DIST} is not installed; it needs torch 2.8.* (this is torch "
                f"{torch.__version__}). Install torch 2.8.* and `pip install "
                "'fastpipes[ipex]'` (or `make ipex-env`), or use PyTorch's own kernels"), "", ""
    needs = ".".join(version.split(".")[:2])
    have = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    incompatible = (f"{IPEX_DIST} {version} is installed but incompatible with torch "
                    f"{torch.__version__} (needs {needs}.*)")
    advice = f"; install torch {needs}.* or remove it, or use PyTorch's own kernels"
    return (incompatible + advice if needs != have else ""), incompatible, advice


def import_ipex():
    """(the intel_extension_for_pytorch module, "") when it imports, else (None, why not
    and what to do). Never raises.

    IPEX's last CPU release pins torch 2.8; with another torch it installs, then its import
    prints errors and dies half-way. So a release whose major.minor differs from torch's is
    not imported at all, and any other import failure is caught.
    """
    why, incompatible, advice = _ipex_version_problem()
    if why:
        return None, why
    try:
        import intel_extension_for_pytorch as ipex
    except (Exception, SystemExit) as e:  # broken installs raise AttributeError, exit, ...
        return None, f"{incompatible}: {type(e).__name__}: {e}{advice}"
    return ipex, ""


def check_device(device: str) -> str | None:
    """Why `device` (``cpu``, ``cuda``, ``cuda:1`` ...) cannot be used here, or None when it
    can. Asks torch only, so a typo or a CPU-only build is caught before any model is built.

    >>> check_device("cpu") is None
    True
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"not a device name: {device!r} (e.g. cpu, cuda, cuda:1)"
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":  # xpu, mps ...: torch.<type> or torch.backends.<type> knows
        for module in (getattr(torch, dev.type, None), getattr(torch.backends, dev.type, None)):
            available = getattr(module, "is_available", None)
            if callable(available) and available():
                return None
        return f"device type {dev.type!r} is not available in this torch ({torch.__version__})"
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return (f"this torch ({torch.__version__}) is a CPU-only build: it has no CUDA "
                    "support; use --device cpu")
        return f"torch {torch.__version__} sees no CUDA device on this machine; use --device cpu"
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        return f"there is no {device}: this machine has {count} CUDA device(s), cuda:0 to " \
               f"cuda:{count - 1}"
    return None


@functools.lru_cache(maxsize=1)
def ipex_unavailable() -> str:
    """"" when Intel Extension for PyTorch imports here, else why not. Never raises.

    For ``requires: {ipex: true}`` (recipe planning, ``auto``): the import is tried in a
    child process, once per process, so asking never loads IPEX (whose import registers
    kernels and prints errors) into this one.
    """
    why, incompatible, advice = _ipex_version_problem()
    if why or "intel_extension_for_pytorch" in sys.modules:
        return why
    ok, error = _probe_import("intel_extension_for_pytorch")
    return "" if ok else f"{incompatible}: {error}{advice}"


def wrong_device(requires, device: str = "cpu", info: MachineInfo | None = None) -> str:
    """Why a recipe with `requires` cannot run on a pipeline on `device` ('' when it can).

    A device requirement is never a 'runs slowly' note: a CUDA recipe's kernels (CUDA int4,
    CUDA graphs) do not exist on a CPU, so it is refused, saying what to use instead.
    """
    dev = getattr(requires.device, "value", requires.device)
    if dev == "any" or device.split(":")[0] == dev:
        return ""
    if dev == "cuda":
        where = ("this machine has no CUDA device" if info is not None and not info.cuda_devices
                 else f"the pipeline is on {device!r}")
        return (f"the recipe needs a CUDA device ({where}); build or move the pipeline with "
                "--device cuda / pipe.to('cuda') on a machine with a GPU, or use a CPU recipe "
                "(fastpipes recipes list)")
    return f"the recipe is for device {dev!r}, the pipeline is on {device!r}"


def unmet_requirements(requires, info: MachineInfo, device: str = "cpu") -> list[str]:
    """Human sentences for each `requires` entry this machine misses (empty when all met)."""
    out = []
    if why := wrong_device(requires, device, info):
        out.append(why)
    if requires.native_bf16 and not info.native("bf16", device):
        out.append(info.low_precision_note("bf16"))
    if requires.native_fp16 and not info.native("fp16", device):
        out.append(info.low_precision_note("fp16"))
    if requires.ipex and (why := ipex_unavailable()):
        out.append(f"the recipe needs Intel Extension for PyTorch, which does not import here: {why}")
    if getattr(requires, "openvino", False) and (why := openvino_unavailable()):
        out.append(f"the recipe needs OpenVINO, which does not import here: {why}")
    return out
