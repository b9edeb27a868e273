"""Adapters *describe* a pipeline; they hold no optimization logic.

An adapter says which object it understands, the pipeline's named components, which
components each pass touches by default, where its attention lives, which plain objects
(configs, wrappers) a pass may mutate, how to put a replaced component back, and how to
exercise and judge the pipeline: inputs it can make from the model's own shapes
(:meth:`Adapter.example_inputs`), one call (:meth:`Adapter.call`), what of an output
fidelity looks at (:meth:`Adapter.fidelity_view`) and the comparison with FP32 against the
family's bars for a precision class (:meth:`Adapter.compare`, bars in ``BARS``; the bar and
verdict types are :mod:`fastpipes.fidelity`'s).
Third-party libraries are imported lazily inside adapters' methods.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
import torch.nn as nn

from fastpipes.errors import FastpipesError, UnsupportedPipelineError
from fastpipes.fidelity import Bar, Fidelity, judge
from fastpipes.fingerprint import shapes
from fastpipes.passes.structure import AttentionSite  # noqa: F401  (re-exported: adapters name it here)
from fastpipes.recipe.schema import GENERIC, PrecisionClass
from fastpipes.registry import Registry


class Adapter:
    """Base class of pipeline adapters. Subclasses set the ClassVars and override methods.

    Its structural part (components, attention sites, entry points, setters) is what the
    passes see: :class:`fastpipes.passes.structure.PipelineStructure`. The rest exercises and
    judges the pipeline (example inputs, one call, the fidelity view and the bars).
    """

    name: ClassVar[str] = "adapter"
    family: ClassVar[str] = GENERIC  # the recipe family it serves (fastpipes/family.py)
    description: ClassVar[str] = ""
    priority: ClassVar[int] = 0  # higher is tried first
    # the family's fidelity bars, stated per precision class before any run
    BARS: ClassVar[dict[PrecisionClass, tuple[Bar, ...]]] = {}

    def __init__(self, obj: Any):
        self.obj = obj

    @classmethod
    def matches(cls, obj: Any) -> bool:
        raise NotImplementedError

    def components(self) -> dict[str, nn.Module]:
        """Every named component (``{"unet": ..., "vae": ...}``), in a stable order."""
        raise NotImplementedError

    def default_components(self, pass_name: str) -> list[str]:
        """Components a pass works on when the recipe names none. Default: all."""
        return list(self.components())

    def set_component(self, name: str, module: nn.Module) -> None:
        """Put `module` in place of component `name` (used by passes that wrap modules)."""
        raise NotImplementedError(f"{self.name} cannot replace component {name!r}")

    def state_objects(self) -> list[Any]:
        """Plain (non-Module) objects whose attributes passes may change; snapshotted."""
        return [self.obj]

    def attention_sites(self) -> list[AttentionSite]:
        return []

    def entry_points(self) -> list[tuple[str, nn.Module]]:
        """(component name, module) pairs whose forward is a call boundary for autocast."""
        return list(self.components().items())

    def fp32_entries(self) -> list[tuple[str, nn.Module, str]]:
        """(component, object, method) through which a component that stays FP32 may be fed
        the low-precision outputs of another (the precision pass upcasts there)."""
        return []

    def device(self) -> torch.device:
        for m in self.components().values():
            for p in m.parameters():
                return p.device
        return torch.device("cpu")

    # -- exercising and judging the pipeline (recipe="auto" and the benchmarks) -------------
    def example_inputs(self) -> Any:
        """Inputs for one representative call, made from the model's own shapes."""
        raise FastpipesError(f"recipe='auto' needs example_inputs=... for a {self.name} pipeline "
                             "(the inputs it will be called with)")

    def describe_inputs(self, inputs: Any) -> str:
        """One line saying what `inputs` are (shown in the auto report)."""
        return f"inputs {shapes(inputs)}"

    def call(self, inputs: Any) -> Any:
        """Run the pipeline once on `inputs` (tuple -> *args, dict -> **kwargs)."""
        with torch.inference_mode():
            if isinstance(inputs, dict):
                return self.obj(**inputs)
            if isinstance(inputs, (tuple, list)):
                return self.obj(*inputs)
            return self.obj(inputs)

    def waited_calls(self, inputs: Any) -> dict[str, Callable[[], Any]]:
        """Other calls users of this pipeline wait on besides :meth:`call`, by name (a SAM
        predictor's click). recipe="auto" times each with FP32 and with every candidate,
        and never picks one that makes any of them slower. None by default."""
        return {}

    def fidelity_view(self, inputs: Any, output: Any, reference: Any = None) -> Any:
        """What fidelity compares of one call's output, made while this configuration is
        applied (`reference`: the FP32 view, None when this is the FP32 run; Llama
        teacher-forces FP32's sequences). Plain tensors, numbers, strings and containers of
        them only: the benchmark carries the FP32 one across processes."""
        return [t.detach().float() for t in _tensors(output)]

    def fidelity_metrics(self, reference: Any, view: Any) -> dict[str, float]:
        """The family's metrics of `view` against the FP32 `reference` (both from
        :meth:`fidelity_view`). Generic: relative L2 error over all float outputs."""
        num = den = 0.0
        for r, o in zip(reference, view):
            num += float((o.float() - r.float()).pow(2).sum())
            den += float(r.float().pow(2).sum())
        return {"rel_error": (num / den) ** 0.5 if den else float(num > 0)}

    def compare(self, reference: Any, view: Any,
                klass: PrecisionClass | str = PrecisionClass.exact) -> Fidelity:
        """`view` against the FP32 `reference`, judged by this family's bars for `klass`."""
        klass = PrecisionClass(klass)
        return judge(self.fidelity_metrics(reference, view), self.BARS[klass], klass)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Float tensors in a nested output (tensors, tuples, lists, dicts, ModelOutputs)."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    if hasattr(obj, "__dataclass_fields__"):
        return [t for k in obj.__dataclass_fields__ for t in _tensors(getattr(obj, k))]
    return []


# filled by the family descriptions (fastpipes/families.py); the first read imports them
ADAPTERS: Registry[type[Adapter]] = Registry("pipeline adapter", filled_by="fastpipes.families")


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    missing = [c.value for c in PrecisionClass if cls.BARS and c not in cls.BARS]
    assert not missing, f"adapter {cls.name} states no fidelity bars for {missing}"
    ADAPTERS.add(cls.name, cls)
    return cls


def _complete(adapter: Adapter) -> Adapter:
    """`adapter` if every component it names is a torch module; else UnsupportedPipelineError
    naming the missing one (e.g. a SAM whose image_encoder was set to None)."""
    try:
        parts = adapter.components()
    except AttributeError as e:
        raise UnsupportedPipelineError(
            f"this {adapter.name} pipeline lacks a component fastpipes needs: {e}") from None
    for name, module in parts.items():
        if not isinstance(module, nn.Module):
            raise UnsupportedPipelineError(
                f"this {adapter.name} pipeline's component {name!r} is "
                f"{type(module).__name__}, not a torch.nn.Module; a {adapter.name} pipeline "
                f"needs all of: {', '.join(parts)}")
    return adapter


def find_adapter(obj: Any) -> Adapter:
    """The adapter for `obj`, or UnsupportedPipelineError listing what is supported."""
    for _, cls in sorted(ADAPTERS.items(), key=lambda kv: -kv[1].priority):
        if cls.matches(obj):
            return _complete(cls(obj))
    supported = "; ".join(f"{n} ({c.description})" for n, c in ADAPTERS.items())
    raise UnsupportedPipelineError(
        f"fastpipes does not know how to accelerate a {type(obj).__module__}."
        f"{type(obj).__qualname__}. Supported: {supported}"
    )


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded with `seed` that can fill tensors on `device` (random weights are
    drawn where they live: a CUDA tensor needs a CUDA generator; meta tensors take any)."""
    dev = torch.device(device)
    if dev.type in ("cpu", "meta"):
        return torch.Generator().manual_seed(seed)
    return torch.Generator(device=dev).manual_seed(seed)
