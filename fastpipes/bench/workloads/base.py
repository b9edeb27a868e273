"""The contract between the benchmark harness and a pipeline family.

A family (SAM, SDXL, Llama) provides a Workload, named by its description's ``bench``
reference (fastpipes/family.py); the harness builds a fresh FP32 pipeline with the family's
builder per configuration, applies the recipe with ``fastpipes.accelerate``, times ``run`` on the
same inputs, and compares each output with the FP32 eager output. What fidelity looks at
and how it is judged is the family adapter's (``fidelity_view`` / ``compare`` with its
bars per precision class); a workload adds only what a benchmark needs beyond that.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from fastpipes.bounds import fits_type
from fastpipes.errors import BenchmarkError
from fastpipes.family import BuildSpec, FamilyDescription, resolve, with_hook
from fastpipes.fidelity import Fidelity
from fastpipes.pipelines.base import Adapter, find_adapter
from fastpipes.recipe.schema import PrecisionClass
from fastpipes.registry import did_you_mean


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


class Workload:
    """Subclass per family. Everything here must be deterministic for a given spec."""

    unit: ClassVar[str] = "items"  # what throughput counts: images | steps | tokens
    bound: ClassVar[str] = "compute"  # compute (vs a GEMM ceiling) | memory (vs bandwidth)
    # the family options this workload reads (`--option key=value`, or `--key value`):
    # name -> (type, what it means)
    OPTIONS: ClassVar[dict[str, tuple[type, str]]] = {}
    build_dtype: str = "float32"  # what build() makes; anything else cannot be the baseline

    def __init__(self, spec: WorkloadSpec):
        unknown = [k for k in spec.options if k not in self.OPTIONS]
        if unknown:
            allowed = ", ".join(self.OPTIONS) or "none"
            raise BenchmarkError(
                f"unknown {spec.family} option(s) {', '.join(map(repr, unknown))}"
                f"{did_you_mean(unknown[0], self.OPTIONS)}; allowed: {allowed}")
        wrong = [f"{k}={v!r} (expected {self.OPTIONS[k][0].__name__})"
                 for k, v in spec.options.items() if not fits_type(v, self.OPTIONS[k][0])]
        if wrong:
            raise BenchmarkError(f"wrong {spec.family} option type: {', '.join(wrong)}")
        self.spec = spec

    @property
    def family(self) -> str:
        """The ``fastpipes bench`` sub-command this workload serves (e.g. "toy")."""
        return self.spec.family

    @property
    def description(self) -> FamilyDescription:
        """The family this workload benchmarks (its builder and adapter)."""
        return with_hook("bench")[self.spec.family]

    def describe(self) -> str:
        """One line: model, shapes, batch (shown in the report header)."""
        raise NotImplementedError

    def prepare(self) -> WorkloadSpec:
        """Run once in the parent before any worker: make what every configuration shares
        (e.g. a reference model trained here) and return the spec the workers get."""
        return self.spec

    def build_spec(self) -> BuildSpec:
        """What the family's builder is asked for (the spec's model, size, seed and device)."""
        s = self.spec
        return BuildSpec(model=s.model, size=s.size, seed=s.seed, device=s.device,
                         dtype=self.build_dtype)

    def build(self) -> Any:
        """A fresh, unmodified FP32 eager pipeline (same weights every call: seeded), made
        by the family's builder on the spec's device."""
        return self.description.build(self.build_spec())

    def build_for(self, recipe: Any) -> Any:
        """The pipeline `recipe` (None: the FP32 baseline) is applied to: :meth:`build`,
        unless the workload can load it ready for the recipe (a Llama directory quantized
        while it is read)."""
        return self.build()

    def adapter(self, pipe: Any) -> Adapter:
        return find_adapter(pipe)

    def inputs(self, pipe: Any) -> Any:
        """The inputs of one timed run (identical for every configuration)."""
        return self.adapter(pipe).example_inputs()

    def run(self, pipe: Any, inputs: Any) -> Any:
        """One timed unit of work."""
        return self.adapter(pipe).call(inputs)

    def items(self, inputs: Any) -> int:
        """How many `unit`s one run produces (images in the batch, tokens generated)."""
        return self.spec.batch_size

    def view(self, pipe: Any, inputs: Any, output: Any, reference: Any = None) -> Any:
        """What fidelity compares, made from ``run``'s output outside the timed runs, while
        the configuration is applied (`reference`: the FP32 view; None in the FP32 run).

        It crosses processes (the baseline worker saves it with torch.save, each recipe
        worker loads it with weights_only=True), so it must be tensors, numbers, strings or
        lists/tuples/dicts of them.
        """
        return self.adapter(pipe).fidelity_view(inputs, output, reference)

    def compare(self, pipe: Any, reference: Any, view: Any,
                klass: PrecisionClass | str) -> Fidelity:
        """A recipe's view against the FP32 eager one, by the bars of its precision class."""
        return self.adapter(pipe).compare(reference, view, klass)

    def flops(self, pipe: Any, inputs: Any) -> float | None:
        """FLOPs of one run (FlopCounterMode on the FP32 pipeline), or None if unknown."""
        return None

    def bytes_per_item(self, pipe: Any) -> float | None:
        """Bytes read per unit for memory-bound work (decode: weight bytes per token)."""
        return None

    def extra_metrics(self, pipe: Any, inputs: Any) -> dict[str, float]:
        """Family extras timed separately (e.g. SAM end-to-end predict, SDXL VAE decode)."""
        return {}


class _Workloads(Mapping):
    """Sub-command name -> Workload class of every registered family with a ``bench``
    reference, read from the family registry at each use (a family registered later is in
    it); a class is imported when it is first looked up."""

    def __getitem__(self, name: str) -> type[Workload]:
        return resolve(with_hook("bench")[name], "bench")

    def __iter__(self) -> Iterator[str]:
        return iter(with_hook("bench"))

    def __len__(self) -> int:
        return len(with_hook("bench"))


WORKLOADS: Mapping[str, type[Workload]] = _Workloads()


def get_workload(spec: WorkloadSpec) -> Workload:
    """The family's workload for `spec`; BenchmarkError for an unknown family or options."""
    if spec.family not in WORKLOADS:
        raise BenchmarkError(f"unknown family {spec.family!r}; allowed: {', '.join(WORKLOADS)}")
    return WORKLOADS[spec.family](spec)
