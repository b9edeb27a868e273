"""The contract between the benchmark harness and a pipeline family.

A family (SAM, SDXL, Llama) provides a Workload; the harness builds a fresh FP32 pipeline
per configuration, applies the recipe with ``fastpipes.accelerate``, times ``run`` on the
same inputs, and compares each output with the FP32 eager output via ``fidelity``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkloadSpec:
    """Options every family command understands (from ``fastpipes bench FAMILY ...``)."""

    family: str
    size: str = "full"  # tiny | small | full
    model: str | None = None  # a family model name (vit_b, llama-3.2-1b) or a local path
    device: str = "cpu"
    batch_size: int = 1
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # family-specific: steps, prompt_len...


@dataclass
class Fidelity:
    """Closeness to the FP32 eager output; ``ok`` applies the family's stated thresholds."""

    metrics: dict[str, float]
    ok: bool
    thresholds: str  # e.g. "mask IoU >= 0.99, embedding rel. error <= 1e-3"


class Workload:
    """Subclass per family. Everything here must be deterministic for a given spec."""

    family: str = ""
    unit: str = "items"  # what throughput counts: images | steps | tokens
    bound: str = "compute"  # compute (GFLOP/s vs GEMM peak) | memory (GB/s vs bandwidth)
    build_dtype: str = "float32"  # what build() makes; anything else cannot be the baseline

    def __init__(self, spec: WorkloadSpec):
        self.spec = spec
        # "exact" or "quantized": which of the family's stated fidelity bars apply. The bench
        # worker sets "quantized" when the recipe's quantize pass was applied.
        self.tolerance = "exact"

    def describe(self) -> str:
        """One line: model, shapes, batch (shown in the report header)."""
        raise NotImplementedError

    def build(self) -> Any:
        """A fresh, unmodified FP32 eager pipeline (same weights every call: seeded)."""
        raise NotImplementedError

    def inputs(self, pipe: Any) -> Any:
        """The inputs of one timed run (identical for every configuration)."""
        raise NotImplementedError

    def run(self, pipe: Any, inputs: Any) -> Any:
        """One timed unit of work; returns what ``fidelity`` compares."""
        raise NotImplementedError

    def items(self, inputs: Any) -> int:
        """How many `unit`s one run produces (images in the batch, tokens generated)."""
        return self.spec.batch_size

    def comparable(self, pipe: Any, inputs: Any, output: Any) -> Any:
        """What ``fidelity`` compares, made from ``run``'s output outside the timed runs.

        It crosses processes (the baseline worker saves it with torch.save, each recipe
        worker loads it with weights_only=True), so it must be tensors, numbers, strings or
        lists/tuples/dicts of them. Default: the output itself. Override when fidelity needs
        more than the output, e.g. masks decoded by this configuration's own mask decoder.
        """
        return output

    def fidelity(self, reference: Any, output: Any) -> Fidelity:
        """Compare two ``comparable`` values: the FP32 eager one and a recipe's."""
        raise NotImplementedError

    def flops(self, pipe: Any, inputs: Any) -> float | None:
        """FLOPs of one run (FlopCounterMode on the FP32 pipeline), or None if unknown."""
        return None

    def bytes_per_item(self, pipe: Any) -> float | None:
        """Bytes read per unit for memory-bound work (decode: weight bytes per token)."""
        return None

    def extra_metrics(self, pipe: Any, inputs: Any) -> dict[str, float]:
        """Family extras timed separately (e.g. SAM end-to-end predict, SDXL VAE decode)."""
        return {}


WORKLOADS: dict[str, str] = {
    # family -> "module:Class", imported lazily so `import fastpipes` needs no extras
    "sam": "fastpipes.pipelines.sam:SamWorkload",
    "sdxl": "fastpipes.pipelines.sdxl:SdxlWorkload",
    "llama": "fastpipes.pipelines.llama:LlamaWorkload",
    "toy": "fastpipes.bench.toy:ToyWorkload",  # a tiny conv+MLP: tests and smoke runs
}


def get_workload(spec: WorkloadSpec) -> Workload:
    import importlib

    from fastpipes.errors import BenchmarkError

    if spec.family not in WORKLOADS:
        raise BenchmarkError(f"unknown family {spec.family!r}; allowed: {', '.join(WORKLOADS)}")
    module, _, cls = WORKLOADS[spec.family].partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        extra = {"sam": "sam", "sdxl": "sdxl", "llama": "llama"}.get(spec.family, "all")
        raise BenchmarkError(f"the {spec.family} benchmark needs extra packages "
                             f"(pip install 'fastpipes[{extra}]'): {e}") from e
    return getattr(mod, cls)(spec)
